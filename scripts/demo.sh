#!/usr/bin/env bash
# `make demo`: seal a generated sample dataset for one recipient, inspect, verify, list, open it,
# and show that a tampered copy is refused with nothing released.
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
DEMO=out/demo
rm -rf "$DEMO" && mkdir -p "$DEMO" && cd "$DEMO"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "A sample dataset: a large shard, many small files, a symlink, a PII folder"
mkdir -p dataset/train/shards dataset/eval dataset/pii
head -c $((64 << 20)) /dev/urandom > dataset/train/shards/shard-000.bin
for i in $(seq -w 1 500); do printf '{"id": %d, "text": "sample %d"}\n' "$((10#$i))" "$((10#$i))" > "dataset/train/rec-$i.jsonl"; done
for i in 1 2 3; do printf 'question %d\tanswer %d\n' "$i" "$i" > "dataset/eval/qa-$i.tsv"; done
printf 'name,email\nAda,ada@example.org\n' > dataset/pii/people.csv
ln -s train/shards/shard-000.bin dataset/latest-shard
du -sh dataset

step "Keys: the data owner (issuer) and the recipient site"
run "$CAPSULE" keygen -o owner
run "$CAPSULE" keygen -o site-b

step "Seal the dataset with its policy for site-b"
cat > policy.json <<'JSON'
{ "version": 1,
  "rules": [
    { "id": "east-training", "effect": "permit", "sites": ["site-b"],
      "purposes": ["training"], "paths": ["train/**", "eval/**"],
      "notAfter": "2027-12-31T23:59:59Z" },
    { "id": "no-pii", "effect": "forbid", "paths": ["pii/**"] } ] }
JSON
run "$CAPSULE" seal dataset -o dataset.capsule --sign owner.key --to site-b.pub --policy policy.json
ls -l dataset.capsule

step "Inspect it without any key"
run "$CAPSULE" inspect dataset.capsule

step "Verify signature, trust and every chunk, without any private key"
run "$CAPSULE" verify dataset.capsule --trust owner.pub

step "At site-b: list the files and read one without decrypting the rest"
run "$CAPSULE" ls dataset.capsule --identity site-b.key --trust owner.pub | head -5
run "$CAPSULE" cat dataset.capsule eval/qa-2.tsv --identity site-b.key --trust owner.pub

step "Open it: extraction is atomic and lands only after every chunk authenticated"
run "$CAPSULE" open dataset.capsule --identity site-b.key --trust owner.pub --to opened
diff -r dataset opened && echo "opened/ is identical to dataset/"

step "Open only part of it"
run "$CAPSULE" open dataset.capsule --identity site-b.key --trust owner.pub --to train-only --only 'train/**'
ls train-only

step "Tamper with one byte in the middle of the capsule"
cp dataset.capsule tampered.capsule
printf '\x42' | dd of=tampered.capsule bs=1 seek=$((10 << 20)) conv=notrunc status=none
set +e
run "$CAPSULE" verify tampered.capsule --trust owner.pub; echo "exit status $?"
run "$CAPSULE" open tampered.capsule --identity site-b.key --trust owner.pub --to should-not-exist; echo "exit status $?"
set -e
[ ! -e should-not-exist ] && echo "nothing was released: should-not-exist/ does not exist"

step "A stranger's key is refused"
run "$CAPSULE" keygen -o stranger >/dev/null
set +e
run "$CAPSULE" open dataset.capsule --identity stranger.key --trust owner.pub --to nope; echo "exit status $?"
set -e

printf '\nDemo done. Files are in %s\n' "$(pwd)"

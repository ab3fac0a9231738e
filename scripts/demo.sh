#!/usr/bin/env bash
# `make demo`: seal a generated sample dataset with its policy for site B, inspect and verify it,
# send it from site A to site B's daemon over loopback with an interruption and a resume, open it
# at B under its policy through B's verifier service (one permit, refusals for a wrong purpose, a
# forbidden path and exhausted uses), review and verify the audit trails of both sites, and show
# that a tampered copy or a stranger's key releases nothing. Run as root, B's daemon runs as its
# own system user and Alice as an unprivileged user; otherwise both run as the caller.
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
CAPSULED="$(cd "$BUILD" && pwd)/cli/capsuled"
DAEMON=""
trap '[ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null' EXIT
DEMO=out/demo
rm -rf "$DEMO" && mkdir -p "$DEMO" && cd "$DEMO"
# Copies of the programs that any user may run, wherever the build tree is.
mkdir -p bin && cp "$CAPSULE" "$CAPSULED" bin/ && chmod 755 . bin bin/*
CAPSULE="$(pwd)/bin/capsule"
CAPSULED="$(pwd)/bin/capsuled"

# The deployed shape: B's daemon as its own system user, Alice as an ordinary user.
SITE_USER=""
ALICE_USER=""
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null && command -v useradd >/dev/null; then
  SITE_USER=bunker-demo-site
  ALICE_USER=bunker-demo-alice
  for u in "$SITE_USER" "$ALICE_USER"; do
    id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
  done
fi
# Runs in the background (as_site ... &): exec, so that $! is the daemon itself.
as_site() {
  if [ -n "$SITE_USER" ]; then
    exec setpriv --reuid "$SITE_USER" --regid "$SITE_USER" --init-groups --inh-caps +chown \
      --ambient-caps +chown -- "$@"
  else
    exec "$@"
  fi
}
as_alice() {
  if [ -n "$ALICE_USER" ]; then
    printf '$ [as %s] %s\n' "$ALICE_USER" "$*"
    setpriv --reuid "$ALICE_USER" --regid "$ALICE_USER" --init-groups -- "$@"
  else
    run "$@"
  fi
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# flip_byte FILE OFFSET: xors one byte's lowest bit in place, so the file always changes (writing
# a fixed byte leaves it as it was whenever that byte was already there: 1 time in 256).
flip_byte() {
  local b; b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

step "A sample dataset: a large shard, many small files, a symlink, a PII folder"
mkdir -p dataset/train/shards dataset/eval dataset/pii
head -c $((64 << 20)) /dev/urandom > dataset/train/shards/shard-000.bin
for i in $(seq -w 1 500); do printf '{"id": %d, "text": "sample %d"}\n' "$((10#$i))" "$((10#$i))" > "dataset/train/rec-$i.jsonl"; done
for i in 1 2 3; do printf 'question %d\tanswer %d\n' "$i" "$i" > "dataset/eval/qa-$i.tsv"; done
printf 'name,email\nAda,ada@example.org\n' > dataset/pii/people.csv
ln -s train/shards/shard-000.bin dataset/latest-shard
du -sh dataset

step "Keys: the data owner (issuer), sites A (where the data is) and B (the recipient), and Alice, a data user at site B"
run "$CAPSULE" keygen -o owner
run "$CAPSULE" keygen -o site-a
run "$CAPSULE" keygen -o site-b
ALICE=$("$CAPSULE" keygen -o alice --json | sed 's/.*"fingerprint": "\([^"]*\)".*/\1/')
echo "alice is $ALICE"

step "The owner's policy: Alice may use train/ and eval/ at site-b for training, twice; never pii/"
cat > policy.json <<JSON
{ "version": 1,
  "rules": [
    { "id": "east-training", "effect": "permit", "sites": ["site-b"],
      "storage": ["encrypted-at-rest"], "requesters": ["$ALICE"],
      "purposes": ["training"], "paths": ["train/**", "eval/**"],
      "notAfter": "2030-01-01T00:00:00Z", "maxOpens": 2 },
    { "id": "no-pii", "effect": "forbid", "paths": ["pii/**"] } ] }
JSON
cat policy.json
run "$CAPSULE" policy check policy.json

step "Seal the dataset with its policy for site-b"
run "$CAPSULE" seal dataset -o dataset.capsule --sign owner.key --to site-b.pub --policy policy.json
ls -l dataset.capsule

step "Inspect it without any key"
run "$CAPSULE" inspect dataset.capsule

step "Verify signature, trust and every chunk, without any private key"
run "$CAPSULE" verify dataset.capsule --trust owner.pub

step "Two sites on loopback: A sends; B's daemon receives transfers and is B's verifier service"
mkdir -p landing run
cat > site-a.json <<'JSON'
{ "site": "site-a", "identity": "site-a.key", "trust": ["owner.pub"], "destinations": ["landing"],
  "state": "site-a-state", "peers": ["site-b.pub"], "store": "site-a-store" }
JSON
cat > site-b.json <<'JSON'
{ "site": "site-b", "region": "eu-west-1", "storage": ["encrypted-at-rest"],
  "identity": "site-b.key", "trust": ["owner.pub"], "destinations": ["landing"],
  "state": "site-b-state", "listen": "127.0.0.1:0", "peers": ["site-a.pub"], "store": "site-b-store",
  "socket": "run/site-b.sock" }
JSON
cat site-b.json
mkdir -p site-b-state site-b-store
chmod 700 site-b-state
chmod 750 site-b-store  # as packaging/bunker.tmpfiles makes /srv/bunker
chmod 1777 landing
chmod 644 site-b.json ./*.pub dataset.capsule
if [ -n "$SITE_USER" ]; then
  chown "$SITE_USER" site-b.key site-b-state site-b-store run
  chown "$ALICE_USER" alice.key
  echo "B's key, state and store belong to $SITE_USER; its daemon runs as $SITE_USER with CAP_CHOWN only"
fi
as_site "$CAPSULED" --site site-b.json 2> capsuled.log &
DAEMON=$!
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' capsuled.log)
  [ -n "$PORT" ] && break
  sleep 0.05
done
cat capsuled.log

step "Site A sends the capsule to B at 20 MB/s, and the sender is killed halfway"
"$CAPSULE" send dataset.capsule --to "127.0.0.1:$PORT" --site site-a.json --rate 20M >/dev/null 2>&1 &
SENDER=$!
sleep 1.8
kill -9 "$SENDER"; wait "$SENDER" 2>/dev/null || true
echo "killed the sender; B kept every chunk it had made durable (not yet a capsule in its store):"
ls site-b-store/ site-b-store/.incoming/ 2>/dev/null || true

step "Run the same command again: only the missing chunks move, each checked against the signed table"
run "$CAPSULE" send dataset.capsule --to "127.0.0.1:$PORT" --site site-a.json --json
STORED=$(ls site-b-store/*.capsule)
cmp dataset.capsule "$STORED" && echo "B's copy $STORED is byte-identical"
echo "the daemon's log:"
sed 's/^/  /' capsuled.log

# The store stays B's user's alone (0750, its capsules 0600, as the package makes it): Alice names
# a stored capsule and B's verifier reads it from its own store, by name.
ls -ld site-b-store "$STORED"

step "Alice holds no site key: she asks B's verifier over its socket"
if [ -n "$ALICE_USER" ]; then
  set +e
  as_alice cat site-b.key; echo "exit status $?"
  set -e
fi
as_alice "$CAPSULE" policy explain "$STORED" --site site-b.json --as alice.key --purpose training --only 'train/**' --only 'eval/**'

step "Alice opens train/ and eval/ for training: permitted, recorded, counted (1 of 2); the files are hers"
as_alice "$CAPSULE" open "$STORED" --site site-b.json --as alice.key --purpose training --only 'train/**' --only 'eval/**' --to landing/run1
diff -r dataset/train landing/run1/train && echo "landing/run1/train is identical to dataset/train"
ls -ld landing/run1 landing/run1/eval/qa-1.tsv

step "Refused: the same request for another purpose"
set +e
as_alice "$CAPSULE" open "$STORED" --site site-b.json --as alice.key --purpose marketing --only 'train/**' --to landing/run2; echo "exit status $?"
step "Refused: the whole capsule (pii/ is forbidden), and nothing is extracted"
as_alice "$CAPSULE" open "$STORED" --site site-b.json --as alice.key --purpose training --to landing/run3; echo "exit status $?"
step "Refused: a symlink Alice planted in the landing zone does not lead the release outside it"
as_alice ln -s /tmp landing/elsewhere
as_alice "$CAPSULE" open "$STORED" --site site-b.json --as alice.key --purpose training --only 'eval/**' --to landing/elsewhere/x; echo "exit status $?"
set -e
step "Alice reads one file without decrypting the rest (cat): permitted, recorded, counted (2 of 2)"
as_alice "$CAPSULE" cat "$STORED" eval/qa-2.tsv --site site-b.json --as alice.key --purpose training
step "Refused: a third release, past maxOpens 2"
set +e
as_alice "$CAPSULE" open "$STORED" --site site-b.json --as alice.key --purpose training --only 'eval/**' --to landing/run4; echo "exit status $?"
set -e
ls landing
echo "the verifier's log:"
grep -E 'verifier|uid=' capsuled.log | sed 's/^/  /' 

step "The audit trail at B: the receipt and every decision, permit or deny, with the asking uid, in a signed Merkle log"
run "$CAPSULE" audit show --site site-b.json
run "$CAPSULE" audit verify --log site-b-state/audit.log --key site-b.pub
step "And at A: what it sent"
run "$CAPSULE" audit show --site site-a.json
run "$CAPSULE" audit verify --log site-a-state/audit.log --key site-a.pub

step "Tamper with one byte in the middle of the capsule: verify names the bad chunk"
cp dataset.capsule tampered.capsule
flip_byte tampered.capsule $((10 << 20))
set +e
run "$CAPSULE" verify tampered.capsule --trust owner.pub; echo "exit status $?"
set -e

step "Tamper with the signed manifest: refused before any policy, key or byte is touched"
cp dataset.capsule forged.capsule
flip_byte forged.capsule $(( $(stat -c %s forged.capsule) - 200 ))
set +e
run "$CAPSULE" open forged.capsule --site site-b.json --as alice.key --purpose training --only 'eval/**' --to landing/should-not-exist; echo "exit status $?"
set -e
[ ! -e landing/should-not-exist ] && echo "nothing was released: landing/should-not-exist/ does not exist"

step "A stranger's key is refused"
run "$CAPSULE" keygen -o stranger >/dev/null
set +e
run "$CAPSULE" open dataset.capsule --identity stranger.key --trust owner.pub --to landing/nope; echo "exit status $?"
set -e

kill -TERM "$DAEMON"; wait "$DAEMON" 2>/dev/null || true; DAEMON=""
printf '\nDemo done. Files are in %s\n' "$(pwd)"

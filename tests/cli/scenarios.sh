#!/usr/bin/env bash
# CLI scenarios: each function runs the real `capsule` binary the way a user would and checks
# exit statuses, messages and, above all, what is (not) left on disk.
# Usage: scenarios.sh CAPSULE_BINARY SCENARIO
set -uo pipefail
CAPSULE=$1
SCENARIO=$2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bunker-cli-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

fail() { echo "FAIL [$SCENARIO]: $*" >&2; exit 1; }
# expect_exit CODE CMD...: runs CMD, checks its exit status, keeps stderr in $WORK/err.
expect_exit() {
  local want=$1; shift
  "$@" >"$WORK/.stdout" 2>"$WORK/.stderr"
  local got=$?
  [ "$got" -eq "$want" ] || { cat "$WORK/.stderr" >&2; fail "'$*' exited $got, expected $want"; }
}
expect_err() { grep -q -- "$1" "$WORK/.stderr" || { cat "$WORK/.stderr" >&2; fail "stderr lacks '$1'"; }; }
one_line_err() {
  local n; n=$(grep -vc '^hint:' "$WORK/.stderr")
  [ "$n" -eq 1 ] || { cat "$WORK/.stderr" >&2; fail "expected one error line, got $n"; }
}
no_leftovers() {  # no staging or partial files anywhere under $1
  local found; found=$(find "$1" -name '.*bunker*' -o -name '*.partial' | head -1)
  [ -z "$found" ] || fail "leftover $found"
}

make_dataset() {
  mkdir -p data/train/deep data/pii
  printf 'hello\n' > data/README
  : > data/empty
  head -c 300000 /dev/urandom > data/train/deep/big.bin
  for i in $(seq 1 50); do printf 'sample %d\n' "$i" > "data/train/s$i.txt"; done
  printf 'secret\n' > data/pii/names.csv
  chmod 600 data/pii/names.csv
  ln -s train/deep/big.bin data/link
}

setup() {
  make_dataset
  "$CAPSULE" keygen -o issuer >/dev/null || fail "keygen issuer"
  "$CAPSULE" keygen -o alice >/dev/null || fail "keygen alice"
  "$CAPSULE" keygen -o mallory >/dev/null || fail "keygen mallory"
  "$CAPSULE" seal data -o d.capsule --sign issuer.key --to alice.pub --chunk-size 64K \
    >/dev/null 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "seal"; }
}

open_ok() { "$CAPSULE" open d.capsule --identity alice.key --trust issuer.pub "$@"; }

scenario_keygen() {
  expect_exit 0 "$CAPSULE" keygen -o k
  grep -q '^bk1:' "$WORK/.stdout" || fail "no fingerprint printed"
  [ "$(stat -c %a k.key)" = 600 ] || fail "k.key mode $(stat -c %a k.key)"
  openssl pkey -in k.key -noout || fail "openssl rejects k.key"
  openssl pkey -pubin -in k.pub -noout || fail "openssl rejects k.pub"
  cp k.key k.key.orig
  expect_exit 7 "$CAPSULE" keygen -o k
  expect_err "already exists"
  cmp -s k.key k.key.orig || fail "existing key was modified"
  expect_exit 0 "$CAPSULE" keygen -o j --json
  grep -q '"fingerprint": "bk1:' "$WORK/.stdout" || fail "keygen --json"
  ! grep -q "PRIVATE" "$WORK/.stdout" "$WORK/.stderr" || fail "private key printed"
}

scenario_roundtrip() {
  setup
  expect_exit 0 "$CAPSULE" inspect d.capsule
  grep -q "recipients" "$WORK/.stdout" || fail "inspect lacks recipients"
  expect_exit 0 "$CAPSULE" verify d.capsule --trust issuer.pub
  grep -q "OK" "$WORK/.stdout" || fail "verify output"
  expect_exit 0 open_ok --to out
  diff -r data out || fail "extracted tree differs"
  [ "$(readlink out/link)" = train/deep/big.bin ] || fail "symlink not kept"
  [ "$(stat -c %a out/pii/names.csv)" = 600 ] || fail "mode not kept"
  [ "$(stat -c %Y out/README)" = "$(stat -c %Y data/README)" ] || fail "mtime not kept"
  no_leftovers .
}

scenario_inspect_json_and_trust_dir() {
  setup
  mkdir trusted && cp issuer.pub trusted/
  expect_exit 0 "$CAPSULE" inspect d.capsule --json
  grep -q '"suite": "aes-256-gcm"' "$WORK/.stdout" || fail "inspect --json suite"
  expect_exit 0 "$CAPSULE" verify d.capsule --trust trusted --json
  grep -q '"valid": true' "$WORK/.stdout" || fail "verify --json"
}

scenario_to_tar() {
  setup
  expect_exit 0 open_ok --to-tar plain.tar
  tar -tf plain.tar > list || fail "tar -t cannot list the archive"
  grep -qx 'train/deep/big.bin' list || fail "tar listing lacks a file"
  mkdir x && tar -xf plain.tar -C x && diff -r data x || fail "tar -x differs"
  open_ok --to-tar - 2>/dev/null | tar -tf - >/dev/null || fail "--to-tar - | tar -t"
}

scenario_ls_cat() {
  setup
  expect_exit 0 "$CAPSULE" ls d.capsule --identity alice.key --trust issuer.pub
  grep -q 'train/deep/big.bin' "$WORK/.stdout" || fail "ls lacks a file"
  expect_exit 0 "$CAPSULE" ls d.capsule --identity alice.key --trust issuer.pub --json
  [ "$(grep -c '"path"' "$WORK/.stdout")" -eq 58 ] || fail "ls --json count $(grep -c '"path"' "$WORK/.stdout")"
  "$CAPSULE" cat d.capsule train/deep/big.bin --identity alice.key --trust issuer.pub > got \
    || fail "cat"
  cmp -s got data/train/deep/big.bin || fail "cat contents differ"
  "$CAPSULE" cat d.capsule link --identity alice.key --trust issuer.pub >/dev/null 2>"$WORK/.stderr"
  [ $? -eq 3 ] || fail "cat of a symlink should exit 3"
  expect_exit 6 "$CAPSULE" cat d.capsule nope.txt --identity alice.key --trust issuer.pub
  expect_err "is not in the capsule"
}

scenario_only() {
  setup
  expect_exit 0 open_ok --to sel --only 'train/deep/**' --only README
  [ -f sel/train/deep/big.bin ] && [ -f sel/README ] || fail "selected files missing"
  [ ! -e sel/pii ] && [ ! -e sel/train/s1.txt ] || fail "unselected files extracted"
}

scenario_wrong_identity() {
  setup
  expect_exit 5 "$CAPSULE" open d.capsule --identity mallory.key --trust issuer.pub --to out
  expect_err "not addressed to"
  [ ! -e out ] || fail "destination created"
  no_leftovers .
}

scenario_untrusted_issuer() {
  setup
  expect_exit 5 "$CAPSULE" open d.capsule --identity alice.key --trust mallory.pub --to out
  expect_err "is not trusted"
  [ ! -e out ] || fail "destination created"
  expect_exit 5 "$CAPSULE" verify d.capsule --trust mallory.pub
}

scenario_tampered_chunk() {
  setup
  cp d.capsule bad.capsule
  # Flip one byte inside chunk 2 (64 KiB chunks + 16-byte tags after a 16-byte header).
  off=$((16 + 2 * (65536 + 16) + 100))
  printf '\xff' | dd of=bad.capsule bs=1 seek=$off conv=notrunc status=none
  expect_exit 4 "$CAPSULE" verify bad.capsule --trust issuer.pub
  expect_err "chunk 2 of"
  one_line_err
  expect_exit 4 "$CAPSULE" open bad.capsule --identity alice.key --trust issuer.pub --to out
  [ ! -e out ] || fail "destination created from a tampered capsule"
  no_leftovers .
  expect_exit 4 "$CAPSULE" open bad.capsule --identity alice.key --trust issuer.pub --to-tar t.tar
  [ ! -e t.tar ] || fail "tar written from a tampered capsule"
}

scenario_truncated_and_appended() {
  setup
  size=$(stat -c %s d.capsule)
  for cut in 10 $((16 + 65552)) $((size / 2)) $((size - 1)); do
    head -c "$cut" d.capsule > cut.capsule
    expect_exit 4 "$CAPSULE" verify cut.capsule --trust issuer.pub
    one_line_err
    expect_exit 4 "$CAPSULE" open cut.capsule --identity alice.key --trust issuer.pub --to out
    [ ! -e out ] || fail "destination created from a truncated capsule"
  done
  cp d.capsule long.capsule && printf 'extra' >> long.capsule
  expect_exit 4 "$CAPSULE" inspect long.capsule
  expect_exit 4 "$CAPSULE" inspect data/README
  expect_err "not a capsule"
}

scenario_destination_rules() {
  setup
  mkdir full && touch full/x
  expect_exit 7 open_ok --to full
  expect_err "not empty"
  [ "$(ls full)" = x ] || fail "non-empty destination modified"
  mkdir empty
  expect_exit 0 open_ok --to empty
  [ -f empty/README ] || fail "empty destination not filled"
}

scenario_malicious_tar() {
  make_dataset
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  mkdir m && printf 'x' > m/f
  tar -cf evil.tar -C m --transform 's,^f$,../../evil,' f 2>/dev/null || fail "cannot build evil.tar"
  expect_exit 3 "$CAPSULE" seal evil.tar --from-tar -o e.capsule --sign issuer.key --to alice.pub
  expect_err "unsafe path"
  one_line_err
  [ ! -e e.capsule ] || fail "capsule written from a malicious archive"
  no_leftovers .
  tar -cf abs.tar -P /etc/hostname 2>/dev/null
  expect_exit 3 "$CAPSULE" seal abs.tar --from-tar -o e.capsule --sign issuer.key --to alice.pub
  [ ! -e e.capsule ] || fail "capsule written from an absolute-path archive"
}

scenario_seal_from_stdin_tar() {
  make_dataset
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  tar -cf - -C data . | "$CAPSULE" seal - --from-tar -o s.capsule --sign issuer.key \
    --to alice.pub >/dev/null 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "seal from stdin"; }
  "$CAPSULE" open s.capsule --identity alice.key --trust issuer.pub --to out >/dev/null \
    || fail "open"
  diff -r data out || fail "stdin tar round trip differs"
}

scenario_policy() {
  make_dataset
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  printf '{"version": 1, "rules": [' > bad.json
  expect_exit 3 "$CAPSULE" seal data -o p.capsule --sign issuer.key --to alice.pub --policy bad.json
  expect_err "not valid JSON"
  [ ! -e p.capsule ] || fail "capsule written with an invalid policy"
  printf '{"version": 1, "rules": [{"id": "r1", "effect": "permit"}]}\n' > good.json
  expect_exit 0 "$CAPSULE" seal data -o p.capsule --sign issuer.key --to alice.pub --policy good.json
  expect_exit 0 "$CAPSULE" inspect p.capsule
  grep -q '"id": "r1"' "$WORK/.stdout" || fail "inspect does not show the policy"
}

scenario_chacha_and_threads() {
  make_dataset
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  expect_exit 0 "$CAPSULE" seal data -o c.capsule --sign issuer.key --to alice.pub \
    --suite chacha20-poly1305 --threads 1 --chunk-size 4K
  expect_exit 0 "$CAPSULE" open c.capsule --identity alice.key --trust issuer.pub --to out \
    --threads 3
  diff -r data out || fail "chacha round trip differs"
  expect_exit 2 "$CAPSULE" seal data -o z.capsule --sign issuer.key --to alice.pub --suite des
}

scenario_key_permissions() {
  setup
  chmod 644 alice.key
  expect_exit 5 open_ok --to out
  expect_err "chmod 600"
  ! grep -q "PRIVATE KEY\|BEGIN" "$WORK/.stderr" || fail "key material in error"
  expect_exit 3 "$CAPSULE" open d.capsule --identity alice.pub --trust issuer.pub --to out
  chmod 600 alice.pub 2>/dev/null
  expect_exit 3 "$CAPSULE" seal data -o y.capsule --sign issuer.key --to issuer.key
  expect_err "private key"
}

scenario_help_and_usage() {
  for c in keygen seal inspect verify open ls cat; do
    expect_exit 0 "$CAPSULE" "$c" --help
    grep -q "Usage: capsule $c" "$WORK/.stdout" || fail "$c --help"
  done
  expect_exit 0 "$CAPSULE" --help
  expect_exit 2 "$CAPSULE" frobnicate
  expect_exit 2 "$CAPSULE" seal data --bogus
  expect_err "unknown option --bogus"
  expect_exit 2 "$CAPSULE" open x.capsule --identity k --trust t
  expect_err "exactly one of --to or --to-tar"
}

scenario_missing_inputs() {
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  expect_exit 6 "$CAPSULE" seal nothing -o n.capsule --sign issuer.key --to alice.pub
  [ ! -e n.capsule ] || fail "capsule written for a missing input"
  no_leftovers .
  expect_exit 6 "$CAPSULE" inspect nothing.capsule
  expect_exit 6 "$CAPSULE" seal . -o n.capsule --sign nokey.key --to alice.pub
}

"scenario_$SCENARIO"
echo "ok [$SCENARIO]"

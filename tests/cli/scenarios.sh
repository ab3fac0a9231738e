#!/usr/bin/env bash
# CLI scenarios: each function runs the real `capsule` binary the way a user would and checks
# exit statuses, messages and, above all, what is (not) left on disk.
# Usage: scenarios.sh CAPSULE_BINARY SCENARIO
set -uo pipefail
CAPSULE=$1
SCENARIO=$2
. "$(dirname "$0")/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bunker-cli-XXXXXX")
trap 'remove_work $?' EXIT
cd "$WORK"

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
  need openssl
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

# What a command prints must reach its output: a full disk or a closed stdout is one line and
# a non-zero exit, never a success with the output cut short.
scenario_output_errors_are_not_success() {
  [ -w /dev/full ] || { echo "SKIP [$SCENARIO]: needs /dev/full" >&2; exit 77; }
  setup
  local cmd
  for cmd in "inspect d.capsule" "ls d.capsule --identity alice.key --trust issuer.pub" \
             "verify d.capsule --trust issuer.pub" "inspect d.capsule --json" "--help" \
             "ls --help" "--version"; do
    local rc=0
    # shellcheck disable=SC2086
    "$CAPSULE" $cmd >/dev/full 2>"$WORK/.stderr" || rc=$?
    [ "$rc" -eq 8 ] || { cat "$WORK/.stderr"; fail "'capsule $cmd >/dev/full' exited $rc, expected 8"; }
    expect_err "cannot write the output"
    one_line_err
  done
  "$CAPSULE" inspect d.capsule >&- 2>"$WORK/.stderr" && fail "inspect into a closed stdout succeeded"
  one_line_err
  # A pipe whose reader is gone: named as such, by the command that wrote (not "Input/output
  # error" from "capsule").
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$CAPSULE" "$WORK/.stderr" <<'PY' || fail "a pipe without a reader: $(cat "$WORK/.stderr")"
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
with open(sys.argv[2], "wb") as err:
    rc = subprocess.run([sys.argv[1], "audit", "show", "--help"], stdout=w, stderr=err).returncode
sys.exit(0 if rc == 9 else 1)
PY
    expect_err "^capsule audit show: cannot write the output: its reader went away (broken pipe)$"
    one_line_err
  fi
}

# Regression: a 2 KiB tar whose header declares 8 GiB made seal write 8 GiB of zeros into the
# capsule (padding the entry on the error path) before it failed. Files are capped at 64 MiB
# here (prlimit): a seal that still padded would die of SIGXFSZ rather than fill the disk.
scenario_seal_from_tar_truncated_huge_entry() {
  "$CAPSULE" keygen -o issuer >/dev/null || fail "keygen"
  "$CAPSULE" keygen -o alice >/dev/null || fail "keygen"
  truncate -s 8G huge.bin
  { tar cf - huge.bin 2>/dev/null; true; } | head -c 2048 > t.tar
  rm -f huge.bin
  [ "$(stat -c %s t.tar)" -eq 2048 ] || fail "could not make the truncated tar"
  mkdir out
  expect_exit 3 prlimit --fsize=$((64 << 20)) "$CAPSULE" seal t.tar --from-tar -o out/t.capsule \
    --sign issuer.key --to alice.pub
  expect_err "huge.bin"
  grep -qi "truncated" "$WORK/.stderr" || { cat "$WORK/.stderr" >&2; fail "no 'truncated'"; }
  [ -z "$(ls -A out)" ] || fail "left $(ls -A out) behind"
  # The same from standard input.
  prlimit --fsize=$((64 << 20)) "$CAPSULE" seal - --from-tar -o out/s.capsule --sign issuer.key \
    --to alice.pub < t.tar 2>"$WORK/.stderr"
  [ $? -eq 3 ] || { cat "$WORK/.stderr" >&2; fail "stdin: wrong exit status"; }
  [ -z "$(ls -A out)" ] || fail "left $(ls -A out) behind"
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
  # A pattern that selects nothing (a typo) is "not found", and nothing is made.
  expect_exit 6 open_ok --to typo --only 'train/deep/**' --only 'trian/**'
  expect_err 'matches nothing in the capsule'
  [ ! -e typo ] || fail "a destination was made for a selection of nothing"
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
  flip_byte bad.capsule "$off"
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
  expect_err "accessible by others (mode 0644)$"
  expect_err "^hint: run: chmod 600 alice.key$"
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
  # Unknown commands and subcommands: one line and a hint, the name escaped.
  for c in "$(printf 'fro\033[2Jb')" "audit bogus" "policy --bogus" "audit"; do
    # shellcheck disable=SC2086
    expect_exit 2 "$CAPSULE" $c
    one_line_err
    ! grep -q "$(printf '\033')" "$WORK/.stderr" || fail "an escape reached the terminal"
  done
  # -o - is not standard output for any command: refused, no file named "-".
  expect_exit 2 "$CAPSULE" seal data -o - --sign k --to t
  expect_err "not supported"
  [ ! -e ./- ] || fail "a file named - was made"
  "$CAPSULE" --help | grep -q 'report' || fail "the usage omits audit report"
}

# An interrupt ends a command that waits on something that never moves (here a FIFO with no
# writer): 130, at once or after the grace period at most, never a wait without end, and a
# failure an interrupt caused is reported as the interrupt. A second interrupt ends it at once.
scenario_interrupt_while_blocked() {
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  mkfifo in.tar
  local sig pid rc
  for sig in INT TERM HUP; do
    "$CAPSULE" seal --from-tar in.tar -o x.capsule --sign issuer.key --to alice.pub \
      2>"$WORK/.stderr" &
    pid=$!
    sleep 0.3
    kill -"$sig" "$pid"
    # Hang guard only: the command ends within its 5 s grace.
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; fail "seal from a FIFO ignored SIG$sig"; }
    wait "$pid"; rc=$?
    [ "$rc" = 130 ] || { cat "$WORK/.stderr"; fail "SIG$sig: exit $rc, expected 130"; }
    expect_err interrupted
    [ ! -e x.capsule ] || fail "a capsule was written"
  done
  no_leftovers .
}

# Usage errors found below the command (a required flag missing or empty) exit 2; arguments
# are never echoed with their terminal escapes; with --json a failure is one JSON document.
scenario_usage_escapes_and_json_errors() {
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  mkdir data && printf 'x\n' > data/f
  "$CAPSULE" seal data -o d.capsule --sign issuer.key --to alice.pub >/dev/null || fail "seal"
  expect_exit 2 "$CAPSULE" verify d.capsule
  expect_err "--trust is required"
  # With --json a bad command line is one document too, wherever --json stands.
  expect_exit 2 "$CAPSULE" verify d.capsule --json
  [ "$(wc -l < "$WORK/.stdout")" = 1 ] || fail "a usage error with --json: not one document"
  expect_out '"exitStatus": *2'
  expect_exit 2 "$CAPSULE" seal --json
  expect_out '"error": "missing INPUT", "exitStatus": 2'
  expect_exit 2 "$CAPSULE" keygen --json --bogus
  expect_out '"exitStatus": *2'
  # ... but an option's value "--json" asked for no JSON.
  expect_exit 2 "$CAPSULE" ls --purpose --json
  [ ! -s "$WORK/.stdout" ] || fail "JSON for a --json that was --purpose's value"
  # An empty value names nothing: a bad command line (2), for every option and argument, not
  # a file "" not found (6) or an empty destination (3).
  local bad
  for bad in "open d.capsule --site '' --to o" "open d.capsule --identity '' --trust issuer.pub --to o" \
             "open d.capsule --identity alice.key --trust issuer.pub --to ''" "cat d.capsule ''" \
             "ls '' --identity alice.key --trust issuer.pub" "audit verify --log '' --key issuer.pub" \
             "audit show --site=" "send d.capsule --to '' --site s.json" "seal data -o '' --sign issuer.key --to alice.pub" \
             "seal data -o e.capsule --sign issuer.key --to ''" "seal data -o e.capsule --sign issuer.key --to alice.pub --policy ''"; do
    eval "expect_exit 2 \"\$CAPSULE\" $bad"
    expect_err "is empty"
  done
  [ ! -e o ] && [ ! -e e.capsule ] || fail "an empty argument wrote something"
  expect_exit 2 "$CAPSULE" seal data -o y.capsule --sign= --to alice.pub
  expect_exit 2 "$CAPSULE" ls d.capsule --trust issuer.pub
  local esc
  esc=$(printf 'x\033]0;PWNED\007\033[2J')
  for args in "inspect -$esc" "seal data -o z.capsule --sign issuer.key --to alice.pub --chunk-size $esc" \
              "audit show --log nolog --since $esc"; do
    # shellcheck disable=SC2086
    "$CAPSULE" $args >"$WORK/.stdout" 2>"$WORK/.stderr"
    ! grep -q "$(printf '\033')" "$WORK/.stdout" "$WORK/.stderr" || fail "an escape reached the terminal: $args"
  done
  cp d.capsule "$esc.capsule"
  expect_exit 0 "$CAPSULE" verify "$esc.capsule" --trust issuer.pub
  ! grep -q "$(printf '\033')" "$WORK/.stdout" || fail "verify echoed the escape"
  # --json failures: one document with the error and the exit status.
  expect_exit 6 "$CAPSULE" inspect missing.capsule --json
  [ "$(wc -l < "$WORK/.stdout")" = 1 ] || fail "not one line of JSON"
  expect_out '"exitStatus": *6'
  expect_out '"error":'
  expect_exit 6 "$CAPSULE" open missing.capsule --identity alice.key --trust issuer.pub --to o --json
  expect_out '"exitStatus": *6'
  expect_exit 5 "$CAPSULE" verify "$esc.capsule" --trust alice.pub --json
  [ "$(wc -l < "$WORK/.stdout")" = 1 ] || fail "verify printed more than one document"
  expect_out '"valid": *false'
  expect_out '"exitStatus": *5'
  # policy check: a file it cannot read is a result too, with its exit status.
  expect_exit 6 "$CAPSULE" policy check missing.json --json
  [ "$(wc -l < "$WORK/.stdout")" = 1 ] || fail "policy check printed more than one document"
  expect_out '"valid": false, "error": "cannot open missing.json: .*", "exitStatus": 6'
}

# ls shows every name one to one: a literal backslash is doubled (so "a\x0ab" and a name with a
# newline differ), and --json gives names that are not UTF-8 also as hex.
scenario_ls_names_one_to_one() {
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  mkdir data
  : > "data/$(printf 'a\nb')"
  : > 'data/a\x0ab'
  : > "data/$(printf 'bad\xff\xfe')"
  : > "data/$(printf 'bad\xff\xfd')"
  "$CAPSULE" seal data -o d.capsule --sign issuer.key --to alice.pub >/dev/null || fail "seal"
  expect_exit 0 "$CAPSULE" ls d.capsule --identity alice.key --trust issuer.pub
  [ "$(grep -c 'a\\x0ab' "$WORK/.stdout")" = 1 ] || { cat "$WORK/.stdout"; fail "the newline name is not shown as \\x0a once"; }
  grep -q 'a\\\\x0ab' "$WORK/.stdout" || { cat "$WORK/.stdout"; fail "the backslash name is not shown with \\\\"; }
  expect_exit 0 "$CAPSULE" ls d.capsule --identity alice.key --trust issuer.pub --json
  expect_out '"pathHex": *"626164fffe"'
  expect_out '"pathHex": *"626164fffd"'
  [ "$(grep -c pathHex "$WORK/.stdout")" = 2 ] || fail "pathHex given for UTF-8 names"
  # The same names from a tar of GNU tar --format=posix (raw bytes in pax records, no
  # hdrcharset): sealed as they are, opened back byte for byte.
  local tar_version; tar_version=$(tar --version 2>/dev/null)
  if [[ $tar_version == *"GNU tar"* ]]; then
    tar --format=posix -cf posix.tar -C data . 2>/dev/null || fail "tar --format=posix"
    expect_exit 0 "$CAPSULE" seal posix.tar --from-tar -o p.capsule --sign issuer.key --to alice.pub
    expect_exit 0 "$CAPSULE" open p.capsule --identity alice.key --trust issuer.pub --to back
    diff -r data back || fail "the names from a posix tar did not come back as they were"
  fi
}

scenario_missing_inputs() {
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  expect_exit 6 "$CAPSULE" seal nothing -o n.capsule --sign issuer.key --to alice.pub
  [ ! -e n.capsule ] || fail "capsule written for a missing input"
  no_leftovers .
  expect_exit 6 "$CAPSULE" inspect nothing.capsule
  expect_exit 6 "$CAPSULE" seal . -o n.capsule --sign nokey.key --to alice.pub
  # A FIFO named as a capsule or a log: refused at once, not a hang waiting for a writer.
  mkfifo f.capsule
  local cmd
  for cmd in "verify f.capsule --trust issuer.pub" "inspect f.capsule" \
             "ls f.capsule --identity alice.key --trust issuer.pub" "audit verify --log f.capsule --key alice.pub" \
             "audit show --log f.capsule"; do
    # shellcheck disable=SC2086
    expect_exit 3 timeout 20 "$CAPSULE" $cmd
    expect_err 'not a'
    one_line_err
  done
}

# --- Policy language (spec/POLICY.md) ---------------------------------------------------------

write_policies() {
  cat > good.json <<'JSON'
{ "version": 1, "rules": [
  { "id": "east-training", "effect": "permit", "sites": ["site-b"], "purposes": ["training"],
    "paths": ["train/**"], "maxOpens": 3 },
  { "id": "no-pii", "effect": "forbid", "paths": ["pii/**"] } ] }
JSON
  printf '{"version": 1, "rules": [{"id": "a", "effect": "permit"},
    {"id": "b", "effect": "permit", "maxOpens": 0}]}\n' > zero.json
  printf '{"version": 1, "rules": [{"id": "a", "effect": "permit", "colour": "red"}]}\n' \
    > unknown.json
  printf '{"version": 1, "rules": [{"id": "a", "effect": "permit", "purposes": "x"}]}\n' \
    > wrongtype.json
  printf '{"version": 1, "rules": [{"id": "a", "effect": "permit",
    "notAfter": "2026-01-01"}]}\n' > badtime.json
  printf '{"version": 1, "rules": []}\n' > norules.json
  printf '{"version": 1, "rules": [{"id": "f", "effect": "forbid"}]}\n' > never.json
}

scenario_policy_check() {
  write_policies
  expect_exit 0 "$CAPSULE" policy check good.json
  grep -q "good.json: OK, 2 rules" "$WORK/.stdout" || fail "check output: $(cat "$WORK/.stdout")"
  ! grep -q warning "$WORK/.stdout" || fail "warning for a good policy"
  expect_exit 0 "$CAPSULE" policy check good.json --json
  grep -q '"valid": true' "$WORK/.stdout" || fail "check --json"
  expect_exit 0 "$CAPSULE" policy check never.json
  grep -q "warning: no rule can ever permit" "$WORK/.stdout" || fail "no warning for never.json"
  expect_exit 3 "$CAPSULE" policy check zero.json
  expect_err 'zero.json: \$.rules\[1\].maxOpens: must be at least 1'
  one_line_err
  expect_exit 3 "$CAPSULE" policy check unknown.json
  expect_err '\$.rules\[0\].colour: unknown field'
  expect_exit 3 "$CAPSULE" policy check wrongtype.json
  expect_err '\$.rules\[0\].purposes: expected an array, got a string'
  expect_exit 3 "$CAPSULE" policy check badtime.json
  expect_err '\$.rules\[0\].notAfter: "2026-01-01" is not an RFC 3339 UTC time'
  expect_exit 3 "$CAPSULE" policy check norules.json
  expect_err '\$.rules: must contain at least one rule'
  expect_exit 3 "$CAPSULE" policy check zero.json --json
  grep -q '"valid": false' "$WORK/.stdout" || fail "check --json on an invalid policy"
  expect_exit 6 "$CAPSULE" policy check missing.json
  expect_exit 2 "$CAPSULE" policy frobnicate
  expect_exit 0 "$CAPSULE" policy check --help
  grep -q "Usage: capsule policy check" "$WORK/.stdout" || fail "policy check --help"
}

scenario_policy_seal() {
  make_dataset
  write_policies
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  expect_exit 3 "$CAPSULE" seal data -o p.capsule --sign issuer.key --to alice.pub \
    --policy zero.json
  expect_err 'zero.json: \$.rules\[1\].maxOpens: must be at least 1'
  one_line_err
  [ ! -e p.capsule ] || fail "capsule written with an invalid policy"
  expect_exit 3 "$CAPSULE" seal data -o p.capsule --sign issuer.key --to alice.pub \
    --policy unknown.json
  expect_err '\$.rules\[0\].colour: unknown field'
  [ ! -e p.capsule ] || fail "capsule written with an unknown field"
  no_leftovers .
  expect_exit 0 "$CAPSULE" seal data -o n.capsule --sign issuer.key --to alice.pub \
    --policy never.json
  expect_err "capsule seal: warning: no rule can ever permit"
  expect_exit 0 "$CAPSULE" seal data -o g.capsule --sign issuer.key --to alice.pub \
    --policy good.json
  ! grep -q warning "$WORK/.stderr" || fail "warning for a good policy"
}

scenario_policy_explain() {
  make_dataset
  write_policies
  "$CAPSULE" keygen -o issuer >/dev/null && "$CAPSULE" keygen -o alice >/dev/null
  "$CAPSULE" keygen -o bob >/dev/null && "$CAPSULE" keygen -o site >/dev/null
  "$CAPSULE" seal data -o g.capsule --sign issuer.key --to site.pub --policy good.json \
    >/dev/null || fail "seal"
  "$CAPSULE" seal data -o a.capsule --sign issuer.key --to alice.pub --policy good.json \
    >/dev/null || fail "seal for alice"
  printf '{"site": "site-b", "region": "cn-east-1", "identity": "site.key",
    "trust": ["issuer.pub"], "destinations": ["out"], "state": "state"}\n' > site.json
  expect_exit 0 "$CAPSULE" policy explain g.capsule --site site.json --as alice.pub \
    --purpose training --only train
  grep -q "decision   permit" "$WORK/.stdout" || fail "explain permit: $(cat "$WORK/.stdout")"
  grep -q "rules      east-training" "$WORK/.stdout" || fail "explain rules"
  expect_exit 5 "$CAPSULE" policy explain g.capsule --site site.json --as alice.key \
    --purpose eval --only pii --only train --json
  grep -q '"decision": "deny"' "$WORK/.stdout" || fail "explain deny"
  grep -q 'rule no-pii: forbids pii' "$WORK/.stdout" || fail "explain forbid reason"
  grep -q 'purpose \\"eval\\" is not one of \[training\]' "$WORK/.stdout" \
    || fail "explain purpose reason: $(cat "$WORK/.stdout")"
  expect_exit 5 "$CAPSULE" policy explain a.capsule --site site.json --as bob.pub \
    --purpose training --only train
  expect_err "is not addressed to bk1:"
  [ ! -e state ] || fail "explain created the site state"
  # ls shows what this request may open: the directories with a permitted file below them
  # (train/, train/deep/), never a forbidden tree's names (pii/) or files no rule permits.
  expect_exit 0 "$CAPSULE" ls g.capsule --site site.json --purpose training
  grep -q ' train/$' "$WORK/.stdout" && grep -q ' train/deep/$' "$WORK/.stdout" &&
    grep -q ' train/deep/big.bin$' "$WORK/.stdout" && grep -q ' train/s50.txt$' "$WORK/.stdout" ||
    fail "ls lacks permitted entries: $(cat "$WORK/.stdout")"
  ! grep -q -e pii -e README -e ' link' "$WORK/.stdout" || fail "ls shows forbidden names"
  [ "$(wc -l < "$WORK/.stdout")" -eq 53 ] || fail "ls lists $(wc -l < "$WORK/.stdout") entries, want 53"
  expect_exit 2 "$CAPSULE" policy explain g.capsule
  expect_err "--site SITE.json is required"
}

# --- Audit log (spec/AUDIT.md) ----------------------------------------------------------------
# The logs come from tests/audit_fixture.cc (synthetic decisions appended through the library).

AUDIT_FIXTURE=${BUNKER_AUDIT_FIXTURE:-$(dirname "$CAPSULE")/../tests/audit_fixture}
# audit_log COUNT [FIRST]: appends records to ./state with site.key; prints the last checkpoint.
audit_log() { "$AUDIT_FIXTURE" state site.key "$@" || fail "audit_fixture $*"; }
# audit_entry_offset N: the byte offset of entry N in state/audit.log.
audit_entry_offset() {
  local off=0 i=0 n
  while [ "$i" -lt "$1" ]; do
    n=$(od -An -tu1 -j "$off" -N4 state/audit.log | awk '{print $1*16777216+$2*65536+$3*256+$4}')
    off=$((off + 4 + n)); i=$((i + 1))
  done
  echo "$off"
}

scenario_audit_verify_and_tamper() {
  "$CAPSULE" keygen -o site >/dev/null && "$CAPSULE" keygen -o mallory >/dev/null
  audit_log 4 > cp4
  cp -r state state4
  audit_log 3 4 > cp7
  expect_exit 0 "$CAPSULE" audit verify --log state/audit.log --key site.pub
  [ "$(head -1 "$WORK/.stdout")" = "7/7 entries valid" ] || fail "verify: $(cat "$WORK/.stdout")"
  tail -n 6 "$WORK/.stdout" > kept.cp
  cmp -s kept.cp cp7 || fail "verify does not end with the latest checkpoint"
  expect_exit 0 "$CAPSULE" audit verify --log state/audit.log --key site.pub --checkpoint cp4
  grep -q "consistent with the trusted checkpoint of size 4" "$WORK/.stdout" || fail "trusted"
  expect_exit 0 "$CAPSULE" audit verify --log state/audit.log --key site.pub --json
  grep -q '"valid": true, "entries": 7' "$WORK/.stdout" || fail "verify --json"
  expect_exit 4 "$CAPSULE" audit verify --log state/audit.log --key mallory.pub
  expect_err "does not verify under the site key"
  cp -r state good

  # A flipped byte inside entry 2.
  flip_byte state/audit.log $(( $(audit_entry_offset 2) + 13 ))
  expect_exit 4 "$CAPSULE" audit verify --log state/audit.log --key site.pub
  expect_err "audit log entry 2 "
  one_line_err
  expect_exit 4 "$CAPSULE" audit verify --log state/audit.log --key site.pub --json
  grep -q '"valid": false' "$WORK/.stdout" || fail "verify --json on a bad log"

  # Truncated after entry 5.
  rm -rf state && cp -r good state
  truncate -s "$(audit_entry_offset 5)" state/audit.log
  expect_exit 4 "$CAPSULE" audit verify --log state/audit.log --key site.pub
  expect_err "audit log entry 5 is missing"

  # An entry appended without the site's key.
  rm -rf state && cp -r good state
  head -c "$(audit_entry_offset 1)" good/audit.log >> state/audit.log
  expect_exit 4 "$CAPSULE" audit verify --log state/audit.log --key site.pub
  expect_err "audit log entry 7 is not covered by a signed checkpoint"

  # Replaced by the older copy: valid on its own, caught with the newer checkpoint.
  rm -rf state && cp -r state4 state
  expect_exit 0 "$CAPSULE" audit verify --log state/audit.log --key site.pub
  expect_exit 4 "$CAPSULE" audit verify --log state/audit.log --key site.pub --checkpoint kept.cp
  expect_err "audit log entry 4 is missing"
  expect_err "older copy"

  # Usage and input errors.
  expect_exit 6 "$CAPSULE" audit verify --log nowhere/audit.log --key site.pub
  expect_exit 2 "$CAPSULE" audit verify --log state/audit.log
  printf 'not a checkpoint\n' > junk.cp
  expect_exit 3 "$CAPSULE" audit verify --log state/audit.log --key site.pub --checkpoint junk.cp
}

scenario_audit_proofs() {
  need xxd
  "$CAPSULE" keygen -o site >/dev/null && "$CAPSULE" keygen -o mallory >/dev/null
  audit_log 5 > cp5
  audit_log 4 5 > cp9
  expect_exit 0 "$CAPSULE" audit prove --log state/audit.log --entry 3 --key site.pub
  grep -q "^verified: entry 3 is in the tree of size 9 signed by bk1:" "$WORK/.stdout" \
    || fail "prove: $(cat "$WORK/.stdout")"
  # Recompute the leaf from the printed entry bytes, independently of the tool.
  local bytes leaf
  bytes=$(sed -n 's/^entry-bytes //p' "$WORK/.stdout")
  leaf=$(printf '00%s' "$bytes" | xxd -r -p | sha256sum | cut -d' ' -f1)
  grep -q "^leaf $leaf\$" "$WORK/.stdout" || fail "leaf is not SHA-256(00 || entry bytes)"
  grep -q "^root $(sed -n 's/^root //p' cp9)\$" "$WORK/.stdout" || fail "root is not cp9's"
  # Against an older checkpoint the auditor kept.
  expect_exit 0 "$CAPSULE" audit prove --log state/audit.log --entry 4 --checkpoint cp5 \
    --key site.pub --json
  grep -q '"size": 5, ' "$WORK/.stdout" || fail "prove --checkpoint: $(cat "$WORK/.stdout")"
  grep -q '"verified": true}' "$WORK/.stdout" || fail "prove --json not verified"
  expect_exit 0 "$CAPSULE" audit prove --log state/audit.log --entry 0
  grep -q "^not verified: pass --key" "$WORK/.stdout" || fail "prove without --key"
  expect_exit 4 "$CAPSULE" audit prove --log state/audit.log --entry 3 --key mallory.pub
  expect_exit 3 "$CAPSULE" audit prove --log state/audit.log --entry 9
  expect_exit 2 "$CAPSULE" audit prove --log state/audit.log --entry three

  expect_exit 0 "$CAPSULE" audit consistency --log state/audit.log --old cp5 --key site.pub
  grep -q "^old-size 5\$" "$WORK/.stdout" && grep -q "^new-size 9\$" "$WORK/.stdout" \
    || fail "consistency: $(cat "$WORK/.stdout")"
  grep -q "^verified: the tree of size 9 extends the tree of size 5" "$WORK/.stdout" \
    || fail "consistency not verified"
  expect_exit 0 "$CAPSULE" audit consistency --log state/audit.log --old cp5 --json
  grep -q '"oldSize": 5, ' "$WORK/.stdout" || fail "consistency --json"
  # A checkpoint from another history of the same site (a fork) is not consistent.
  "$AUDIT_FIXTURE" forked site.key 6 40 > fork6 || fail "fork"
  expect_exit 4 "$CAPSULE" audit consistency --log state/audit.log --old fork6 --key site.pub
  expect_err "not consistent"
  # A log rolled back behind the auditor's checkpoint.
  expect_exit 4 "$CAPSULE" audit consistency --log forked/audit.log --old cp9
  expect_err "rolled back"
  # A forged --old that claims more entries than the log holds is named as forged, never taken
  # for the site's rollback (signatures are checked first).
  "$AUDIT_FIXTURE" forged mallory.key 12 > forged12 || fail "forged checkpoint"
  expect_exit 4 "$CAPSULE" audit consistency --log state/audit.log --old forged12 --key site.pub
  expect_err "the checkpoint of size 12 does not verify under the site key"
  # ... and asked to prove an entry against that checkpoint: a loss (regression: exit 3, an
  # invalid argument), once the checkpoint's signature is known to be the site's.
  expect_exit 4 "$CAPSULE" audit prove --log forked/audit.log --entry 0 --checkpoint cp9 \
    --key site.pub
  expect_err "has only 6 entries, fewer than 9: it was truncated or rolled back"
  expect_exit 4 "$CAPSULE" audit prove --log forked/audit.log --entry 0 --checkpoint cp9 \
    --key mallory.pub
  ! grep -q "rolled back" "$WORK/.stderr" || fail "prove blamed the log for a foreign checkpoint"
}

# The report writes a page only over a log that verifies, and names what it refuses.
scenario_audit_report_fails_closed() {
  "$CAPSULE" keygen -o site >/dev/null
  "$CAPSULE" keygen -o other >/dev/null
  audit_log 6 >/dev/null
  expect_exit 0 "$CAPSULE" audit report --help
  expect_out "Usage: capsule audit report"
  expect_exit 0 "$CAPSULE" audit report --log state/audit.log --key site.pub -o r.html --json
  expect_out '"entries": 6'
  grep -q "Content-Security-Policy" r.html || fail "no CSP in the page"
  # The fixture's purposes hold a terminal escape, U+202E and invalid UTF-8: shown escaped.
  ! grep -q "$(printf '\033')" r.html || fail "raw escape in the page"
  ! grep -q "$(printf '\342\200\256')" r.html || fail "raw U+202E in the page"
  expect_exit 7 "$CAPSULE" audit report --log state/audit.log --key site.pub -o r.html
  expect_err "pass --force"
  expect_exit 0 "$CAPSULE" audit report --log state/audit.log --key site.pub -o r.html --force
  expect_exit 2 "$CAPSULE" audit report --log state/audit.log -o x.html
  expect_exit 2 "$CAPSULE" audit report --log state/audit.log --key site.pub
  expect_exit 4 "$CAPSULE" audit report --log state/audit.log --key other.pub -o x.html
  one_line_err
  flip_byte state/audit.log "$(( $(audit_entry_offset 3) + 20 ))"
  expect_exit 4 "$CAPSULE" audit report --log state/audit.log --key site.pub -o x.html
  expect_err "state/audit.log: audit log entr"
  [ ! -e x.html ] || fail "a report was written for a log that does not verify"
  no_leftovers .
}

scenario_audit_show_and_export() {
  "$CAPSULE" keygen -o site >/dev/null
  audit_log 6 >/dev/null
  expect_exit 0 "$CAPSULE" audit show --log state/audit.log
  [ "$(wc -l < "$WORK/.stdout")" -eq 7 ] || fail "show: $(cat "$WORK/.stdout")"
  ! grep -q "$(printf '\033')" "$WORK/.stdout" || fail "show printed a raw escape sequence"
  grep -q 'evil \\x1b\[2J \\u202egnp.exe \\xff' "$WORK/.stdout" \
    || fail "escape, bidi override or invalid UTF-8 not shown as text: $(cat "$WORK/.stdout")"
  ! grep -q "$(printf '\342\200\256')" "$WORK/.stdout" || fail "show printed a raw U+202E"
  grep -q '^0 .* 1000 ' "$WORK/.stdout" || fail "show lacks the local uid: $(cat "$WORK/.stdout")"
  # A log that is not there: its error alone, no table header on stdout, no misleading hint.
  expect_exit 6 "$CAPSULE" audit show --log nowhere/audit.log
  [ ! -s "$WORK/.stdout" ] || fail "show printed a header for a missing log"
  ! grep -q 'audit verify' "$WORK/.stderr" || fail "a missing log was sent to audit verify"
  expect_exit 0 "$CAPSULE" audit show --log state/audit.log --decision deny --json
  [ "$(wc -l < "$WORK/.stdout")" -eq 2 ] || fail "--decision deny: $(cat "$WORK/.stdout")"
  ! grep -q '"decision": "permit"' "$WORK/.stdout" || fail "--decision deny shows a permit"
  expect_exit 0 "$CAPSULE" audit show --log state/audit.log --json \
    --capsule 00000000000000000000000000000001 --since 2023-11-14T23:00:00Z \
    --until 2023-11-15T03:13:20+01:00
  # Records 1 and 3 are capsule ...01; record 3 is at 2023-11-15T01:13:20Z, inside the window.
  [ "$(wc -l < "$WORK/.stdout")" -eq 2 ] || fail "filters: $(cat "$WORK/.stdout")"
  grep -q '"index": 3,' "$WORK/.stdout" || fail "filters lost record 3"
  expect_exit 0 "$CAPSULE" audit show --log state/audit.log --requester bk1:nothing
  grep -q "no matching entries" "$WORK/.stdout" || fail "empty result"
  expect_exit 2 "$CAPSULE" audit show --log state/audit.log --since yesterday
  expect_exit 2 "$CAPSULE" audit show --log state/audit.log --decision maybe
  expect_exit 2 "$CAPSULE" audit show
  # --site finds the log in the site's state folder.
  printf '{"site": "site-b", "identity": "site.key", "trust": ["site.pub"],
    "destinations": ["out"], "state": "state"}\n' > site.json
  expect_exit 0 "$CAPSULE" audit show --site site.json --json
  [ "$(wc -l < "$WORK/.stdout")" -eq 6 ] || fail "show --site: $(cat "$WORK/.stdout")"

  expect_exit 0 "$CAPSULE" audit export --log state/audit.log --format jsonl
  [ "$(grep -c '^{"index": ' "$WORK/.stdout")" -eq 6 ] || fail "export jsonl"
  grep -q '"uses": 0, "uid": 1000, "pid": 4242}' "$WORK/.stdout" || fail "export lacks the uid"
  expect_exit 0 "$CAPSULE" audit export --log state/audit.log --format csv
  [ "$(wc -l < "$WORK/.stdout")" -eq 7 ] || fail "export csv"
  head -1 "$WORK/.stdout" | grep -q '^index,time,timeUtc,event,decision,' || fail "csv header"
  grep -q ',"'"'"'=2+3",' "$WORK/.stdout" || fail "csv formula not defused"
  ! grep -q "warning" "$WORK/.stderr" || fail "export warned about a signed log"
  expect_exit 2 "$CAPSULE" audit export --log state/audit.log --format xml
  # An entry appended without the site's key: exported, but with show's warning (regression:
  # export passed it through in silence).
  rm -rf appended && cp -r state appended
  head -c "$(audit_entry_offset 1)" state/audit.log >> appended/audit.log
  expect_exit 0 "$CAPSULE" audit export --log appended/audit.log --format jsonl
  [ "$(grep -c '^{"index": ' "$WORK/.stdout")" -eq 7 ] || fail "export of the appended log"
  expect_err "warning: audit log entries from 6 on are not covered by a signed checkpoint"
  expect_exit 0 "$CAPSULE" audit show --log appended/audit.log
  expect_err "warning: audit log entries from 6 on are not covered by a signed checkpoint"
  # A damaged log: export stops with the entry named.
  truncate -s -3 state/audit.log
  expect_exit 4 "$CAPSULE" audit export --log state/audit.log --format jsonl
  expect_err "audit log entry 5 is truncated"

  for c in show verify prove consistency export; do
    expect_exit 0 "$CAPSULE" audit "$c" --help
    grep -q "Usage: capsule audit $c" "$WORK/.stdout" || fail "audit $c --help"
  done
  expect_exit 0 "$CAPSULE" audit --help
  expect_exit 2 "$CAPSULE" audit
  expect_exit 2 "$CAPSULE" audit frobnicate
}

# json_ok FILE: every line of FILE is one JSON value (strict: valid UTF-8, no trailing text)
# whose object keys, at any depth, are camelCase.
json_ok() {
  python3 - "$1" <<'PY' || fail "$1 is not camelCase JSON: $(cat "$1")"
import json, re, sys
key = re.compile(r'^[a-z][A-Za-z0-9]*$')
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if not key.match(k): sys.exit('key %r is not camelCase' % k)
            walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
lines = open(sys.argv[1], 'rb').read().decode('utf-8').splitlines()
if not lines: sys.exit('no output')
for line in lines: walk(json.loads(line))
PY
}
# json_run CODE CMD...: runs CMD expecting exit CODE and checks its stdout with json_ok.
json_run() {
  expect_exit "$@"
  cp "$WORK/.stdout" "$WORK/json.out"
  json_ok "$WORK/json.out"
}

scenario_json_output_parses() {
  need python3
  make_dataset
  printf 'x' > "data/q\"b\\s caf$(printf '\303\251')"
  json_run 0 "$CAPSULE" keygen -o issuer --json
  json_run 0 "$CAPSULE" keygen -o site --json
  printf '{"version": 1, "rules": [{"id": "all", "effect": "permit"}]}\n' > all.json
  printf '{"version": 1, "rules": [{"id": "f", "effect": "forbid"}]}\n' > never.json
  printf '{"version": 1, "rules": []}\n' > norules.json
  json_run 0 "$CAPSULE" seal data -o d.capsule --sign issuer.key --to site.pub --policy all.json \
    --json
  json_run 0 "$CAPSULE" inspect d.capsule --json
  json_run 0 "$CAPSULE" verify d.capsule --trust issuer.pub --json
  json_run 5 "$CAPSULE" verify d.capsule --trust site.pub --json
  grep -q '"valid": false' "$WORK/json.out" || fail "verify --json says nothing of a refusal"
  json_run 0 "$CAPSULE" ls d.capsule --identity site.key --trust issuer.pub --json
  [ "$(wc -l < "$WORK/json.out")" -eq 59 ] || fail "ls --json lines"
  json_run 0 "$CAPSULE" open d.capsule --identity site.key --trust issuer.pub --to o1 --json
  json_run 0 "$CAPSULE" open d.capsule --identity site.key --trust issuer.pub --to-tar o.tar --json
  json_run 0 "$CAPSULE" policy check never.json --json
  json_run 3 "$CAPSULE" policy check norules.json --json
  # A site, so that there is an audit log; the purpose carries an escape sequence, a C1 CSI and
  # bytes that are not UTF-8.
  mkdir out
  printf '{"site": "site-b", "identity": "site.key", "trust": ["issuer.pub"],
    "destinations": ["out"], "state": "state"}\n' > site.json
  local evil; evil=$(printf 'x\033[2J\302\233\377"\\')
  json_run 0 "$CAPSULE" policy explain d.capsule --site site.json --purpose "$evil" --json
  json_run 0 "$CAPSULE" open d.capsule --site site.json --purpose "$evil" --to out/a --json
  "$CAPSULE" audit verify --log state/audit.log --key site.pub | tail -n 6 > cp1
  json_run 0 "$CAPSULE" open d.capsule --site site.json --to out/b --json
  json_run 0 "$CAPSULE" audit show --log state/audit.log --json
  grep -aq '"timeUtc": "' "$WORK/json.out" && grep -aq '"capsuleId": "' "$WORK/json.out" \
    || fail "audit show keys: $(cat "$WORK/json.out")"
  grep -aq '\\u001b\[2J\\u009b'"$(printf '\357\277\275')"'\\"\\\\' "$WORK/json.out" \
    || fail "purpose not escaped once: $(cat "$WORK/json.out")"
  json_run 0 "$CAPSULE" audit export --log state/audit.log --format jsonl
  json_run 0 "$CAPSULE" audit verify --log state/audit.log --key site.pub --checkpoint cp1 --json
  grep -q '"trustedSize": 1, ' "$WORK/json.out" || fail "verify --json: $(cat "$WORK/json.out")"
  json_run 0 "$CAPSULE" audit prove --log state/audit.log --entry 0 --key site.pub --json
  grep -q '"entryBytes": "' "$WORK/json.out" || fail "prove --json: $(cat "$WORK/json.out")"
  json_run 0 "$CAPSULE" audit consistency --log state/audit.log --old cp1 --key site.pub --json
  grep -q '"oldSize": 1, "oldRoot": "' "$WORK/json.out" || fail "consistency --json"
  printf 'junk' >> state/audit.log
  json_run 4 "$CAPSULE" audit verify --log state/audit.log --key site.pub --json
}

run_scenario

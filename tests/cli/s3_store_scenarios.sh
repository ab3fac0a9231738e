#!/usr/bin/env bash
# A site whose store is an S3 bucket (spec/STORE.md), with real daemons on loopback and a real
# S3 server: OpenStack Swift with s3api (tests/tools/swift_s3.sh). Skips (77) where Swift or the
# AWS CLI is missing. Usage: s3_store_scenarios.sh CAPSULE_BINARY CAPSULED_BINARY SCENARIO
set -uo pipefail
CAPSULE=$1
CAPSULED=$2
SCENARIO=$3
SWIFT="$(cd "$(dirname "$0")/.." && pwd)/tools/swift_s3.sh"
. "$(dirname "$0")/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bunker-s3store-XXXXXX")
DAEMON_PIDS=()
cleanup() {
  local rc=$?
  for p in "${DAEMON_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  [ -d "$WORK/swift" ] && bash "$SWIFT" stop "$WORK/swift" >/dev/null 2>&1
  remove_work $rc
}
trap cleanup EXIT
cd "$WORK"

BUCKET=bunker-site-b

# Swift up, the bucket made, AWS_* exported for the daemons and the aws CLI.
start_swift() {
  bash "$SWIFT" check || exit 77
  command -v aws >/dev/null 2>&1 || { echo "skipped: the AWS CLI (awscli) is not installed"; exit 77; }
  mkdir -p swift
  bash "$SWIFT" start "$WORK/swift" || fail "the Swift S3 server did not start"
  eval "$(bash "$SWIFT" env "$WORK/swift")"
  # Older awscli (Debian 12's 2.9) ignores AWS_ENDPOINT_URL: name the endpoint on every call.
  aws() { command aws --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }
  export AWS_SHARED_CREDENTIALS_FILE="$WORK/no-such-credentials" AWS_CONFIG_FILE="$WORK/no-such-config"
  aws s3 mb "s3://$BUCKET" >/dev/null || fail "cannot make the bucket"
}

# Keys, a capsule of $DATA_BYTES (default 12 MB, 64 KiB chunks: 3 parts of >= 5 MiB), site A
# (sender) and B (receiver, S3 store with 5 MiB parts).
setup() {
  for k in owner site-a site-b site-c; do [ -f $k.key ] || "$CAPSULE" keygen -o $k >/dev/null; done
  mkdir -p data
  head -c "${DATA_BYTES:-12000000}" /dev/urandom > data/x.bin
  "$CAPSULE" seal data -o d.capsule --sign owner.key --to site-b.pub --chunk-size 64K \
    >/dev/null 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "seal"; }
  cat > a.json <<'JSON'
{"site": "site-a", "identity": "site-a.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "state-a", "peers": ["site-b.pub"], "store": "store-a"}
JSON
  b_site b state-b > b.json
}
# b_site NAME STATE: a receiving site on the bucket.
b_site() {
  cat <<JSON
{"site": "site-b", "identity": "site-b.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "$2", "listen": "127.0.0.1:0", "peers": ["site-a.pub", "site-c.pub"],
 "store": "s3://$BUCKET/capsules", "s3": {"partMiB": 5}}
JSON
}

# start_daemon NAME CONFIG: starts a daemon logging to NAME.log; sets PORT and PID.
start_daemon() {
  local before
  before=$(grep -c "listening on" "$1.log" 2>/dev/null)
  "$CAPSULED" --site "$2" 2>>"$1.log" &
  PID=$!
  DAEMON_PIDS+=("$PID")
  for _ in $(seq 1 400); do
    if [ "$(grep -c "listening on" "$1.log")" -gt "${before:-0}" ]; then
      PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$1.log" | tail -1)
      return
    fi
    kill -0 "$PID" 2>/dev/null || { cat "$1.log"; fail "daemon $1 exited at start"; }
    sleep 0.05
  done
  cat "$1.log"; fail "daemon $1 did not start"
}
send_to() { "$CAPSULE" send "${CAPSULE_FILE:-d.capsule}" --to "127.0.0.1:$1" --site a.json "${@:2}"; }
json_field() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" "$WORK/.stdout"; }
capsule_id() { "$CAPSULE" inspect "$1" --json | sed -n 's/^{"capsule": "\([0-9a-f]*\)".*/\1/p'; }
objects() { aws s3 ls "s3://$BUCKET/capsules/" | awk '{print $4}' | grep '\.capsule$'; }
# A rate-limited send to $PORT whose receiver (daemon $PID, logging to b.log) is killed with -9
# once it has uploaded its first part; SENDER_RC is the sender's exit status.
kill_receiver_after_first_part() {
  send_to "$PORT" --rate 4M >/dev/null 2>&1 &
  local sender=$!
  for _ in $(seq 1 400); do grep -q "s3: part" b.log && break; sleep 0.05; done
  grep -q "s3: part" b.log || { cat b.log; fail "no part was uploaded before the kill"; }
  kill -9 "$PID"; wait "$PID" 2>/dev/null
  SENDER_RC=0; wait "$sender" || SENDER_RC=$?
}

uploads_left() {
  aws s3api list-multipart-uploads --bucket "$BUCKET" --output text \
    --query 'Uploads[].UploadId' 2>/dev/null | tr '\t' '\n' | grep -v '^None$' | grep -c .
}
read_back() {  # read_back ID FILE: the object through the AWS CLI equals FILE
  rm -f got.capsule
  aws s3 cp "s3://$BUCKET/capsules/$1.capsule" got.capsule >/dev/null || fail "aws s3 cp failed"
  cmp -s "$2" got.capsule || fail "the object read back through aws s3 cp differs from $2"
}
# The part numbers a daemon log says were uploaded, one per line.
parts_in() { sed -n 's/.*s3: part \([0-9]*\) of .*/\1/p' "$1" | sort -n; }

scenario_s3_store_push_and_read_back() {
  start_swift
  setup
  start_daemon b b.json
  expect_exit 0 send_to "$PORT" --json
  [ "$(json_field chunksSent)" -eq "$(json_field chunksTotal)" ] || fail "not all chunks sent"
  id=$(capsule_id d.capsule)
  read_back "$id" d.capsule
  [ "$(parts_in b.log | tr '\n' ' ')" = "1 2 3 " ] || { cat b.log; fail "expected parts 1 2 3 once each"; }
  [ "$(objects | wc -l)" -eq 1 ] || fail "expected one capsule object"
  [ "$(uploads_left)" -eq 0 ] || fail "an upload was left behind"
  [ -z "$(find state-b/s3-spool -type f 2>/dev/null)" ] || fail "spool files were left behind"
  # Offered again: already stored, nothing sent.
  expect_exit 0 send_to "$PORT" --json
  [ "$(json_field chunksSkipped)" -eq "$(json_field chunksTotal)" ] || fail "resend was not skipped"
  # The receipt is on record (before the object was completed).
  expect_exit 0 "$CAPSULE" audit verify --log state-b/audit.log --key site-b.pub
  grep -q "received capsule=$id" b.log || fail "no 'received' log line"
  # Store and forward from the S3 store: the daemon serves a fetch from the bucket.
  expect_exit 0 "$CAPSULE" fetch "$id" --from "127.0.0.1:$PORT" --site a.json -o fetched.capsule
  cmp -s d.capsule fetched.capsule || fail "fetched capsule differs"
  # A restarted daemon finds the object, records nothing twice, and aborts nothing of its own.
  kill -TERM "$PID"; wait "$PID" 2>/dev/null
  start_daemon b b.json
  expect_exit 0 "$CAPSULE" audit verify --log state-b/audit.log --key site-b.pub
}

scenario_s3_store_receiver_killed_then_resumed() {
  start_swift
  DATA_BYTES=16000000 setup
  start_daemon b b.json
  kill_receiver_after_first_part
  [ "$SENDER_RC" -ne 0 ] || fail "send succeeded although the receiver died"
  [ -z "$(objects)" ] || fail "an object appeared before the capsule was complete"
  cp b.log b-first.log; : > b.log
  start_daemon b b.json
  expect_exit 0 send_to "$PORT" --json
  [ "$(json_field chunksSkipped)" -gt 0 ] || fail "resume after a receiver crash sent every chunk"
  grep -q "resumed: [1-9][0-9]* of" b.log || { cat b.log; fail "the upload was not resumed"; }
  # A part uploaded (journaled) before the kill is never uploaded again.
  local again
  again=$(comm -12 <(parts_in b-first.log) <(parts_in b.log))
  [ -z "$again" ] || fail "parts uploaded again after the resume: $again"
  [ "$(cat <(parts_in b-first.log) <(parts_in b.log) | sort -n | tr '\n' ' ')" = "1 2 3 4 " ] ||
    fail "expected parts 1 to 4 uploaded once each"
  read_back "$(capsule_id d.capsule)" d.capsule
  [ "$(uploads_left)" -eq 0 ] || fail "an upload was left behind"
}

# Regression: a resume after partMiB changed combined parts cut with the old layout with the new
# one's byte ranges. The journal records the layout: another one starts the upload afresh.
scenario_s3_store_part_layout_changed_across_a_crash() {
  start_swift
  DATA_BYTES=16000000 setup
  start_daemon b b.json
  kill_receiver_after_first_part
  : > b.log
  sed 's/"s3": {"partMiB": 5}/"s3": {"partMiB": 6}/' b.json > b6.json
  start_daemon b b6.json
  expect_exit 0 send_to "$PORT"
  grep -q "was cut with another part layout; receiving it afresh" b.log ||
    { cat b.log; fail "the change of part layout went unnoticed"; }
  read_back "$(capsule_id d.capsule)" d.capsule
  [ "$(uploads_left)" -eq 0 ] || fail "an upload was left behind"
}

# An upload whose journal is lost (the spool removed after a crash) is aborted at its daemon's
# next start; another daemon on the bucket never aborts it.
scenario_s3_store_abandoned_upload_is_aborted_by_its_own_daemon() {
  start_swift
  DATA_BYTES=16000000 setup
  start_daemon b b.json
  kill_receiver_after_first_part
  [ "$(uploads_left)" -eq 1 ] || fail "expected the killed daemon's upload in progress"
  b_site b2 state-b2 > b2.json
  start_daemon b2 b2.json
  [ "$(uploads_left)" -eq 1 ] || fail "another daemon aborted an upload that was not its own"
  rm -rf state-b/s3-spool
  start_daemon b b.json
  grep -q "aborted an abandoned upload" b.log || { cat b.log; fail "no abort logged"; }
  [ "$(uploads_left)" -eq 0 ] || fail "the abandoned upload was not aborted"
  [ -z "$(objects)" ] || fail "an incomplete capsule was stored"
  # And the capsule is received afresh.
  expect_exit 0 send_to "$PORT"
  read_back "$(capsule_id d.capsule)" d.capsule
}

# A copy of a daemon's state folder (the same daemon id) running elsewhere leaves the original's
# upload alone; a crash between a pending marker and its upload's journal line leaves an upload
# the next start aborts.
scenario_s3_store_cloned_state_and_pending_marker() {
  start_swift
  DATA_BYTES=16000000 setup
  start_daemon b b.json
  kill -TERM "$PID"; wait "$PID" 2>/dev/null
  cp -r state-b state-clone
  b_site clone state-clone > clone.json
  start_daemon b b.json
  kill_receiver_after_first_part
  [ "$(uploads_left)" -eq 1 ] || fail "expected the killed daemon's upload in progress"
  start_daemon clone clone.json
  grep -q "another daemon with this daemon's id" clone.log || { cat clone.log; fail "no 'left alone' line"; }
  [ "$(uploads_left)" -eq 1 ] || fail "a copy of the daemon's state folder aborted its upload"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null
  start_daemon b b.json
  expect_exit 0 send_to "$PORT"
  read_back "$(capsule_id d.capsule)" d.capsule
  [ "$(uploads_left)" -eq 0 ] || fail "an upload was left behind"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null
  # "Crash" between the pending marker and the journal line: an upload only the marker hints at.
  local daemon boot fake=0123456789abcdef0123456789abcdef
  daemon=$(cat state-b/daemon-id)
  boot=$(tail -1 state-b/s3-boots)
  aws s3api create-multipart-upload --bucket "$BUCKET" --key "capsules/$fake.capsule" >/dev/null ||
    fail "cannot create an upload"
  printf 'pending %s' "$boot" > pending.txt
  aws s3 cp pending.txt "s3://$BUCKET/capsules/.incoming/$daemon/$fake.upload" >/dev/null ||
    fail "cannot put the marker"
  [ "$(uploads_left)" -eq 1 ] || fail "expected the stray upload"
  start_daemon b b.json
  grep -q "never journaled" b.log || { cat b.log; fail "the pending upload was not aborted"; }
  [ "$(uploads_left)" -eq 0 ] || fail "the pending upload is still there"
  aws s3 ls "s3://$BUCKET/capsules/.incoming/$daemon/" | grep -q "$fake" &&
    fail "the pending marker was not removed"
  return 0
}

scenario_s3_store_sender_killed_then_resumed() {
  start_swift
  DATA_BYTES=16000000 setup
  start_daemon b b.json
  # The program itself in the background (send_to would run in a subshell, and kill -9 would
  # leave its capsule child sending).
  "$CAPSULE" send d.capsule --to "127.0.0.1:$PORT" --site a.json --rate 4M >/dev/null 2>&1 &
  local sender=$!
  for _ in $(seq 1 400); do grep -q "s3: part" b.log && break; sleep 0.05; done
  kill -9 "$sender"; wait "$sender" 2>/dev/null
  [ -z "$(objects)" ] || fail "an object appeared before the capsule was complete"
  expect_exit 0 send_to "$PORT" --json
  [ "$(json_field chunksSkipped)" -gt 0 ] || fail "resume sent every chunk again"
  [ "$(parts_in b.log | tr '\n' ' ')" = "1 2 3 4 " ] || { cat b.log; fail "a part was uploaded twice"; }
  read_back "$(capsule_id d.capsule)" d.capsule
}

scenario_s3_store_wrong_secret() {
  start_swift
  setup
  # A secret in the site file is refused, naming the way to give it.
  sed 's/"s3": {"partMiB": 5}/"s3": {"secretAccessKey": "x"}/' b.json > secret.json
  expect_exit 3 "$CAPSULED" --site secret.json
  expect_err "never holds credentials"
  # A credentials file others may read is refused.
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = wrong\n' \
    "$AWS_ACCESS_KEY_ID" > creds
  chmod 0644 creds
  sed 's|"s3": {"partMiB": 5}|"s3": {"partMiB": 5, "credentialsFile": "creds"}|' b.json > wrong.json
  "$CAPSULED" --site wrong.json >"$WORK/.stdout" 2>"$WORK/.stderr" && fail "started with a readable credentials file"
  expect_err "chmod"
  # A wrong secret: the daemon does not start, says why, stores nothing.
  chmod 0600 creds
  "$CAPSULED" --site wrong.json >"$WORK/.stdout" 2>"$WORK/.stderr"
  rc=$?
  [ "$rc" -ne 0 ] || fail "the daemon started with a wrong secret"
  expect_err "access denied"
  grep -q "wrong" "$WORK/.stderr" && grep -q "secret_access_key = wrong\|= wrong" "$WORK/.stderr" &&
    fail "the secret appeared in an error"
  [ -z "$(aws s3 ls "s3://$BUCKET/" --recursive)" ] || fail "something was stored"
}

# A running daemon's secret is not readable in /proc/PID/environ: unsetenv alone left the bytes
# in the environment block the kernel shows there; they are overwritten first. Also for a
# daemon whose store is local (its environment may hold the secret all the same).
scenario_s3_store_daemon_secret_not_in_proc_environ() {
  start_swift
  setup
  start_daemon b b.json
  [ -r "/proc/$PID/environ" ] || fail "cannot read /proc/$PID/environ"
  grep -q -a -F "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" "/proc/$PID/environ" &&
    fail "the secret is readable in /proc/PID/environ of the running daemon"
  grep -q -a -F "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" "/proc/$PID/environ" ||
    fail "the daemon's environment block was not read (the key id is missing)"
  expect_exit 0 send_to "$PORT"
  cat > c.json <<'JSON'
{"site": "site-c", "identity": "site-c.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "state-c", "listen": "127.0.0.1:0", "peers": ["site-a.pub"], "store": "store-c"}
JSON
  AWS_SECRET_ACCESS_KEY=LOCALxSECRETxNEVERxSHOWN AWS_SESSION_TOKEN=LOCALxTOKENxNEVERxSHOWN \
    start_daemon c c.json
  grep -q -a -e LOCALxSECRET -e LOCALxTOKEN "/proc/$PID/environ" &&
    fail "a secret is readable in /proc/PID/environ of a daemon with a local store"
  true
}

# Anyone who may write to the bucket can put an object where a marker goes: one of 5000 bytes
# under this daemon's own id stopped its start (exit 4, "marker object is too large", no key).
# Now the daemon starts, names the key in its log, and leaves the object in place.
scenario_s3_store_oversized_marker_does_not_stop_the_start() {
  start_swift
  setup
  start_daemon b b.json
  kill -TERM "$PID"; wait "$PID" 2>/dev/null
  local daemon key
  daemon=$(cat state-b/daemon-id)
  key="capsules/.incoming/$daemon/0123456789abcdef0123456789abcdef.upload"
  head -c 5000 /dev/zero | tr '\0' x > big.upload
  aws s3 cp big.upload "s3://$BUCKET/$key" >/dev/null || fail "cannot put the object"
  start_daemon b b.json
  grep -q "the marker object s3://$BUCKET/$key cannot be read (an object of 5000 bytes is no marker" b.log ||
    { cat b.log; fail "the log does not name the marker that was skipped"; }
  aws s3 ls "s3://$BUCKET/$key" >/dev/null || fail "the object was deleted"
  expect_exit 0 send_to "$PORT"
  read_back "$(capsule_id d.capsule)" d.capsule
}

scenario_s3_store_two_daemons_one_bucket() {
  start_swift
  setup
  b_site b1 state-b1 > b1.json
  b_site b2 state-b2 > b2.json
  start_daemon b1 b1.json; local p1=$PORT
  start_daemon b2 b2.json; local p2=$PORT
  # Different capsules at once, one to each daemon.
  mkdir -p data2 && head -c 7000000 /dev/urandom > data2/y.bin
  "$CAPSULE" seal data2 -o e.capsule --sign owner.key --to site-b.pub --chunk-size 64K >/dev/null ||
    fail "seal"
  send_to "$p1" >/dev/null 2>s1.err & local s1=$!
  CAPSULE_FILE=e.capsule send_to "$p2" >/dev/null 2>s2.err & local s2=$!
  wait "$s1" || { cat s1.err; fail "send to daemon 1 failed"; }
  wait "$s2" || { cat s2.err; fail "send to daemon 2 failed"; }
  read_back "$(capsule_id d.capsule)" d.capsule
  read_back "$(capsule_id e.capsule)" e.capsule
  # The same capsule from two senders at once, one to each daemon.
  mkdir -p data3 && head -c 12000000 /dev/urandom > data3/z.bin
  "$CAPSULE" seal data3 -o f.capsule --sign owner.key --to site-b.pub --chunk-size 64K >/dev/null ||
    fail "seal"
  CAPSULE_FILE=f.capsule send_to "$p1" --rate 8M >/dev/null 2>s1.err & s1=$!
  CAPSULE_FILE=f.capsule send_to "$p2" --rate 8M >/dev/null 2>s2.err & s2=$!
  wait "$s1" || { cat s1.err b1.log; fail "send of the same capsule to daemon 1 failed"; }
  wait "$s2" || { cat s2.err b2.log; fail "send of the same capsule to daemon 2 failed"; }
  local f; f=$(capsule_id f.capsule)
  read_back "$f" f.capsule
  [ "$(objects | grep -c "^$f.capsule$")" -eq 1 ] || fail "the capsule appears more than once"
  [ "$(objects | wc -l)" -eq 3 ] || fail "expected three capsule objects"
  [ "$(uploads_left)" -eq 0 ] || fail "an upload was left behind"
  # Each daemon's log accounts for what it stored.
  for n in b1 b2; do
    expect_exit 0 "$CAPSULE" audit verify --log "state-$n/audit.log" --key site-b.pub
  done
}

# Two daemons on one bucket receiving the same capsule at once, while one of them recovers from
# a crash that left a pending marker (and an upload no journal names) for that very capsule: its
# recovery aborts only its own stray upload, never the other daemon's live one; both receptions
# finish and the capsule is stored once, byte for byte.
scenario_s3_store_recovery_spares_another_daemons_live_upload() {
  start_swift
  DATA_BYTES=16000000 setup
  b_site b1 state-b1 > b1.json
  b_site b2 state-b2 > b2.json
  start_daemon b1 b1.json; local pid1=$PID
  kill -TERM "$pid1"; wait "$pid1" 2>/dev/null
  local id daemon1 boot1
  id=$(capsule_id d.capsule)
  daemon1=$(cat state-b1/daemon-id)
  boot1=$(tail -1 state-b1/s3-boots)
  # Daemon 1 "crashed" between its pending marker and the journal line of its upload.
  aws s3api create-multipart-upload --bucket "$BUCKET" --key "capsules/$id.capsule" >/dev/null ||
    fail "cannot create an upload"
  printf 'pending %s' "$boot1" > pending.txt
  aws s3 cp pending.txt "s3://$BUCKET/capsules/.incoming/$daemon1/$id.upload" >/dev/null ||
    fail "cannot put the marker"
  # Daemon 2 receives the capsule, slowly enough (16 s) that its upload is still live while daemon
  # 1 starts and recovers, even on a loaded machine; its marker names its upload once a part is stored.
  start_daemon b2 b2.json; local p2=$PORT
  send_to "$p2" --rate 1M >/dev/null 2>s2.err & local s2=$!
  for _ in $(seq 1 600); do grep -q "s3: part" b2.log && break; sleep 0.05; done
  grep -q "s3: part" b2.log || { cat b2.log; fail "daemon 2 uploaded no part"; }
  [ "$(uploads_left)" -eq 2 ] || fail "expected the stray upload and daemon 2's live one"
  # Daemon 1 starts (recovery) while daemon 2's upload is live, then receives the same capsule.
  start_daemon b1 b1.json; local p1=$PORT
  grep -q "never journaled" b1.log || { cat b1.log; fail "daemon 1 did not abort its stray upload"; }
  [ "$(uploads_left)" -eq 1 ] || fail "daemon 1's recovery aborted daemon 2's live upload"
  send_to "$p1" --rate 8M >/dev/null 2>s1.err & local s1=$!
  wait "$s2" || { cat s2.err b2.log; fail "the send to daemon 2 failed"; }
  wait "$s1" || { cat s1.err b1.log; fail "the send to daemon 1 failed"; }
  grep -q "gone or disagrees" b2.log && { cat b2.log; fail "daemon 2's upload was aborted under it"; }
  read_back "$id" d.capsule
  [ "$(objects | grep -c "^$id.capsule$")" -eq 1 ] || fail "the capsule appears more than once"
  [ "$(objects | wc -l)" -eq 1 ] || fail "expected one capsule object"
  [ "$(uploads_left)" -eq 0 ] || fail "an upload was left behind"
  aws s3 ls "s3://$BUCKET/capsules/.incoming/" --recursive | grep -q . &&
    fail "a marker was left behind"
  for n in b1 b2; do
    expect_exit 0 "$CAPSULE" audit verify --log "state-$n/audit.log" --key site-b.pub
  done
}

run_scenario

#!/usr/bin/env bash
# Bunker against an S3 server, side by side with the AWS CLI on the same server in the same run:
# OpenStack Swift with s3api on loopback (tests/tools/swift_s3.sh), one 1 GiB capsule.
#
#   down: `capsule cat s3://... FILE` of the capsule's one big file (ranged GETs of the header,
#         table and index, then its chunks, 8 in flight, each checked against the signed table
#         and decrypted) and `capsule verify s3://...` (every chunk fetched and hashed), against
#         `aws s3 cp s3://... -` of the same object (awscli defaults). Verdict per row: target
#         >= 1x aws s3 cp.
#   up:   `capsule send` of the capsule into a site whose store is s3://BUCKET/PREFIX (capsuled
#         receives over mutually authenticated TLS, checks every chunk against the signed chunk
#         table, uploads whole-chunk parts, completes the upload after the receipt is on record)
#         against `aws s3 cp FILE s3://...` of the same file (awscli defaults: 8 MiB parts, 10 at
#         once). Verdict: target >= 1x aws s3 cp. (Needs the receiving side's S3 store.)
#
#   mem:  peak RSS of cat, open --to-tar, verify and ls from s3://, and of capsuled serving cat and
#         open --to-tar through its verifier service from an S3 store. Target: < 64 MiB each.
#
# Each transfer runs twice and the faster run counts. Prints wall time, MiB/s and the ratio.
#   bench/s3.sh [BUILD_DIR]   env: BENCH_DIR (scratch folder, default /dev/shm when it has room),
#                                  BENCH_MB (capsule payload MiB, default 1024), BENCH_KEEP=1,
#                                  BENCH_ROWS (down, up, mem or all: the default)
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
CAPSULED="$(cd "$BUILD" && pwd)/cli/capsuled"
SWIFT="$(cd "$(dirname "$0")/.." && pwd)/tests/tools/swift_s3.sh"
MB=${BENCH_MB:-1024}
ROWS=${BENCH_ROWS:-all}
if [ -z "${BENCH_DIR:-}" ]; then
  shm_free_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
  if [ -n "$shm_free_mb" ] && [ "$shm_free_mb" -gt $((MB * 6)) ]; then
    BENCH_DIR=/dev/shm/bunker-bench-s3
  else
    BENCH_DIR=/tmp/bunker-bench-s3
  fi
fi
WORK=$BENCH_DIR
die() { echo "bench: $*" >&2; exit 1; }
AWS=/usr/bin/aws  # Debian's awscli (make deps)
for tool in "$CAPSULE" "$CAPSULED" "$AWS" bc; do
  command -v "$tool" >/dev/null || die "$tool is missing (make deps)"
done
bash "$SWIFT" check || die "the Swift S3 server's packages are missing (make deps)"

DAEMON_PID=
cleanup() {
  [ -z "$DAEMON_PID" ] || { kill -TERM "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; } || true
  [ -d "$WORK/swift" ] && bash "$SWIFT" stop "$WORK/swift" >/dev/null 2>&1 || true
  cd /
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK/swift"
cd "$WORK"

bash "$SWIFT" start "$WORK/swift" || die "the Swift S3 server did not start"
eval "$(bash "$SWIFT" env "$WORK/swift")"
export AWS_SHARED_CREDENTIALS_FILE="$WORK/none" AWS_CONFIG_FILE="$WORK/none"
aws() { "$AWS" --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }
BUCKET=bench
aws s3 mb "s3://$BUCKET" >/dev/null

for k in owner site-a site-b; do "$CAPSULE" keygen -o $k >/dev/null; done
mkdir -p data
head -c $((MB << 20)) /dev/urandom > data/payload.bin
"$CAPSULE" seal data -o bench.capsule --sign owner.key --to site-b.pub >/dev/null
rm -rf data
SIZE=$(stat -c %s bench.capsule)
now() { date +%s.%N; }
mibs() { echo "scale=1; $SIZE / 1048576 / $1" | bc -l; }
# best VAR SECONDS: keeps the smaller in VAR.
best() { if [ -z "${!1}" ] || [ "$(echo "$2 < ${!1}" | bc -l)" = 1 ]; then printf -v "$1" '%s' "$2"; fi; }
# timed CMD...: runs CMD, prints its wall seconds.
timed() { local t0 t1; t0=$(now); "$@"; t1=$(now); echo "$t1 - $t0" | bc -l; }
verdict() {  # verdict WHAT RATIO
  if [ "$(echo "$2 >= 1" | bc -l)" = 1 ]; then
    echo "verdict: $1 is ${2}x aws s3 cp (target >= 1x): met"
  else
    echo "verdict: $1 is ${2}x aws s3 cp (target >= 1x): NOT met"
  fi
}

# ---- DOWN ROWS (reading from S3) ----
if [ "$ROWS" = all ] || [ "$ROWS" = down ]; then
aws s3 cp bench.capsule "s3://$BUCKET/down/bench.capsule" >/dev/null
URL="s3://$BUCKET/down/bench.capsule"
# The object read back through each tool is the capsule.
"$CAPSULE" cat "$URL" payload.bin --identity site-b.key --trust owner.pub | cmp -s - <(
  "$CAPSULE" cat bench.capsule payload.bin --identity site-b.key --trust owner.pub) ||
  die "capsule cat from s3:// differs from the local capsule"
aws s3 cp "$URL" - | cmp -s - bench.capsule || die "aws s3 cp - differs from the capsule"
best_aws_down= best_cat= best_verify=
for run in 1 2; do
  best best_aws_down "$(timed sh -c "'$AWS' --endpoint-url '$AWS_ENDPOINT_URL' s3 cp '$URL' - >/dev/null")"
  best best_cat "$(timed sh -c "'$CAPSULE' cat '$URL' payload.bin --identity site-b.key --trust owner.pub >/dev/null")"
  best best_verify "$(timed sh -c "'$CAPSULE' verify '$URL' --trust owner.pub >/dev/null")"
done

printf '\nS3 (Swift s3api on loopback), one capsule of %d bytes, best of 2 runs\n' "$SIZE"
printf '%-48s %9s %9s %7s\n' "down" "seconds" "MiB/s" "ratio"
printf '%-48s %9.2f %9s %7s\n' "aws s3 cp s3://... -" "$best_aws_down" "$(mibs "$best_aws_down")" "1.00x"
cat_ratio=$(echo "scale=2; $best_aws_down / $best_cat" | bc -l)
printf '%-48s %9.2f %9s %6sx\n' "capsule cat s3://... payload.bin (decrypts)" "$best_cat" \
  "$(mibs "$best_cat")" "$cat_ratio"
verify_ratio=$(echo "scale=2; $best_aws_down / $best_verify" | bc -l)
printf '%-48s %9.2f %9s %6sx\n' "capsule verify s3://... (hashes every chunk)" "$best_verify" \
  "$(mibs "$best_verify")" "$verify_ratio"
verdict "capsule cat from S3" "$cat_ratio"
verdict "capsule verify from S3" "$verify_ratio"
fi
[ "$ROWS" != down ] || exit 0

# ---- MEMORY ROWS (peak resident memory, target < 64 MiB for every command) ----
if [ "$ROWS" = all ] || [ "$ROWS" = mem ]; then
[ "$ROWS" != mem ] || { aws s3 cp bench.capsule "s3://$BUCKET/down/bench.capsule" >/dev/null; URL="s3://$BUCKET/down/bench.capsule"; }
peak() {  # peak LABEL CMD...: the command's peak RSS in MiB (GNU time)
  /usr/bin/time -f '%M' -o mem.txt "$@" >/dev/null
  echo "scale=1; $(tail -1 mem.txt) / 1024" | bc -l
}
mem_verdict() {  # mem_verdict WHAT MIB
  if [ "$(echo "$2 < 64" | bc -l)" = 1 ]; then
    echo "verdict: peak RSS of $1 is $2 MiB (target < 64 MiB): met"
  else
    echo "verdict: peak RSS of $1 is $2 MiB (target < 64 MiB): NOT met"
  fi
}
m_cat=$(peak "$CAPSULE" cat "$URL" payload.bin --identity site-b.key --trust owner.pub)
m_tar=$(peak "$CAPSULE" open "$URL" --identity site-b.key --trust owner.pub --to-tar -)
m_verify=$(peak "$CAPSULE" verify "$URL" --trust owner.pub)
m_ls=$(peak "$CAPSULE" ls "$URL" --identity site-b.key --trust owner.pub)
# Through a site's verifier service, the daemon reading its own S3 store (state on disk, as a
# site's would be): its peak (VmHWM) after three releases of each kind.
ID=$("$CAPSULE" inspect bench.capsule --json | sed -n 's/^{"capsule": "\([0-9a-f]*\)".*/\1/p')
aws s3 cp bench.capsule "s3://$BUCKET/mem/$ID.capsule" >/dev/null
STATE=$(mktemp -d "${TMPDIR:-/tmp}/bunker-bench-state.XXXXXX")
cat > m.json <<JSON
{"site": "site-b", "identity": "site-b.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "$STATE", "socket": "$WORK/m.sock", "store": "s3://$BUCKET/mem"}
JSON
: > m.log
"$CAPSULED" --site m.json 2>>m.log &
DAEMON_PID=$!
for _ in $(seq 1 200); do grep -q "verifier listening" m.log && break; sleep 0.05; done
grep -q "verifier listening" m.log || { cat m.log; rm -rf "$STATE"; die "capsuled did not start"; }
for _ in 1 2 3; do
  "$CAPSULE" cat "s3://$BUCKET/mem/$ID.capsule" payload.bin --site m.json >/dev/null
  "$CAPSULE" open "s3://$BUCKET/mem/$ID.capsule" --site m.json --to-tar - >/dev/null
done
m_daemon=$(echo "scale=1; $(awk '/VmHWM/ {print $2}' "/proc/$DAEMON_PID/status") / 1024" | bc -l)
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=
rm -rf "$STATE"
printf '\n%-52s %9s\n' "peak RSS, 1 GiB capsule in S3" "MiB"
printf '%-52s %9s\n' "capsule cat s3://... payload.bin" "$m_cat" \
  "capsule open s3://... --to-tar -" "$m_tar" "capsule verify s3://..." "$m_verify" \
  "capsule ls s3://..." "$m_ls" "capsuled (store s3://), 3 x (cat + open --to-tar)" "$m_daemon"
mem_verdict "capsule cat from S3" "$m_cat"
mem_verdict "capsule open --to-tar from S3" "$m_tar"
mem_verdict "capsule verify from S3" "$m_verify"
mem_verdict "capsule ls from S3" "$m_ls"
mem_verdict "capsuled serving releases from an S3 store" "$m_daemon"
fi
[ "$ROWS" != mem ] || exit 0

# ---- UP ROWS (receiving into S3) ----
cat > a.json <<'JSON'
{"site": "site-a", "identity": "site-a.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "state-a", "peers": ["site-b.pub"], "store": "store-a"}
JSON
cat > b.json <<JSON
{"site": "site-b", "identity": "site-b.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "state-b", "listen": "127.0.0.1:0", "peers": ["site-a.pub"],
 "store": "s3://$BUCKET/site-b"}
JSON

start_daemon() {
  : > b.log
  "$CAPSULED" --site b.json 2>>b.log &
  DAEMON_PID=$!
  for _ in $(seq 1 200); do
    PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' b.log | tail -1)
    [ -n "$PORT" ] && return
    sleep 0.05
  done
  cat b.log; die "capsuled did not start"
}
ID=$("$CAPSULE" inspect bench.capsule --json | sed -n 's/^{"capsule": "\([0-9a-f]*\)".*/\1/p')

best_send=
best_aws=
for run in 1 2; do
  # capsule send into the S3-backed site (the object is removed between runs).
  aws s3 rm "s3://$BUCKET/site-b/$ID.capsule" >/dev/null 2>&1 || true
  start_daemon
  t0=$(now)
  "$CAPSULE" send bench.capsule --to "127.0.0.1:$PORT" --site a.json --streams 4 >/dev/null
  t1=$(now)
  kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=
  s=$(echo "$t1 - $t0" | bc -l)
  [ -z "$best_send" ] || [ "$(echo "$s < $best_send" | bc -l)" = 1 ] && best_send=$s
  # aws s3 cp of the same file, same server.
  t0=$(now)
  aws s3 cp bench.capsule "s3://$BUCKET/aws/bench.capsule" >/dev/null
  t1=$(now)
  s=$(echo "$t1 - $t0" | bc -l)
  [ -z "$best_aws" ] || [ "$(echo "$s < $best_aws" | bc -l)" = 1 ] && best_aws=$s
  aws s3 rm "s3://$BUCKET/aws/bench.capsule" >/dev/null
done
# The stored object is the capsule, byte for byte.
aws s3 cp "s3://$BUCKET/site-b/$ID.capsule" back.capsule >/dev/null
cmp -s bench.capsule back.capsule || die "the stored object differs from the capsule"
rm -f back.capsule

printf '%-44s %9s %9s %7s\n' "up" "seconds" "MiB/s" "ratio"
printf '%-44s %9.2f %9s %7s\n' "aws s3 cp FILE s3://..." "$best_aws" "$(mibs "$best_aws")" "1.00x"
ratio=$(echo "scale=2; $best_aws / $best_send" | bc -l)
printf '%-44s %9.2f %9s %6sx\n' "capsule send -> capsuled (store s3://...)" "$best_send" \
  "$(mibs "$best_send")" "$ratio"
if [ "$(echo "$ratio >= 1" | bc -l)" = 1 ]; then
  echo "verdict: capsule send into an S3-backed site is ${ratio}x aws s3 cp (target >= 1x): met"
else
  echo "verdict: capsule send into an S3-backed site is ${ratio}x aws s3 cp (target >= 1x): NOT met"
fi

#!/usr/bin/env bash
# Bunker against an S3 server, side by side with the AWS CLI on the same server in the same run:
# OpenStack Swift with s3api on loopback (tests/tools/swift_s3.sh), one 1 GiB capsule.
#
#   up:  `capsule send` of the capsule into a site whose store is s3://BUCKET/PREFIX (capsuled
#        receives over mutually authenticated TLS, checks every chunk against the signed chunk
#        table, uploads whole-chunk parts, completes the upload after the receipt is on record)
#        against `aws s3 cp FILE s3://...` of the same file (awscli defaults: 8 MiB parts, 10 at
#        once). Verdict: target >= 1x aws s3 cp.
#
# Each transfer runs twice and the faster run counts. Prints wall time, MiB/s and the ratio.
#   bench/s3.sh [BUILD_DIR]   env: BENCH_DIR (scratch folder, default /dev/shm when it has room),
#                                  BENCH_MB (capsule payload MiB, default 1024), BENCH_KEEP=1
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
CAPSULED="$(cd "$BUILD" && pwd)/cli/capsuled"
SWIFT="$(cd "$(dirname "$0")/.." && pwd)/tests/tools/swift_s3.sh"
MB=${BENCH_MB:-1024}
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
for tool in "$CAPSULE" "$CAPSULED" aws; do
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
BUCKET=bench
aws s3 mb "s3://$BUCKET" >/dev/null

for k in owner site-a site-b; do "$CAPSULE" keygen -o $k >/dev/null; done
mkdir -p data
head -c $((MB << 20)) /dev/urandom > data/payload.bin
"$CAPSULE" seal data -o bench.capsule --sign owner.key --to site-b.pub >/dev/null
rm -rf data
SIZE=$(stat -c %s bench.capsule)
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
now() { date +%s.%N; }
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

mibs() { echo "scale=1; $SIZE / 1048576 / $1" | bc -l; }
printf '\nS3 (Swift s3api on loopback), one capsule of %d bytes, best of 2 runs\n' "$SIZE"
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

#!/usr/bin/env bash
# Bunker against an S3 server, side by side with the AWS CLI on the same server in the same run:
# OpenStack Swift with s3api on loopback (tests/tools/swift_s3.sh), one 1 GiB capsule.
#
#   down: `capsule cat s3://... FILE` of the capsule's one big file (ranged GETs of the header,
#         table and index, then its chunks, 8 in flight, each checked against the signed table
#         and decrypted) and `capsule verify s3://...` (every chunk fetched and hashed), against
#         `aws s3 cp s3://... -` of the same object (awscli defaults). Verdict per row: target
#         >= 1x aws s3 cp.
#   up:   (the receiving side's rows: `capsule send` into an S3-backed site against
#         `aws s3 cp FILE s3://...`; see "UP ROWS" below.)
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

# ---- UP ROWS (receiving into S3) ----
# The receiving side adds here: `capsule send` of bench.capsule into a site whose "store" is
# s3://$BUCKET/PREFIX (capsuled on loopback) against `aws s3 cp bench.capsule s3://...`, best of
# 2, printed as a table like the one above with one verdict line.

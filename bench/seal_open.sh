#!/usr/bin/env bash
# Seal, verify and open a 1 GiB dataset (one large file plus thousands of small ones) with
# `capsule`, and in the same run the peer pipeline `tar | age` / `age -d | tar` on the same
# data, with the per-core AES-256-GCM and SHA-256 limits from `openssl speed` for reference.
# Prints wall time, throughput, ratio to the peer and peak RSS.
#   bench/seal_open.sh [BUILD_DIR]     env: BENCH_DIR (scratch, default /tmp/bunker-bench),
#                                           BENCH_MB (dataset size, default 1024)
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
WORK=${BENCH_DIR:-/tmp/bunker-bench}
MB=${BENCH_MB:-1024}
SMALL=4096                       # small files of 64 KiB: a quarter of the data
SMALL_KB=64
LARGE_MB=$((MB - SMALL * SMALL_KB / 1024))
[ "$LARGE_MB" -gt 0 ] || { echo "BENCH_MB too small" >&2; exit 2; }
for tool in age age-keygen openssl tar /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (make deps)" >&2; exit 1; }
done

rm -rf "$WORK" && mkdir -p "$WORK/data/small" && cd "$WORK"
echo "dataset: ${LARGE_MB} MiB file + ${SMALL} files of ${SMALL_KB} KiB in $WORK/data"
head -c "$((LARGE_MB << 20))" /dev/urandom > data/large.bin
head -c "$((SMALL * SMALL_KB << 10))" /dev/urandom > blob
split -a 4 -d -b "${SMALL_KB}K" blob data/small/f && rm blob
BYTES=$(du -sb data | cut -f1)

"$CAPSULE" keygen -o issuer >/dev/null
"$CAPSULE" keygen -o site >/dev/null
age-keygen -o age.key 2>/dev/null
AGE_RECIPIENT=$(age-keygen -y age.key)

declare -A SECS RSS
# measure NAME COMMAND: wall seconds and peak RSS (largest process of a pipeline), page cache warm.
measure() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %M' -o time.out bash -c "$*" >/dev/null 2>time.err || {
    cat time.err >&2; echo "bench: '$name' failed" >&2; exit 1; }
  read -r "SECS[$name]" "RSS[$name]" < <(tail -1 time.out)
}

cat data/large.bin data/small/* > /dev/null   # warm the page cache for everyone alike
measure "capsule seal"   "'$CAPSULE' seal data -o d.capsule --sign issuer.key --to site.pub"
measure "tar | age"      "tar -cf - -C data . | age -r $AGE_RECIPIENT -o d.tar.age"
measure "capsule verify" "'$CAPSULE' verify d.capsule --trust issuer.pub"
measure "capsule open"   "'$CAPSULE' open d.capsule --identity site.key --trust issuer.pub --to out1"
mkdir out2
measure "age -d | tar"   "age -d -i age.key d.tar.age | tar -xf - -C out2"
diff -rq data out1 >/dev/null || { echo "bench: capsule round trip differs" >&2; exit 1; }
diff -rq data out2 >/dev/null || { echo "bench: age round trip differs" >&2; exit 1; }

speed() {  # openssl speed, 1 MiB blocks, one core: MB/s
  openssl speed -evp "$1" -bytes 1048576 -seconds 2 2>/dev/null |
    awk '/^(aes|sha|AES|SHA)/ {v=$NF} END {sub("k","",v); printf "%.0f", v*1000/1e6}'
}

printf '\nmachine: %s cores, %s\n' "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf 'reference, one core (openssl speed, 1 MiB blocks): AES-256-GCM %s MB/s, SHA-256 %s MB/s\n' \
  "$(speed aes-256-gcm)" "$(speed sha256)"
printf 'dataset: %s bytes (%d MiB), capsule %s bytes, age file %s bytes\n\n' "$BYTES" \
  "$((BYTES >> 20))" "$(stat -c %s d.capsule)" "$(stat -c %s d.tar.age)"
printf '| %-15s | %8s | %8s | %9s | %13s |\n' operation seconds "MB/s" "vs age" "peak RSS MiB"
printf '|%s|%s|%s|%s|%s|\n' ----------------- ---------- ---------- ----------- ---------------
row() {
  local name=$1 peer=$2
  local mbps ratio
  mbps=$(awk -v b="$BYTES" -v s="${SECS[$name]}" 'BEGIN {printf "%.0f", b/1e6/(s>0?s:0.01)}')
  ratio=$([ -n "$peer" ] && awk -v a="${SECS[$peer]}" -v s="${SECS[$name]}" \
    'BEGIN {printf "%.2fx", a/(s>0?s:0.01)}' || echo "")
  printf '| %-15s | %8s | %8s | %9s | %13s |\n' "$name" "${SECS[$name]}" "$mbps" "$ratio" \
    "$((RSS[$name] / 1024))"
}
row "capsule seal" "tar | age"
row "tar | age" ""
row "capsule verify" ""
row "capsule open" "age -d | tar"
row "age -d | tar" ""
rm -rf "$WORK"

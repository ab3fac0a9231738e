#!/usr/bin/env bash
# Seal, verify and open a 1 GiB dataset (one large file plus thousands of small ones) with
# `capsule`, and in the same run the peer pipeline `tar | age` / `age -d | tar` on the same
# data, with the per-core AES-256-GCM and SHA-256 limits from `openssl speed` for reference.
# Prints wall time, throughput, ratio to the peer and peak RSS, plus plain tar as the I/O floor
# (what reading and writing the same bytes costs on this machine with no crypto at all).
# Each operation runs twice and the faster run counts. By default the scratch folder is on tmpfs
# (/dev/shm) when it has room, so that disk writeback and the filesystem's inode allocator,
# which every tool pays alike, do not drown the differences between the tools.
#   bench/seal_open.sh [BUILD_DIR]     env: BENCH_DIR (scratch folder), BENCH_MB (dataset MiB,
#                                           default 1024)
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
MB=${BENCH_MB:-1024}
if [ -z "${BENCH_DIR:-}" ]; then
  shm_free_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
  if [ -n "$shm_free_mb" ] && [ "$shm_free_mb" -gt $((MB * 7)) ]; then
    BENCH_DIR=/dev/shm/bunker-bench
  else
    BENCH_DIR=/tmp/bunker-bench
  fi
fi
WORK=$BENCH_DIR
SMALL=4096                       # small files of 64 KiB: a quarter of the data
SMALL_KB=64
LARGE_MB=$((MB - SMALL * SMALL_KB / 1024))
[ "$LARGE_MB" -gt 0 ] || { echo "BENCH_MB too small" >&2; exit 2; }
for tool in age age-keygen openssl tar /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (make deps)" >&2; exit 1; }
done

rm -rf "$WORK" && mkdir -p "$WORK/data/small" && cd "$WORK"
echo "dataset: ${LARGE_MB} MiB file + ${SMALL} files of ${SMALL_KB} KiB in $WORK/data"
echo "each operation runs twice; the faster run counts"
head -c "$((LARGE_MB << 20))" /dev/urandom > data/large.bin
head -c "$((SMALL * SMALL_KB << 10))" /dev/urandom > blob
split -a 4 -d -b "${SMALL_KB}K" blob data/small/f && rm blob
BYTES=$(du -sb data | cut -f1)

"$CAPSULE" keygen -o issuer >/dev/null
"$CAPSULE" keygen -o site >/dev/null
age-keygen -o age.key 2>/dev/null
AGE_RECIPIENT=$(age-keygen -y age.key)

declare -A SECS RSS
# measure NAME CLEANUP COMMAND: runs CLEANUP then COMMAND twice; keeps the faster wall time and
# its peak RSS (the largest process of a pipeline).
measure() {
  local name=$1 cleanup=$2 cmd=$3 run secs rss
  for run in 1 2; do
    bash -c "$cleanup"
    sync
    /usr/bin/time -f '%e %M' -o time.out bash -c "$cmd" >/dev/null 2>time.err || {
      cat time.err >&2; echo "bench: '$name' failed" >&2; exit 1; }
    read -r secs rss < <(tail -1 time.out)
    if [ -z "${SECS[$name]:-}" ] || awk -v a="$secs" -v b="${SECS[$name]}" 'BEGIN {exit !(a < b)}'; then
      SECS[$name]=$secs
      RSS[$name]=$rss
    fi
  done
}

cat data/large.bin data/small/* > /dev/null   # warm the page cache for everyone alike
measure "capsule seal"   "rm -f d.capsule" \
  "'$CAPSULE' seal data -o d.capsule --sign issuer.key --to site.pub"
measure "tar | age"      "rm -f d.tar.age" "tar -cf - -C data . | age -r $AGE_RECIPIENT -o d.tar.age"
measure "capsule verify" ":" "'$CAPSULE' verify d.capsule --trust issuer.pub"
measure "capsule open"   "rm -rf out1" \
  "'$CAPSULE' open d.capsule --identity site.key --trust issuer.pub --to out1"
measure "age -d | tar"   "rm -rf out2 && mkdir out2" "age -d -i age.key d.tar.age | tar -xf - -C out2"
# The I/O floor on this machine: the same bytes archived and extracted with no crypto at all.
measure "tar -c (floor)" "rm -f plain.tar" "tar -cf plain.tar -C data ."
measure "tar -x (floor)" "rm -rf out3 && mkdir out3" "tar -xf plain.tar -C out3"
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
row "tar -c (floor)" ""
row "tar -x (floor)" ""
rm -rf "$WORK"

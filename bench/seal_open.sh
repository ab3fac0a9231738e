#!/usr/bin/env bash
# Seal, verify and open a 1 GiB dataset (one large file plus thousands of small ones) with
# `capsule`, and in the same run the peer pipeline `tar | age` / `age -d | tar` on the same
# data, with the per-core AES-256-GCM and SHA-256 limits from `openssl speed` for reference.
# Prints wall time, throughput, ratio to the peer, CPU seconds per GiB (user + system, all
# processes of a pipeline) and peak RSS, plus plain tar as the I/O floor (what reading and
# writing the same bytes costs on this machine with no crypto at all). Then `capsule cat` (with
# a key, and through a site's verifier service with --site) and `capsule ls` on a capsule of
# BENCH_CAT_MB (default 3072) MiB holding 20,000 files: the time to get one 2 KB file out. Last, one line per target of issue 9: met, or NOT met with the ratio.
# Each operation runs twice and the faster run counts. By default the scratch folder is on tmpfs
# (/dev/shm) when it has room, so that disk writeback and the filesystem's inode allocator,
# which every tool pays alike, do not drown the differences between the tools.
#   bench/seal_open.sh [BUILD_DIR]     env: BENCH_DIR (scratch folder), BENCH_MB (dataset MiB,
#                                           default 1024), BENCH_CAT_MB (cat capsule MiB,
#                                           default 3072; 0 skips the cat rows)
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
MB=${BENCH_MB:-1024}
CAT_MB=${BENCH_CAT_MB:-3072}
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

declare -A SECS RSS CPU
# measure NAME CLEANUP COMMAND: runs CLEANUP then COMMAND twice; keeps the faster wall time, its
# CPU seconds (user + system of every process of the pipeline) and its peak RSS (the largest
# process of a pipeline).
measure() {
  local name=$1 cleanup=$2 cmd=$3 run secs rss user sys
  for run in 1 2; do
    bash -c "$cleanup"
    sync
    /usr/bin/time -f '%e %M %U %S' -o time.out bash -c "$cmd" >/dev/null 2>time.err || {
      cat time.err >&2; echo "bench: '$name' failed" >&2; exit 1; }
    read -r secs rss user sys < <(tail -1 time.out)
    if [ -z "${SECS[$name]:-}" ] || awk -v a="$secs" -v b="${SECS[$name]}" 'BEGIN {exit !(a < b)}'; then
      SECS[$name]=$secs
      RSS[$name]=$rss
      CPU[$name]=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
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

SHA_MBPS=$(speed sha256)
printf '\nmachine: %s cores, %s\n' "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf 'reference, one core (openssl speed, 1 MiB blocks): AES-256-GCM %s MB/s, SHA-256 %s MB/s\n' \
  "$(speed aes-256-gcm)" "$SHA_MBPS"
printf 'dataset: %s bytes (%d MiB), capsule %s bytes, age file %s bytes\n\n' "$BYTES" \
  "$((BYTES >> 20))" "$(stat -c %s d.capsule)" "$(stat -c %s d.tar.age)"
printf '| %-15s | %8s | %8s | %9s | %9s | %13s |\n' operation seconds "MB/s" "vs peer" "CPU s/GiB" \
  "peak RSS MiB"
printf '|%s|%s|%s|%s|%s|%s|\n' ----------------- ---------- ---------- ----------- ----------- \
  ---------------
row() {
  local name=$1 peer=$2
  local mbps ratio
  mbps=$(awk -v b="$BYTES" -v s="${SECS[$name]}" 'BEGIN {printf "%.0f", b/1e6/(s>0?s:0.01)}')
  ratio=$([ -n "$peer" ] && awk -v a="${SECS[$peer]}" -v s="${SECS[$name]}" \
    'BEGIN {printf "%.2fx", a/(s>0?s:0.01)}' || echo "")
  printf '| %-15s | %8s | %8s | %9s | %9s | %13s |\n' "$name" "${SECS[$name]}" "$mbps" "$ratio" \
    "$(awk -v c="${CPU[$name]}" -v b="$BYTES" 'BEGIN {printf "%.2f", c / (b / 1073741824)}')" \
    "$((RSS[$name] / 1024))"
}
row "capsule seal" "tar | age"
row "tar | age" ""
row "capsule verify" ""
row "capsule open" "age -d | tar"
row "age -d | tar" ""
row "tar -c (floor)" ""
row "tar -x (floor)" ""
CAPSULE_BYTES=$(stat -c %s d.capsule)
rm -rf data out1 out2 out3 d.tar.age plain.tar d.capsule

# cat and ls of one small file among 20,000 in a large capsule (the large file is sparse: its
# zeros cost no time to read, the capsule is the same size either way).
if [ "$CAT_MB" -gt 0 ]; then
  mkdir -p cat-data/dirs
  truncate -s "$(( (CAT_MB - 40) << 20 ))" cat-data/large.bin
  head -c $((19999 * 2048)) /dev/urandom > blob
  (cd cat-data/dirs && split -a 5 -d -b 2048 ../../blob f && rm ../../blob)
  "$CAPSULE" seal cat-data -o c.capsule --sign issuer.key --to site.pub >/dev/null
  rm -rf cat-data
  CAT_FILE=dirs/f10000
  # best_ms COMMAND: best of 5 wall times in ms (to 0.1 ms: bash's EPOCHREALTIME around the
  # command, run by this shell as a user's shell would), then the peak RSS (MiB) of one more
  # run under /usr/bin/time (whose own wall clock counts in 10 ms steps).
  best_ms() {
    local best= r t0 t1 t m
    for r in 1 2 3 4 5; do
      t0=$EPOCHREALTIME
      eval "$1" > cat.out 2> cat.err || { cat cat.err >&2; echo "bench: '$1' failed" >&2; exit 1; }
      t1=$EPOCHREALTIME
      t=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) * 1000}')
      if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$t; fi
    done
    /usr/bin/time -f '%M' -o time.out bash -c "$1" > /dev/null 2> cat.err || {
      cat cat.err >&2; echo "bench: '$1' failed" >&2; exit 1; }
    m=$(tail -1 time.out)
    echo "$best $((m / 1024))"
  }
  read -r CAT_MS CAT_RSS < <(best_ms "'$CAPSULE' cat c.capsule $CAT_FILE --identity site.key --trust issuer.pub")
  [ "$(stat -c %s cat.out)" = 2048 ] || { echo "bench: cat gave the wrong bytes" >&2; exit 1; }
  read -r LS_MS LS_RSS < <(best_ms "'$CAPSULE' ls c.capsule --identity site.key --trust issuer.pub")
  # The same cat through a site's verifier service (capsuled with a socket), which decides,
  # records the release in its audit log and writes the file into this command's stdout.
  mkdir -p land run
  cat > site.json <<JSON
{ "site": "bench", "identity": "site.key", "trust": ["issuer.pub"], "state": "state",
  "destinations": ["land"], "socket": "run/verifier.sock" }
JSON
  "$(dirname "$CAPSULE")/capsuled" --site site.json 2> daemon.log &
  DAEMON_PID=$!
  for _ in $(seq 1 100); do grep -q 'verifier listening' daemon.log && break; sleep 0.05; done
  grep -q 'verifier listening' daemon.log || { cat daemon.log >&2; echo "bench: capsuled did not start" >&2; exit 1; }
  read -r SITE_MS SITE_RSS < <(best_ms "'$CAPSULE' cat c.capsule $CAT_FILE --site site.json")
  [ "$(stat -c %s cat.out)" = 2048 ] || { echo "bench: cat --site gave the wrong bytes" >&2; exit 1; }
  SITE_DAEMON_RSS=$(awk '/VmHWM/ {printf "%d", $2 / 1024}' "/proc/$DAEMON_PID/status")
  kill "$DAEMON_PID" && wait "$DAEMON_PID" 2>/dev/null || true
  printf '\ncapsule of %s bytes, 20,000 files (one of %d MiB, 19,999 of 2 KiB), best of 5:\n' \
    "$(stat -c %s c.capsule)" "$((CAT_MB - 40))"
  printf '  capsule cat of one 2 KiB file:          %5s ms, peak RSS %s MiB\n' "$CAT_MS" "$CAT_RSS"
  printf '  capsule cat --site (verifier service):  %5s ms, peak RSS %s MiB (capsuled %s MiB)\n' \
    "$SITE_MS" "$SITE_RSS" "$SITE_DAEMON_RSS"
  printf '  capsule ls of all 20,000:               %5s ms, peak RSS %s MiB\n' "$LS_MS" "$LS_RSS"
  rm -f c.capsule
fi

# One line per target of issue 9.
verdict() {  # TEXT VALUE OP BOUND
  local ok
  ok=$(awk -v v="$2" -v b="$4" -v op="$3" 'BEGIN {print ((op == ">=" ? v >= b : v < b) ? 1 : 0)}')
  printf '  %-52s %7s (%s %s): %s\n' "$1" "$2" "$3" "$4" "$([ "$ok" = 1 ] && echo met || echo "NOT met")"
}
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
printf '\ntargets:\n'
verdict "seal vs tar | age (speed ratio)" "$(ratio_of "${SECS["tar | age"]}" "${SECS["capsule seal"]}")" ">=" 1.5
verdict "seal vs plain tar -c (time ratio)" \
  "$(ratio_of "${SECS["capsule seal"]}" "${SECS["tar -c (floor)"]}")" "<" 1.5
verdict "open vs age -d | tar (speed ratio)" \
  "$(ratio_of "${SECS["age -d | tar"]}" "${SECS["capsule open"]}")" ">=" 2
verdict "verify vs two cores' SHA-256 (fraction)" "$(awk -v b="$CAPSULE_BYTES" \
  -v s="${SECS["capsule verify"]}" -v sha="$SHA_MBPS" 'BEGIN {printf "%.2f", b / 1e6 / s / (2 * sha)}')" ">=" 0.8
if [ "$CAT_MB" -gt 0 ]; then
  verdict "cat of one small file, ms" "$CAT_MS" "<" 20
  verdict "cat --site of one small file, ms" "$SITE_MS" "<" 20
fi
max_rss=0
for n in "capsule seal" "capsule verify" "capsule open"; do
  [ "$((RSS[$n] / 1024))" -gt "$max_rss" ] && max_rss=$((RSS[$n] / 1024))
done
[ "$CAT_MB" -gt 0 ] && for v in "$CAT_RSS" "$LS_RSS" "$SITE_RSS" "$SITE_DAEMON_RSS"; do [ "$v" -gt "$max_rss" ] && max_rss=$v; done
verdict "peak RSS of any capsule command, MiB" "$max_rss" "<" 64
rm -rf "$WORK"

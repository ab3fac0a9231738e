#!/usr/bin/env bash
# Read a dataset through `capsule mount` (a read-only FUSE mount served by `capsuled`, every
# chunk authenticated against the signed chunk table and decrypted on demand) and, in the same
# run on the same data, through gocryptfs (Debian's gocryptfs, a mature encrypted FUSE file
# system, mounted read-only). Rows:
#   - sequential read of one 1 GiB file (cat);
#   - reading 10,000 files of 4 KiB in tree order (xargs cat);
#   - ls -lR of the whole tree;
#   - 8 worker processes reading 2,048 files of 128 KiB in random order (a DataLoader's pattern);
# and the time from `capsule mount` to the first byte of one file of a capsule of 3 GiB with
# 20,000 files, policy decision and audit record included.
# Each workload runs twice and the faster run counts. Before every run both file systems are
# mounted afresh (so the daemon's chunk cache and gocryptfs's state start empty) and the kernel's
# caches are dropped (echo 3 > /proc/sys/vm/drop_caches: the page cache of both mounts, dentries
# and inodes). By default the scratch folder is on tmpfs (/dev/shm) when it has room: the
# encrypted files stay in memory, so the rows measure the file systems, not this machine's disk.
# Needs root (/dev/fuse is root's here, and dropping caches), fuse3 and gocryptfs; it installs
# gocryptfs with apt-get when missing (it is the bench's peer only, not a build dependency).
#   bench/mount.sh [BUILD_DIR]     env: BENCH_DIR (scratch folder), BENCH_KEEP=1 (keep scratch)
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
CAPSULED="$(cd "$BUILD" && pwd)/cli/capsuled"
NEED_MB=$((1024 + 40 + 256 + 3 * 1024))   # the two datasets, their ciphertexts: x2, plus room
if [ -z "${BENCH_DIR:-}" ]; then
  shm_free_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
  if [ -n "$shm_free_mb" ] && [ "$shm_free_mb" -gt $((NEED_MB * 3)) ]; then
    BENCH_DIR=/dev/shm/bunker-bench-mount
  else
    BENCH_DIR=/tmp/bunker-bench-mount
  fi
fi
WORK=$BENCH_DIR
die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (/dev/fuse and drop_caches)"
[ -c /dev/fuse ] || die "needs /dev/fuse"
command -v fusermount3 >/dev/null || die "fusermount3 is missing (make deps)"
if ! command -v gocryptfs >/dev/null; then
  echo "bench: installing gocryptfs (the peer) with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gocryptfs \
    >/dev/null || die "cannot install gocryptfs"
fi
for tool in "$CAPSULE" "$CAPSULED" gocryptfs shuf xargs python3; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
DROP=yes
if ! (sync && echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
  DROP=no
  echo "bench: cannot drop the page cache here: warm-cache numbers for both" >&2
fi

DAEMON_PID=
cleanup() {
  local m
  for m in "$WORK"/mnt-*; do
    [ -d "$m" ] && grep -q " $m fuse" /proc/mounts && fusermount3 -u -z "$m" 2>/dev/null
  done
  [ -z "$DAEMON_PID" ] || { kill -TERM "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; }
  cd /
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
mkdir -p data/small data/medium data3 state run land mnt-capsule mnt-gocryptfs mnt-3 cipher
echo "dataset: a 1 GiB file, 10,000 files of 4 KiB (100 folders), 2,048 files of 128 KiB"
head -c $((1024 << 20)) /dev/urandom > data/large.bin
head -c $((10000 * 4096)) /dev/urandom > blob
split -a 5 -d -b 4K blob data/small/f && rm blob
(cd data/small && for d in $(seq -w 0 99); do mkdir "d$d" && mv f0${d}?? "d$d/"; done)
head -c $((2048 * 131072)) /dev/urandom > blob
split -a 4 -d -b 128K blob data/medium/m && rm blob
echo "first-byte capsule: 20,000 files of 160 KiB (3.05 GiB, 200 folders)"
head -c $((20000 * 163840)) /dev/urandom > blob
split -a 5 -d -b 160K blob data3/f && rm blob
(cd data3 && for d in $(seq -w 0 199); do mkdir "d$d" && mv f${d}?? "d$d/"; done)

"$CAPSULE" keygen -o owner >/dev/null
"$CAPSULE" keygen -o site >/dev/null
"$CAPSULE" seal data -o d.capsule --sign owner.key --to site.pub >/dev/null
"$CAPSULE" seal data3 -o d3.capsule --sign owner.key --to site.pub >/dev/null
rm -rf data3
cat > site.json <<JSON
{ "site": "bench", "identity": "site.key", "trust": ["owner.pub"], "state": "state",
  "destinations": ["land"], "socket": "run/verifier.sock" }
JSON
"$CAPSULED" --site site.json 2> daemon.log &
DAEMON_PID=$!
for _ in $(seq 1 100); do grep -q 'verifier listening' daemon.log && break; sleep 0.05; done
grep -q 'verifier listening' daemon.log || { cat daemon.log >&2; die "capsuled did not start"; }

# gocryptfs on the same files: a fresh file system (its default scrypt cost), filled through
# its own mount, then mounted read-only for the runs.
echo bench-password > gocryptfs.pass
gocryptfs -q -nosyslog -init -passfile gocryptfs.pass cipher >/dev/null
gocryptfs -q -nosyslog -passfile gocryptfs.pass cipher mnt-gocryptfs
cp -a data/. mnt-gocryptfs/
fusermount3 -u mnt-gocryptfs

is_mounted() { grep -q " $WORK/$1 fuse" /proc/mounts; }
wait_unmounted() {
  local _
  for _ in $(seq 1 200); do is_mounted "$1" || return 0; sleep 0.05; done
  die "$1 is still mounted"
}
mount_capsule() {   # CAPSULE MNT
  "$CAPSULE" mount "$1" "$2" --site site.json >/dev/null || die "capsule mount $1 failed"
}
unmount() {   # MNT
  if is_mounted "$1"; then fusermount3 -u "$1"; wait_unmounted "$1"; fi
}
drop_caches() { sync; [ "$DROP" = no ] || echo 3 > /proc/sys/vm/drop_caches; }
fresh_capsule() { unmount mnt-capsule; mount_capsule d.capsule mnt-capsule; drop_caches; }
fresh_gocryptfs() {
  unmount mnt-gocryptfs
  gocryptfs -q -nosyslog -ro -passfile gocryptfs.pass cipher mnt-gocryptfs
  drop_caches
}

# The file lists, in tree order and (for the workers) in one fixed random order.
(cd data && find small -type f | sort) > small.list
(cd data && find medium -type f | shuf --random-source=<(yes)) > medium.list
ENTRIES=$(cd data && find . -mindepth 1 | wc -l)

declare -A SECS
# measure NAME FRESH COMMAND (run in the mount point): FRESH, then COMMAND, twice; keeps the
# faster wall time.
measure() {
  local name=$1 fresh=$2 cmd=$3 run t0 t1 secs mnt
  case "$fresh" in fresh_capsule) mnt=mnt-capsule ;; *) mnt=mnt-gocryptfs ;; esac
  for run in 1 2; do
    "$fresh"
    t0=$(date +%s%N)
    (cd "$mnt" && bash -c "$cmd") > /dev/null 2> run.err || {
      cat run.err >&2; die "'$name' failed"; }
    t1=$(date +%s%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
    if [ -z "${SECS[$name]:-}" ] || awk -v a="$secs" -v b="${SECS[$name]}" 'BEGIN {exit !(a < b)}'; then
      SECS[$name]=$secs
    fi
  done
}
seq_cmd="cat large.bin"
small_cmd="xargs -d '\n' cat < $WORK/small.list"
ls_cmd="ls -lR ."
workers_cmd="xargs -d '\n' -P 8 -n 256 cat < $WORK/medium.list"
for fs in capsule gocryptfs; do
  measure "seq $fs"     "fresh_$fs" "$seq_cmd"
  measure "small $fs"   "fresh_$fs" "$small_cmd"
  measure "ls $fs"      "fresh_$fs" "$ls_cmd"
  measure "workers $fs" "fresh_$fs" "$workers_cmd"
done
# Both file systems serve the same bytes.
fresh_capsule
fresh_gocryptfs
cmp mnt-capsule/large.bin data/large.bin || die "the capsule mount serves other bytes"
diff -r mnt-capsule mnt-gocryptfs >/dev/null || die "the two mounts differ"
unmount mnt-capsule
unmount mnt-gocryptfs

# From `capsule mount` to the first byte of one file: the request to the daemon, the policy
# decision, the audit record (written before anything is served), the file index in memory,
# the kernel mount, the lookups and one chunk authenticated and decrypted.
FIRST=
for run in 1 2; do
  unmount mnt-3
  drop_caches
  t0=$(date +%s%N)
  mount_capsule d3.capsule mnt-3
  head -c 1 mnt-3/d123/f12345 > first.byte
  t1=$(date +%s%N)
  [ -s first.byte ] || die "no first byte"
  ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
  if [ -z "$FIRST" ] || awk -v a="$ms" -v b="$FIRST" 'BEGIN {exit !(a < b)}'; then FIRST=$ms; fi
done
unmount mnt-3
"$CAPSULE" audit show --site site.json --json | grep -q '"event": "mount-ended"' ||
  die "no mount-ended record in the audit log"

printf '\nmachine: %s cores, %s; gocryptfs %s; page cache dropped between runs: %s\n' "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
  "$(gocryptfs -version 2>/dev/null | awk 'NR==1 {sub(";", "", $2); print $2}')" "$DROP"
printf 'scratch: %s; each workload twice on fresh mounts, the faster run counts\n\n' "$WORK"
printf '| %-38s | %16s | %16s | %12s | %11s |\n' workload "capsule mount" gocryptfs \
  "vs gocryptfs" "target 1.5x"
printf '|%s|%s|%s|%s|%s|\n' ---------------------------------------- ------------------ \
  ------------------ -------------- -------------
row() {   # KEY LABEL BYTES
  local c=${SECS["$1 capsule"]} g=${SECS["$1 gocryptfs"]} ratio cs gs
  ratio=$(awk -v a="$g" -v b="$c" 'BEGIN {printf "%.2f", a / (b > 0 ? b : 0.001)}')
  cs="$c s"; gs="$g s"
  if [ "$3" -gt 0 ]; then
    cs=$(awk -v s="$c" -v b="$3" 'BEGIN {printf "%.2f s %4.0f MB/s", s, b / 1e6 / s}')
    gs=$(awk -v s="$g" -v b="$3" 'BEGIN {printf "%.2f s %4.0f MB/s", s, b / 1e6 / s}')
  fi
  printf '| %-38s | %16s | %16s | %11sx | %11s |\n' "$2" "$cs" "$gs" "$ratio" \
    "$(awk -v r="$ratio" 'BEGIN {print (r >= 1.5 ? "met" : "NOT met")}')"
}
row seq "sequential read, 1 GiB file" $((1024 << 20))
row small "10,000 files of 4 KiB, tree order" $((10000 * 4096))
row ls "ls -lR ($ENTRIES entries)" 0
row workers "8 workers, 2,048 x 128 KiB, random" $((2048 * 131072))
printf '\ncapsule mount to first byte (3 GiB capsule, 20,000 files): %s ms (target < 100 ms: %s)\n' \
  "$FIRST" "$(awk -v m="$FIRST" 'BEGIN {print (m < 100 ? "met" : "NOT met")}')"

#!/usr/bin/env bash
# Move one 2 GiB capsule over loopback with `capsule send` to a `capsuled` (mutually
# authenticated TLS, every chunk checked against the signed chunk table), and in the same run
# the raw link (iperf3 on the same number of bytes) and an rsync daemon (Debian's rsync, plain
# `rsync FILE rsync://...`, no TLS) on the same file. Prints wall time, throughput, ratio to
# rsync and the CPU seconds (user + system) of the client and of the server for each.
# Then the resume check: a rate-limited send is killed with SIGKILL part way through and run
# again; prints how many bytes the first run had put on the wire, how many the receiver had
# made durable (skipped by the second run), and so how many were sent twice.
# Each transfer runs twice and the faster run counts. Client CPU comes from /usr/bin/time; server
# CPU from /proc/PID/stat (utime + stime + reaped children's, so rsync's forked receivers count)
# read before and after. Client and server share this machine's cores: on a small machine they
# compete for them, which is what a loopback benchmark measures. By default the scratch folder is
# on tmpfs (/dev/shm) when it has room, so that no tool waits on the disk (capsuled syncs each
# commit, rsync never syncs: on a disk that would favour rsync).
#   bench/transfer.sh [BUILD_DIR]     env: BENCH_DIR (scratch folder), BENCH_MB (capsule payload
#                                          MiB, default 2048), BENCH_RATE (resume check's
#                                          --rate, default 200M), BENCH_KEEP=1 (keep scratch)
set -euo pipefail
BUILD=${1:-build/release}
CAPSULE="$(cd "$BUILD" && pwd)/cli/capsule"
CAPSULED="$(cd "$BUILD" && pwd)/cli/capsuled"
MB=${BENCH_MB:-2048}
RATE=${BENCH_RATE:-200M}
if [ -z "${BENCH_DIR:-}" ]; then
  shm_free_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
  if [ -n "$shm_free_mb" ] && [ "$shm_free_mb" -gt $((MB * 4)) ]; then
    BENCH_DIR=/dev/shm/bunker-bench-transfer
  else
    BENCH_DIR=/tmp/bunker-bench-transfer
  fi
fi
WORK=$BENCH_DIR
[ "$MB" -ge 16 ] || { echo "BENCH_MB too small (16 at least)" >&2; exit 2; }
for tool in "$CAPSULE" "$CAPSULED" iperf3 rsync ss pgrep /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (make deps)" >&2; exit 1; }
done

# Everything started in the background is recorded here and stopped on exit, by its PID.
BG_PIDS=()
SEND_PID=
cleanup() {
  local p
  [ -z "$SEND_PID" ] || kill -9 "$SEND_PID" 2>/dev/null || true
  for p in "${BG_PIDS[@]:-}"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${BG_PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  cd /
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

die() { echo "bench: $*" >&2; exit 1; }
# A TCP port nothing listens on (another process may take it before us: then the server fails
# to start and the bench says so).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    [ -z "$(ss -Htln "sport = :$p")" ] && { echo "$p"; return; }
  done
}
wait_listening() {  # PORT PID LOG
  local _
  for _ in $(seq 1 100); do
    [ -n "$(ss -Htln "sport = :$1")" ] && return
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "server on port $1 exited"; }
    sleep 0.05
  done
  cat "$3" >&2; die "nothing listens on port $1"
}
# CPU seconds (user + system, threads and reaped children included) of a running process.
TICKS=$(getconf CLK_TCK)
cpu_of() {
  awk -v t="$TICKS" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13 + $14 + $15) / t}' \
    "/proc/$1/stat"
}
# Waits until a server has reaped the processes it forked for a connection (rsync).
wait_children() {
  local _
  for _ in $(seq 1 200); do
    pgrep -P "$1" >/dev/null || return 0
    sleep 0.05
  done
}
json_field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" "$2"; }

rm -rf "$WORK" && mkdir -p "$WORK/data" && cd "$WORK"
echo "dataset: one ${MB} MiB file of random data in $WORK, sealed with 1 MiB chunks"
echo "each transfer runs twice; the faster run counts"
head -c "$((MB << 20))" /dev/urandom > data/payload.bin
for k in owner site-a site-b; do "$CAPSULE" keygen -o "$k" >/dev/null; done
"$CAPSULE" seal data -o d.capsule --sign owner.key --to site-b.pub >/dev/null
rm -rf data
BYTES=$(stat -c %s d.capsule)
cat > a.json <<'JSON'
{"site": "site-a", "identity": "site-a.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "state-a", "peers": ["site-b.pub"], "store": "store-a"}
JSON
cat > b.json <<'JSON'
{"site": "site-b", "identity": "site-b.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "state-b", "listen": "127.0.0.1:0", "peers": ["site-a.pub"], "store": "store-b"}
JSON

# The three servers, each on loopback only.
IPERF_PORT=$(free_port)
iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" > iperf3.log 2>&1 &
IPERF_PID=$!
BG_PIDS+=("$IPERF_PID")
wait_listening "$IPERF_PORT" "$IPERF_PID" iperf3.log

RSYNC_PORT=$(free_port)
mkdir -p rsync-dest
cat > rsyncd.conf <<CONF
use chroot = no
address = 127.0.0.1
log file = $WORK/rsyncd.log
pid file = $WORK/rsyncd.pid
lock file = $WORK/rsyncd.lock
[bench]
  path = $WORK/rsync-dest
  read only = no
  uid = $(id -u)
  gid = $(id -g)
CONF
rsync --daemon --no-detach --config="$WORK/rsyncd.conf" --port="$RSYNC_PORT" 2> rsyncd.err &
RSYNC_PID=$!
BG_PIDS+=("$RSYNC_PID")
wait_listening "$RSYNC_PORT" "$RSYNC_PID" rsyncd.err

"$CAPSULED" --site b.json 2> b.log &
CAPSULED_PID=$!
BG_PIDS+=("$CAPSULED_PID")
CAPSULE_PORT=
for _ in $(seq 1 100); do
  CAPSULE_PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' b.log | tail -1)
  [ -n "$CAPSULE_PORT" ] && break
  kill -0 "$CAPSULED_PID" 2>/dev/null || break
  sleep 0.05
done
[ -n "$CAPSULE_PORT" ] || { cat b.log >&2; die "capsuled did not start"; }

declare -A SECS CCPU SCPU
# measure NAME SERVER_PID CLEANUP COMMAND CHECK: runs CLEANUP, then COMMAND (the client) under
# /usr/bin/time, then CHECK, twice; keeps the faster wall time with its client and server CPU.
measure() {
  local name=$1 server=$2 cleanup=$3 cmd=$4 check=$5 run secs user sys before after
  for run in 1 2; do
    bash -c "$cleanup"
    sync
    before=$(cpu_of "$server")
    /usr/bin/time -f '%e %U %S' -o time.out bash -c "$cmd" > client.out 2> client.err || {
      cat client.out client.err >&2; die "'$name' failed"; }
    wait_children "$server"
    after=$(cpu_of "$server")
    bash -c "$check" || die "'$name': $check failed"
    read -r secs user sys < <(tail -1 time.out)
    if [ -z "${SECS[$name]:-}" ] || awk -v a="$secs" -v b="${SECS[$name]}" 'BEGIN {exit !(a < b)}'; then
      SECS[$name]=$secs
      CCPU[$name]=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
      SCPU[$name]=$(awk -v a="$before" -v b="$after" 'BEGIN {printf "%.2f", b - a}')
    fi
  done
}
send_cmd="'$CAPSULE' send d.capsule --to 127.0.0.1:$CAPSULE_PORT --site a.json --json"
stored_same='cmp -s d.capsule store-b/*.capsule'

cat d.capsule > /dev/null   # warm the page cache for everyone alike
measure "iperf3 (raw link)" "$IPERF_PID" ":" \
  "iperf3 -c 127.0.0.1 -p $IPERF_PORT -n $BYTES" ":"
measure "rsync daemon" "$RSYNC_PID" "rm -rf rsync-dest/* rsync-dest/.[!.]*" \
  "rsync d.capsule rsync://127.0.0.1:$RSYNC_PORT/bench/" "cmp -s d.capsule rsync-dest/d.capsule"
rm -rf rsync-dest/*
measure "capsule send" "$CAPSULED_PID" "rm -rf store-b" "$send_cmd" "$stored_same"
FULL_BYTES=$(json_field bytesSent client.out)   # every chunk's ciphertext: what a full send moves
CHUNKS=$(json_field chunksTotal client.out)
measure "capsule send -1" "$CAPSULED_PID" "rm -rf store-b" "$send_cmd --streams 1" "$stored_same"

# Resume: a send limited to $RATE is killed with SIGKILL at about 40% of its expected time.
# The bytes it had handed to its socket at that moment (its write count, /proc/PID/io) were on
# the wire; the second run skips what the receiver had made durable; the difference was sent
# twice. The receiver's incoming file (sparse: its allocated bytes) shows what had reached it.
rm -rf store-b
rate_bps=$(awk -v r="$RATE" 'BEGIN {
  m = 1; u = substr(r, length(r)); if (u == "K") m = 1e3; else if (u == "M") m = 1e6;
  else if (u == "G") m = 1e9; if (m > 1) r = substr(r, 1, length(r) - 1); printf "%.0f", r * m}')
kill_after=$(awk -v b="$FULL_BYTES" -v r="$rate_bps" 'BEGIN {printf "%.2f", 0.4 * b / r}')
"$CAPSULE" send d.capsule --to "127.0.0.1:$CAPSULE_PORT" --site a.json --rate "$RATE" \
  > resume1.out 2>&1 &
SEND_PID=$!
sleep "$kill_after"
kill -0 "$SEND_PID" 2>/dev/null || { cat resume1.out >&2; die "the rate-limited send ended early"; }
kill -STOP "$SEND_PID"   # frozen, so that its write count is the last it will have
WIRE_AT_KILL=$(awk '/^wchar:/ {print $2}' "/proc/$SEND_PID/io")
kill -9 "$SEND_PID"
wait "$SEND_PID" 2>/dev/null || true
SEND_PID=
sleep 0.5   # let the receiver write what had reached it
ON_DISK=$(du -B1 store-b/.incoming/*.capsule 2>/dev/null | awk '{s += $1} END {print s + 0}')
/usr/bin/time -f '%e %U %S' -o time.out \
  "$CAPSULE" send d.capsule --to "127.0.0.1:$CAPSULE_PORT" --site a.json --json > resume2.out ||
  { cat resume2.out >&2; die "the resumed send failed"; }
cmp -s d.capsule store-b/*.capsule || die "the resumed capsule differs"
R_TOTAL=$(json_field chunksTotal resume2.out)
R_SKIPPED=$(json_field chunksSkipped resume2.out)
R_SENT=$(json_field bytesSent resume2.out)
R_SECS=$(tail -1 time.out | cut -d' ' -f1)
SKIPPED_BYTES=$((FULL_BYTES - R_SENT))
RESENT=$((WIRE_AT_KILL - SKIPPED_BYTES))
[ "$RESENT" -ge 0 ] || RESENT=0

# Report.
printf '\nmachine: %s cores, %s; rsync %s, iperf3 %s\n' "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
  "$(rsync --version | awk 'NR==1 {print $3}')" "$(iperf3 --version | awk 'NR==1 {print $2}')"
printf 'capsule: %s bytes (%d MiB payload, %s chunks), scratch %s\n\n' "$BYTES" "$MB" \
  "$CHUNKS" "$WORK"
printf '| %-17s | %8s | %8s | %9s | %15s | %15s |\n' tool seconds "MB/s" "vs rsync" \
  "CPU s (client)" "CPU s (server)"
printf '|%s|%s|%s|%s|%s|%s|\n' ------------------- ---------- ---------- ----------- \
  ----------------- -----------------
row() {
  local name=$1 label=$2 mbps ratio
  mbps=$(awk -v b="$BYTES" -v s="${SECS[$name]}" 'BEGIN {printf "%.0f", b/1e6/(s>0?s:0.01)}')
  ratio=$(awk -v a="${SECS["rsync daemon"]}" -v s="${SECS[$name]}" \
    'BEGIN {printf "%.2fx", a/(s>0?s:0.01)}')
  printf '| %-17s | %8s | %8s | %9s | %15s | %15s |\n' "$label" "${SECS[$name]}" "$mbps" \
    "$ratio" "${CCPU[$name]}" "${SCPU[$name]}"
}
row "iperf3 (raw link)" "iperf3 (raw link)"
row "rsync daemon" "rsync daemon"
row "capsule send" "capsule send"
row "capsule send -1" "capsule send -s 1"

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
printf '\nresume: send --rate %s killed (SIGKILL) after %s s, then run again\n' "$RATE" "$kill_after"
printf '  on the wire before the kill:       %s MiB\n' "$(mib "$WIRE_AT_KILL")"
printf '  at the receiver (incoming file):   %s MiB allocated\n' "$(mib "$ON_DISK")"
printf '  durable, skipped by the second run: %s of %s chunks, %s MiB\n' "$R_SKIPPED" "$R_TOTAL" \
  "$(mib "$SKIPPED_BYTES")"
printf '  second run: %s MiB sent in %s s, capsule identical\n' "$(mib "$R_SENT")" "$R_SECS"
printf '  sent twice: %s MiB (bound: one commit interval, 16 MiB or 1 s, plus what was in flight)\n' \
  "$(mib "$RESENT")"

ratio=$(awk -v a="${SECS["rsync daemon"]}" -v s="${SECS["capsule send"]}" 'BEGIN {printf "%.2f", a/s}')
printf '\ntargets: throughput %sx rsync (>= 2x: %s); resent %s MiB after a kill (< 64 MiB: %s)\n' \
  "$ratio" "$(awk -v r="$ratio" 'BEGIN {print (r >= 2 ? "met" : "NOT met")}')" \
  "$(mib "$RESENT")" "$([ "$RESENT" -lt $((64 << 20)) ] && echo met || echo "NOT met")"

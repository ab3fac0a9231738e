#!/usr/bin/env bash
# Move one 2 GiB capsule over loopback with `capsule send` to a `capsuled` (mutually
# authenticated TLS, every chunk checked against the signed chunk table), and in the same run
# the raw link (iperf3 on the same number of bytes) and an rsync daemon (Debian's rsync, plain
# `rsync FILE rsync://...`, no TLS) on the same file. Prints wall time, throughput, ratio to
# rsync and the CPU seconds (user + system) of the client and of the server for each.
# Then the resume check: a rate-limited send is killed with SIGKILL part way through and run
# again; prints how many bytes the first run had put on the wire, how many the receiver had
# made durable (skipped by the second run), and so how many were sent twice.
# Then a long fat link: a smaller capsule through the WAN emulator tests/tools/wan_proxy.cc
# (BUILD_DIR/tests/wan_proxy: each direction delayed by RTT/2, at most W = 4 MiB in flight per
# connection) at RTT 50 ms and 100 ms: rsync (one stream), `capsule send --streams 1/4/8/16` and
# iperf3 -P 1 / -P 8 through the same proxy, with the proxy's CPU per GiB; at the first RTT,
# once more `send --streams 8` through the Python emulator tests/tools/wan_proxy.py (same
# semantics), to show what the proxy's own CPU takes from the ends.
# Last, one line per target of issue 9: met, or NOT met with the ratio.
# Each loopback transfer runs twice and the faster run counts; each WAN row runs once
# (BENCH_WAN_RUNS=2 for two). Client CPU comes from /usr/bin/time; server
# CPU from /proc/PID/stat (utime + stime + reaped children's, so rsync's forked receivers count)
# read before and after. Client and server share this machine's cores: on a small machine they
# compete for them, which is what a loopback benchmark measures. By default the scratch folder is
# on tmpfs (/dev/shm) when it has room, so that no tool waits on the disk (capsuled syncs each
# commit, rsync never syncs: on a disk that would favour rsync).
#   bench/transfer.sh [BUILD_DIR]     env: BENCH_DIR (scratch folder), BENCH_MB (capsule payload
#                                          MiB, default 2048), BENCH_RATE (resume check's
#                                          --rate, default 200M), BENCH_KEEP=1 (keep scratch),
#                                          BENCH_WAN_MB (WAN capsule MiB, default 1024; 0 skips
#                                          the WAN rows), BENCH_WAN_RTTS (default "50 100"),
#                                          BENCH_WAN_RUNS (default 1), BENCH_WAN_PY=0 (skip
#                                          the Python proxy's row)
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
WAN_MB=${BENCH_WAN_MB:-1024}
WAN_RTTS=${BENCH_WAN_RTTS:-50 100}
WAN_RUNS=${BENCH_WAN_RUNS:-1}
WAN_PY=${BENCH_WAN_PY:-1}
WAN_PROXY="$(cd "$BUILD" && pwd)/tests/wan_proxy"
WAN_PROXY_PY="$(cd "$(dirname "$0")/.." && pwd)/tests/tools/wan_proxy.py"
for tool in "$CAPSULE" "$CAPSULED" "$WAN_PROXY" iperf3 rsync ss pgrep /usr/bin/time python3; do
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
if [ "$WAN_MB" -gt 0 ]; then
  mkdir -p wan-data
  head -c "$((WAN_MB << 20))" /dev/urandom > wan-data/payload.bin
  "$CAPSULE" seal wan-data -o w.capsule --sign owner.key --to site-b.pub >/dev/null
  rm -rf wan-data
  WAN_BYTES=$(stat -c %s w.capsule)
fi
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

declare -A SECS CCPU SCPU CRSS PCPU
# measure NAME SERVER_PID CLEANUP COMMAND CHECK: runs CLEANUP, then COMMAND (the client) under
# /usr/bin/time, then CHECK, twice; keeps the faster wall time with its client and server CPU
# (and, with PROXY_PID set, the CPU of that WAN proxy).
measure() {
  local name=$1 server=$2 cleanup=$3 cmd=$4 check=$5 run secs user sys rss before after
  local p_before=0 p_after=0
  for run in $(seq 1 "${RUNS:-2}"); do
    bash -c "$cleanup"
    sync
    [ -z "${PROXY_PID:-}" ] || p_before=$(cpu_of "$PROXY_PID")
    before=$(cpu_of "$server")
    /usr/bin/time -f '%e %U %S %M' -o time.out bash -c "$cmd" > client.out 2> client.err || {
      cat client.out client.err >&2; die "'$name' failed"; }
    wait_children "$server"
    after=$(cpu_of "$server")
    [ -z "${PROXY_PID:-}" ] || p_after=$(cpu_of "$PROXY_PID")
    bash -c "$check" || die "'$name': $check failed"
    read -r secs user sys rss < <(tail -1 time.out)
    if [ -z "${SECS[$name]:-}" ] || awk -v a="$secs" -v b="${SECS[$name]}" 'BEGIN {exit !(a < b)}'; then
      SECS[$name]=$secs
      CCPU[$name]=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
      SCPU[$name]=$(awk -v a="$before" -v b="$after" 'BEGIN {printf "%.2f", b - a}')
      CRSS[$name]=$((rss / 1024))
      PCPU[$name]=$(awk -v a="$p_before" -v b="$p_after" 'BEGIN {printf "%.2f", b - a}')
    fi
  done
}
send_cmd="'$CAPSULE' send d.capsule --to 127.0.0.1:$CAPSULE_PORT --site a.json --json"
stored_same='cmp -s d.capsule store-b/*.capsule'

cat d.capsule > /dev/null   # warm the page cache for everyone alike
measure "iperf3 (raw link)" "$IPERF_PID" "sleep 1" \
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

# The long fat link: one proxy per server, each connection through it gets RTT and W.
start_proxy() {  # TARGET_PORT RTT_MS [PROXY_COMMAND] -> sets PROXY_PORT and PROXY_PID
  local log
  log="proxy-$1-$2.log"
  ${3:-"$WAN_PROXY"} --listen 127.0.0.1:0 --target "127.0.0.1:$1" --rtt-ms "$2" \
    --window 4M > "$log" 2>&1 &
  PROXY_PID=$!
  BG_PIDS+=("$PROXY_PID")
  PROXY_PORT=
  for _ in $(seq 1 100); do
    PROXY_PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$log")
    [ -n "$PROXY_PORT" ] && return
    sleep 0.05
  done
  cat "$log" >&2; die "the WAN proxy did not start"
}
if [ "$WAN_MB" -gt 0 ]; then
  cat w.capsule > /dev/null
  for rtt in $WAN_RTTS; do
    start_proxy "$IPERF_PORT" "$rtt"; p_iperf=$PROXY_PORT; pid_iperf=$PROXY_PID
    start_proxy "$RSYNC_PORT" "$rtt"; p_rsync=$PROXY_PORT; pid_rsync=$PROXY_PID
    start_proxy "$CAPSULE_PORT" "$rtt"; p_capsule=$PROXY_PORT; pid_capsule=$PROXY_PID
    wsend="'$CAPSULE' send w.capsule --to 127.0.0.1:$p_capsule --site a.json --json"
    wstored='cmp -s w.capsule store-b/*.capsule'
    PROXY_PID=$pid_rsync RUNS=$WAN_RUNS measure "wan $rtt rsync" "$RSYNC_PID" \
      "rm -rf rsync-dest/* rsync-dest/.[!.]*" \
      "rsync w.capsule rsync://127.0.0.1:$p_rsync/bench/" "cmp -s w.capsule rsync-dest/w.capsule"
    rm -rf rsync-dest/*
    for s in 1 4 8 16; do
      PROXY_PID=$pid_capsule RUNS=$WAN_RUNS measure "wan $rtt s$s" "$CAPSULED_PID" \
        "rm -rf store-b" "$wsend --streams $s" "$wstored"
    done
    for p in 1 8; do
      # (the iperf3 server refuses a test while the last one is still closing)
      PROXY_PID=$pid_iperf RUNS=$WAN_RUNS measure "wan $rtt iperf3 P$p" "$IPERF_PID" "sleep 2" \
        "iperf3 -c 127.0.0.1 -p $p_iperf -P $p -n $WAN_BYTES" ":"
    done
    if [ "$WAN_PY" = 1 ] && [ "$rtt" = "${WAN_RTTS%% *}" ]; then
      start_proxy "$CAPSULE_PORT" "$rtt" "python3 $WAN_PROXY_PY"
      PY_RTT=$rtt
      RUNS=$WAN_RUNS measure "wan $rtt s8 py" "$CAPSULED_PID" "rm -rf store-b" \
        "'$CAPSULE' send w.capsule --to 127.0.0.1:$PROXY_PORT --site a.json --json --streams 8" \
        "$wstored"
      PROXY_PID=
    fi
  done
fi

# Report.
printf '\nmachine: %s cores, %s; rsync %s, iperf3 %s\n' "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
  "$(rsync --version | awk 'NR==1 {print $3}')" "$(iperf3 --version | awk 'NR==1 {print $2}')"
printf 'capsule: %s bytes (%d MiB payload, %s chunks), scratch %s\n\n' "$BYTES" "$MB" \
  "$CHUNKS" "$WORK"
# CPU seconds per GiB moved: what each side spends per byte, comparable across tools.
per_gib() { awk -v c="$1" -v b="$2" 'BEGIN {printf "%.2f", c / (b / 1073741824)}'; }
header() {  # [proxy]: with the WAN proxy's CPU
  printf '| %-20s | %8s | %8s | %9s | %14s | %14s | %15s |' tool seconds "MB/s" "vs rsync" \
    "client CPU s/GiB" "server CPU s/GiB" "client RSS MiB"
  [ -z "${1:-}" ] && echo || printf ' %15s |\n' "proxy CPU s/GiB"
  printf '|%s|%s|%s|%s|%s|%s|%s|' ---------------------- ---------- ---------- ----------- \
    ------------------ ------------------ -----------------
  [ -z "${1:-}" ] && echo || printf '%s|\n' -----------------
}
header
# row NAME LABEL BYTES RSYNC_NAME [proxy]
row() {
  local name=$1 label=$2 bytes=$3 ref=$4 mbps ratio
  mbps=$(awk -v b="$bytes" -v s="${SECS[$name]}" 'BEGIN {printf "%.0f", b/1e6/(s>0?s:0.01)}')
  ratio=$(awk -v a="${SECS[$ref]}" -v s="${SECS[$name]}" \
    'BEGIN {printf "%.2fx", a/(s>0?s:0.01)}')
  printf '| %-20s | %8s | %8s | %9s | %16s | %16s | %15s |' "$label" "${SECS[$name]}" "$mbps" \
    "$ratio" "$(per_gib "${CCPU[$name]}" "$bytes")" "$(per_gib "${SCPU[$name]}" "$bytes")" \
    "${CRSS[$name]}"
  [ -z "${5:-}" ] && echo || printf ' %15s |\n' "$(per_gib "${PCPU[$name]}" "$bytes")"
}
row "iperf3 (raw link)" "iperf3 (raw link)" "$BYTES" "rsync daemon"
row "rsync daemon" "rsync daemon" "$BYTES" "rsync daemon"
row "capsule send" "capsule send" "$BYTES" "rsync daemon"
row "capsule send -1" "capsule send -s 1" "$BYTES" "rsync daemon"
if [ "$WAN_MB" -gt 0 ]; then
  printf '\nlong fat link (tests/tools/wan_proxy.cc, W = 4 MiB per connection): %s bytes capsule\n\n' \
    "$WAN_BYTES"
  header proxy
  for rtt in $WAN_RTTS; do
    row "wan $rtt rsync" "RTT $rtt rsync" "$WAN_BYTES" "wan $rtt rsync" proxy
    for s in 1 4 8 16; do
      row "wan $rtt s$s" "RTT $rtt send -s $s" "$WAN_BYTES" "wan $rtt rsync" proxy
    done
    for p in 1 8; do
      row "wan $rtt iperf3 P$p" "RTT $rtt iperf3 -P $p" "$WAN_BYTES" "wan $rtt rsync" proxy
    done
    if [ "${PY_RTT:-}" = "$rtt" ]; then
      row "wan $rtt s8 py" "RTT $rtt -s 8 py proxy" "$WAN_BYTES" "wan $rtt rsync" proxy
    fi
  done
fi

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
printf '\nresume: send --rate %s killed (SIGKILL) after %s s, then run again\n' "$RATE" "$kill_after"
printf '  on the wire before the kill:       %s MiB\n' "$(mib "$WIRE_AT_KILL")"
printf '  at the receiver (incoming file):   %s MiB allocated\n' "$(mib "$ON_DISK")"
printf '  durable, skipped by the second run: %s of %s chunks, %s MiB\n' "$R_SKIPPED" "$R_TOTAL" \
  "$(mib "$SKIPPED_BYTES")"
printf '  second run: %s MiB sent in %s s, capsule identical\n' "$(mib "$R_SENT")" "$R_SECS"
printf '  sent twice: %s MiB (bound: one commit interval, 16 MiB or 1 s, plus what was in flight)\n' \
  "$(mib "$RESENT")"

# One line per target of issue 9.
verdict() {  # TEXT VALUE OP BOUND
  local ok
  ok=$(awk -v v="$2" -v b="$4" -v op="$3" 'BEGIN {print ((op == ">=" ? v >= b : v <= b) ? 1 : 0)}')
  printf '  %-58s %6s (%s %s): %s\n' "$1" "$2" "$3" "$4" "$([ "$ok" = 1 ] && echo met || echo "NOT met")"
}
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
printf '\ntargets:\n'
verdict "send on loopback, throughput vs rsync daemon" \
  "$(ratio_of "${SECS["rsync daemon"]}" "${SECS["capsule send"]}")" ">=" 1
verdict "receiver CPU per GiB vs rsync's" \
  "$(ratio_of "${SCPU["capsule send"]}" "${SCPU["rsync daemon"]}")" "<=" 1.5
verdict "sender CPU per GiB vs rsync's" \
  "$(ratio_of "${CCPU["capsule send"]}" "${CCPU["rsync daemon"]}")" "<=" 1.5
if [ "$WAN_MB" -gt 0 ] && [[ " $WAN_RTTS " == *" 50 "* ]]; then
  verdict "RTT 50 ms: send -s 1 vs single-stream rsync" \
    "$(ratio_of "${SECS["wan 50 rsync"]}" "${SECS["wan 50 s1"]}")" ">=" 0.95
  verdict "RTT 50 ms: send -s 8 vs single-stream rsync" \
    "$(ratio_of "${SECS["wan 50 rsync"]}" "${SECS["wan 50 s8"]}")" ">=" 4
  verdict "RTT 50 ms: send -s 8 vs iperf3 -P 8" \
    "$(ratio_of "${SECS["wan 50 iperf3 P8"]}" "${SECS["wan 50 s8"]}")" ">=" 0.8
fi
# A commit interval is 16 MiB; what was in flight at the kill (never acknowledged) comes on top.
verdict "resume after kill -9: MiB sent twice (16 MiB + in flight)" "$(mib "$RESENT")" "<=" 64

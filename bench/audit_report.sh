#!/usr/bin/env bash
# `capsule audit report` over a log of 100,000 entries (target: under 5 s), with `audit show
# --json` and `audit verify` over the same log for reference, and, when chromium is there, the
# time headless Chromium takes to load the page and run its script (the table shows 100 rows a
# page, so the browser never builds 100,000 rows). Each command runs twice; the faster run
# counts. The log is built by the test-only tests/audit_fixture (one signed checkpoint per
# entry, as a site writes it), on tmpfs when there is room.
#   bench/audit_report.sh [BUILD_DIR]     env: BENCH_DIR (scratch folder), BENCH_ENTRIES (100000)
set -euo pipefail
BUILD=${1:-build/release}
BUILD=$(cd "$BUILD" && pwd)
CAPSULE=$BUILD/cli/capsule
FIXTURE=$BUILD/tests/audit_fixture
N=${BENCH_ENTRIES:-100000}
[ -x "$FIXTURE" ] || { echo "bench: $FIXTURE is missing (a build with tests)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "bench: /usr/bin/time is missing" >&2; exit 1; }
BENCH_DIR=${BENCH_DIR:-$( [ -d /dev/shm ] && echo /dev/shm/bunker-bench-report || echo /tmp/bunker-bench-report)}
rm -rf "$BENCH_DIR" && mkdir -p "$BENCH_DIR/state" && cd "$BENCH_DIR"
trap 'rm -rf "$BENCH_DIR"' EXIT

"$CAPSULE" keygen -o site >/dev/null
echo "building a log of $N entries in $BENCH_DIR (tests/audit_fixture) ..."
"$FIXTURE" state site.key "$N" >/dev/null
echo "log: $(du -h state/audit.log | cut -f1) entries, $(du -h state/audit.checkpoints | cut -f1) checkpoints"

# best NAME CMD...: runs CMD twice, prints "NAME seconds peak-RSS" of the faster run.
best() {
  local name=$1; shift
  local b="" rss="" t m
  for _ in 1 2; do
    /usr/bin/time -f '%e %M' -o .time "$@" >/dev/null 2>.err || { cat .err >&2; exit 1; }
    read -r t m < .time
    if [ -z "$b" ] || awk -v a="$t" -v b="$b" 'BEGIN {exit !(a < b)}'; then b=$t; rss=$m; fi
  done
  printf '%-44s %8.2f s %8d MiB\n' "$name" "$b" "$((rss / 1024))"
  echo "$b" > ".best-$name"
}

printf '%-44s %10s %12s\n' "command ($N entries)" "time" "peak RSS"
best "audit report" "$CAPSULE" audit report --log state/audit.log --key site.pub -o r.html --force
best "audit report --every-signature" "$CAPSULE" audit report --log state/audit.log \
  --key site.pub -o r2.html --force --every-signature
best "audit show --json" "$CAPSULE" audit show --log state/audit.log --json
best "audit verify" "$CAPSULE" audit verify --log state/audit.log --key site.pub
echo "page: $(du -h r.html | cut -f1)"

CHROMIUM=$(command -v chromium || true)
if [ -n "$CHROMIUM" ]; then
  start=$(date +%s.%N)
  timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$BENCH_DIR/chrome" --dump-dom "file://$BENCH_DIR/r.html" > dom.html 2>/dev/null
  end=$(date +%s.%N)
  ready=$(grep -c 'data-ready="1"' dom.html || true)
  rows=$(grep -o '<tr data-site=' dom.html | wc -l)
  printf '%-44s %8.2f s   (script finished: %s; rows in the DOM: %s incl. summary tables)\n' \
    "chromium: load the page, run its script" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" \
    "$([ "$ready" -ge 1 ] && echo yes || echo NO)" "$rows"
else
  echo "chromium: not installed, page load not measured"
fi

t=$(cat ".best-audit report")
if awk -v t="$t" 'BEGIN {exit !(t < 5)}'; then verdict="met"; else verdict="NOT met"; fi
echo "audit report over $N entries: $t s (target under 5 s: $verdict)"

#!/usr/bin/env bash
# `capsule audit report` in a real browser, over a real two-site audit trail: site A's daemon and
# site B's daemon on loopback (A witnesses B's log), A sends a capsule to B, B's users open it for
# several purposes, two of them planted markup (`<img src=x onerror=alert(1)>`, and a purpose
# that tries to close the page's script). The page is rendered by headless Chromium, and
# check_report_dom.py compares what the rendered DOM shows with `capsule audit show --json` and
# checks that nothing planted ran. The page and a screenshot are left at OUT_DIR/report.html and
# OUT_DIR/report.png for a person.
# Usage: report_browser_test.sh CAPSULE CAPSULED OUT_DIR   (exit 77: skipped, says why)
set -uo pipefail
CAPSULE=$1
CAPSULED=$2
OUT_DIR=$3
SCENARIO=report_browser
HERE=$(cd "$(dirname "$0")" && pwd)
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "SKIP: chromium is not installed (scripts/install-deps.sh installs it)"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
. "$HERE/../cli/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bunker-report-XXXXXX")
DAEMON_PIDS=()
cleanup() {
  local rc=$?
  for p in "${DAEMON_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  remove_work $rc
}
trap cleanup EXIT
cd "$WORK"

IMG='<img src=x onerror=alert(1)>'
BREAKOUT="</script><script>window.__pwned=1;document.title='PWNED'</script>"
SVG="<svg onload=\"document.body.setAttribute('data-pwned','svg')\">"

# Keys, data, and a policy: Alice may open train/ at site-b for two purposes, three times.
for k in owner site-a site-b; do "$CAPSULE" keygen -o $k >/dev/null || fail "keygen $k"; done
ALICE=$(fingerprint_of alice)
BOB=$(fingerprint_of bob)
mkdir -p data/train data/pii land
printf 'row 1\n' > data/train/a.csv
printf 'secret\n' > data/pii/names.csv
cat > policy.json <<JSON
{"version": 1, "rules": [
  {"id": "train", "effect": "permit", "sites": ["site-b"], "requesters": ["$ALICE"],
   "purposes": ["training", "<img src=x onerror=alert(1)>"], "paths": ["train/**"],
   "maxOpens": 3},
  {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}]}
JSON
expect_exit 0 "$CAPSULE" seal data -o d.capsule --sign owner.key --to site-b.pub --policy policy.json

# A first (B names it as its witness, so B needs A's port), then B.
cat > a.json <<'JSON'
{"site": "site-a", "identity": "site-a.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "state-a", "listen": "127.0.0.1:0", "peers": ["site-b.pub"], "store": "store-a"}
JSON
start_site a a.json
PA=$SITE_PORT
cat > b.json <<JSON
{"site": "site-b", "identity": "site-b.key", "trust": ["owner.pub"], "destinations": ["land"],
 "state": "state-b", "listen": "127.0.0.1:0", "peers": ["site-a.pub"], "store": "store-b",
 "witnesses": ["site-a.pub@127.0.0.1:$PA"]}
JSON
start_site b b.json
PB=$SITE_PORT

expect_exit 0 "$CAPSULE" send d.capsule --to "127.0.0.1:$PB" --site a.json
STORED=$(ls store-b/*.capsule)
open_b() { "$CAPSULE" open "$STORED" --site b.json "$@"; }
expect_exit 0 open_b --as alice.key --purpose training --only 'train/**' --to land/1
expect_exit 0 open_b --as alice.key --purpose "$IMG" --only 'train/**' --to land/2
expect_exit 5 open_b --as alice.key --purpose "$BREAKOUT" --only 'train/**' --to land/x
expect_exit 5 open_b --as alice.key --purpose "$SVG" --only 'train/**' --to land/x
expect_exit 5 open_b --as alice.key --purpose training --to land/x
expect_exit 5 open_b --as bob.key --purpose training --only 'train/**' --to land/x
expect_exit 0 open_b --as alice.key --purpose training --only 'train/**' --to land/3
expect_exit 5 open_b --as alice.key --purpose training --only 'train/**' --to land/x
expect_err "maxOpens"

# A holds B's newest checkpoint once B has handed it over.
B_SIZE=$("$CAPSULE" audit show --site b.json --json | wc -l)
wait_for "state-a/witness/*.checkpoint" "^size $B_SIZE$"
stop_site "$A_PID"
stop_site "$B_PID"

"$CAPSULE" audit show --site a.json --json > a.jsonl || fail "audit show a"
"$CAPSULE" audit show --site b.json --json > b.jsonl || fail "audit show b"
# A's log by --log/--key, B's by its site file (whose state holds no witness of A: A does not
# name B a witness); B's log is checked against what A witnessed.
expect_exit 0 "$CAPSULE" audit report --log state-a/audit.log --key site-a.pub --site b.json \
  --witness-dir state-a/witness -o report.html --json
expect_out '"witnessedSize": '"$B_SIZE"
expect_exit 7 "$CAPSULE" audit report --site b.json -o report.html
expect_exit 2 "$CAPSULE" audit report --log state-a/audit.log -o r2.html
[ ! -e r2.html ] || fail "a refused report was written"

# The browser: the DOM after the page's script ran, and a screenshot.
chrome() {
  timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$WORK/chrome" --virtual-time-budget=5000 "$@" 2>>chrome.log
}
chrome --dump-dom "file://$WORK/report.html" > dom.html || { tail chrome.log; fail "chromium --dump-dom"; }
[ -s dom.html ] || { tail chrome.log; fail "chromium dumped nothing"; }
# The table filtered by a link: #q=BOB leaves Bob's one denial.
chrome --dump-dom "file://$WORK/report.html#q=$BOB" > dom-bob.html || fail "chromium #q="
python3 - dom-bob.html "$BOB" <<'PY' || fail "the filtered table is not Bob's one entry"
import re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
body = dom[dom.index('id="events-body"'):]
body = body[:body.index("</tbody>")]
rows = re.findall(r"<tr data-site=", body)
sys.exit(0 if len(rows) == 1 and sys.argv[2] in body and "of 1 (filtered from" in dom else 1)
PY
mkdir -p "$OUT_DIR"
chrome --window-size=1400,2000 --hide-scrollbars --screenshot="$OUT_DIR/report.png" \
  "file://$WORK/report.html" >/dev/null || { tail chrome.log; fail "chromium --screenshot"; }
[ -s "$OUT_DIR/report.png" ] || fail "no screenshot"
cp report.html "$OUT_DIR/report.html"

python3 "$HERE/check_report_dom.py" dom.html site-a=a.jsonl site-b=b.jsonl \
  --planted "$IMG" --planted "$BREAKOUT" --planted "$SVG" --max-opens 3 --witnessed site-b \
  || fail "the rendered report does not match audit show --json"
echo "ok [$SCENARIO] page and screenshot: $OUT_DIR/report.html, $OUT_DIR/report.png"

# Shared helpers for the CLI scenario scripts: sourced with CAPSULE and SCENARIO set; WORK (the
# scenario's scratch folder) is read when a helper runs.

# remove_work STATUS: the last step of every runner's EXIT trap (STATUS: the runner's exit
# status). Removes the scratch folder $WORK, without crossing into a file system mounted under
# it, unless BUNKER_KEEP_TMP=1 asks to keep it for debugging; a failed runner names the folder.
remove_work() {
  [ -n "${WORK:-}" ] && [ -d "$WORK" ] || return 0
  if [ -n "${BUNKER_KEEP_TMP:-}" ] && [ "$BUNKER_KEEP_TMP" != 0 ]; then
    echo "BUNKER_KEEP_TMP: kept $WORK" >&2
    return 0
  fi
  rm -rf --one-file-system "$WORK" || echo "could not remove $WORK completely" >&2
  case "$1" in
    0 | 77) ;;
    *) echo "removed the scenario's folder $WORK (BUNKER_KEEP_TMP=1 keeps it)" >&2 ;;
  esac
}
fail() { echo "FAIL [$SCENARIO]: $*" >&2; exit 1; }
# expect_exit CODE CMD...: runs CMD, checks its exit status; stdout in $WORK/.stdout, stderr in
# $WORK/.stderr.
# Skips the scenario (exit 77, counted as skipped by ctest) when a command it needs is missing.
need() {
  command -v "$1" >/dev/null 2>&1 || { echo "SKIP [${SCENARIO:-?}]: needs the $1 command (scripts/install-deps.sh installs it)" >&2; exit 77; }
}

expect_exit() {
  local want=$1; shift
  "$@" >"$WORK/.stdout" 2>"$WORK/.stderr"
  local got=$?
  [ "$got" -eq "$want" ] || { cat "$WORK/.stderr" >&2; fail "'$*' exited $got, expected $want"; }
}
expect_err() { grep -q -- "$1" "$WORK/.stderr" || { cat "$WORK/.stderr" >&2; fail "stderr lacks '$1'"; }; }
expect_out() { grep -q -- "$1" "$WORK/.stdout" || { cat "$WORK/.stdout" >&2; fail "stdout lacks '$1'"; }; }
one_line_err() {
  local n; n=$(grep -vc '^hint:' "$WORK/.stderr")
  [ "$n" -eq 1 ] || { cat "$WORK/.stderr" >&2; fail "expected one error line, got $n"; }
}
no_leftovers() {  # no staging or partial files anywhere under $1
  local found; found=$(find "$1" -name '.*bunker*' -o -name '*.partial' | head -1)
  [ -z "$found" ] || fail "leftover $found"
}
fingerprint_of() {  # fingerprint_of NAME: creates NAME.key/.pub, prints the fingerprint
  "$CAPSULE" keygen -o "$1" --json | sed 's/.*"fingerprint": "\([^"]*\)".*/\1/'
}
# run_scenario: the last line of every runner. Runs scenario_$SCENARIO; a name with no such
# function is an error (exit 2), never a pass.
run_scenario() {
  if ! declare -F "scenario_$SCENARIO" >/dev/null; then
    echo "unknown scenario '$SCENARIO' (no function scenario_$SCENARIO in $(basename "$0"))" >&2
    exit 2
  fi
  "scenario_$SCENARIO"
  echo "ok [$SCENARIO]"
}

# share_programs: copies $CAPSULE and $CAPSULED into $WORK/bin (mode 755) and points the
# variables there, so that unprivileged test users can run them wherever the build tree lives.
share_programs() {
  mkdir -p "$WORK/bin"
  cp "$CAPSULE" "$CAPSULED" "$WORK/bin/"
  CAPSULE="$WORK/bin/$(basename "$CAPSULE")"
  CAPSULED="$WORK/bin/$(basename "$CAPSULED")"
  chmod 755 "$WORK/bin" "$CAPSULE" "$CAPSULED"
}

# ensure_users NAME...: creates each system user that does not exist yet (root only); exits 1
# naming the one that cannot be created.
ensure_users() {
  local u
  for u in "$@"; do
    id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u" \
      2>/dev/null || id "$u" >/dev/null 2>&1 || { echo "cannot create user $u" >&2; exit 1; }
  done
}

# Daemons, for the runners that start sites (set CAPSULED and DAEMON_PIDS=() first; their EXIT
# trap kills DAEMON_PIDS).
# start_site NAME SITE.json: starts a site's daemon (witnessing every 200 ms), logging to
# NAME.log; sets SITE_PORT and ${NAME^^}_PID.
start_site() {
  local before
  # The transfer listener's line (a site with a "socket" also logs "verifier listening on").
  before=$(grep -c "listening on 127.0.0.1:" "$1.log" 2>/dev/null)
  "$CAPSULED" --site "$2" --witness-interval-ms 200 >/dev/null 2>>"$1.log" &
  DAEMON_PIDS+=($!)
  eval "${1^^}_PID=$!"
  # Up to 20 s (an ASan build on a loaded machine starts slowly); a daemon that exits is
  # reported at once.
  local pid=$!
  for _ in $(seq 1 400); do
    if [ "$(grep -c "listening on 127.0.0.1:" "$1.log" 2>/dev/null)" -gt "${before:-0}" ]; then
      SITE_PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$1.log" | tail -1)
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  cat "$1.log" >&2; fail "site $1 did not start"
}
stop_site() { kill -TERM "$1"; wait "$1" 2>/dev/null; }
# wait_for FILE PATTERN: up to 20 s.
wait_for() {  # FILE may be a glob
  # shellcheck disable=SC2086
  for _ in $(seq 1 400); do grep -q -- "$2" $1 2>/dev/null && return; sleep 0.05; done
  cat "$1" >&2; fail "$1 never showed '$2'"
}

# flip_byte FILE OFFSET: changes one byte in place (xors its lowest bit), so the file always
# differs afterwards, whatever byte was there (writing a fixed byte is a no-op 1 time in 256).
flip_byte() {
  local b; b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

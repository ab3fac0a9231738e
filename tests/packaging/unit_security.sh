#!/usr/bin/env bash
# The daemon's systemd unit is sandboxed: systemd-analyze's exposure score at most 2.0, and the
# capabilities and paths spec/VERIFIER.md "Deployment" promises.
# Usage: unit_security.sh UNIT_FILE
set -uo pipefail
UNIT=$(realpath "$1")
fail() { echo "FAIL [unit_security]: $*" >&2; exit 1; }
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP [unit_security]: systemd-analyze is not installed" >&2
  exit 77
fi
out=$(cd /tmp && systemd-analyze security --offline=yes "$UNIT" 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
[ -n "$score" ] || { echo "$out" >&2; fail "no exposure score"; }
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || { echo "$out" >&2; fail "exposure $score > 2.0"; }
for line in 'User=bunker' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
            'CapabilityBoundingSet=CAP_CHOWN' 'AmbientCapabilities=CAP_CHOWN' 'LimitCORE=0' \
            'SystemCallFilter=@chown'; do
  grep -qx "$line" "$UNIT" || fail "the unit lacks $line"
done
grep -q '^ReadWritePaths=' "$UNIT" || fail "the unit does not limit its writable paths"
echo "ok [unit_security]: exposure $score"

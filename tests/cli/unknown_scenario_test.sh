#!/usr/bin/env bash
# Every CLI scenario runner fails on a scenario name it has no function for (exit 2, naming it),
# instead of passing without running anything.
# Usage: unknown_scenario_test.sh
set -u
dir=$(cd "$(dirname "$0")" && pwd)
rc=0
check() {  # check RUNNER ARGS...: runs RUNNER ARGS... no_such_scenario
  local out got
  out=$(bash "$@" no_such_scenario 2>&1)
  got=$?
  # The verifier and mount runners skip (77) first when they cannot create users or mount.
  case "$(basename "$1")" in
    verifier_scenarios.sh|mount_scenarios.sh) [ "$got" -eq 77 ] && return ;;
  esac
  if [ "$got" -ne 2 ] || ! grep -q "unknown scenario 'no_such_scenario'" <<<"$out"; then
    echo "FAIL: $(basename "$1") with an unknown scenario exited $got: $out" >&2
    rc=1
  fi
}
check "$dir/scenarios.sh" /bin/false
check "$dir/site_scenarios.sh" /bin/false
check "$dir/transfer_scenarios.sh" /bin/false /bin/false
check "$dir/verifier_scenarios.sh" /bin/false /bin/false
check "$dir/mount_scenarios.sh" /bin/false /bin/false
check "$dir/s3_read_scenarios.sh" /bin/false /bin/false
check "$dir/s3_store_scenarios.sh" /bin/false /bin/false
check "$dir/s3_hostile_scenarios.sh" /bin/false
check "$dir/seal_scenarios.sh" /bin/false /bin/false
# Every runner in the folder is covered above.
n=$(ls "$dir"/*scenarios.sh | wc -l)
[ "$n" -eq 9 ] || { echo "FAIL: $n scenario runners, this test checks 9" >&2; rc=1; }
exit $rc

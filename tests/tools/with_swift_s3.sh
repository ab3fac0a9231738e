#!/usr/bin/env bash
# Runs COMMAND... with a fresh Swift S3 server (tests/tools/swift_s3.sh) in a temporary folder,
# its AWS_* variables exported, and BUNKER_S3_DIR naming the folder; stops the server afterwards
# whatever happens, and removes the folder (BUNKER_KEEP_TMP=1 keeps it). Exits 77 (skip) when
# the Swift packages are missing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/swift_s3.sh" check || exit 77
dir=$(mktemp -d "${TMPDIR:-/tmp}/bunker-swift.XXXXXX")
cleanup() {
  "$here/swift_s3.sh" stop "$dir/server"
  if [ -n "${BUNKER_KEEP_TMP:-}" ] && [ "$BUNKER_KEEP_TMP" != 0 ]; then
    echo "BUNKER_KEEP_TMP: kept $dir" >&2
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$here/swift_s3.sh" start "$dir/server" || exit 1
eval "$("$here/swift_s3.sh" env "$dir/server")"
export BUNKER_S3_DIR=$dir
"$@"

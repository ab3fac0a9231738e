#!/usr/bin/env bash
# The CLI against a hostile S3 endpoint (tests/tools/hostile_s3.py): one clear error line, the
# documented exit status, nothing written, and the secret in no output (spec/STORE.md "Errors").
#   s3_hostile_scenarios.sh CAPSULE SCENARIO
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CAPSULE=$1
SCENARIO=$2
. "$HERE/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bunker-cli-XXXXXX")
PIDS=()
trap 'rc=$?; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; remove_work $rc' EXIT
cd "$WORK"
command -v python3 >/dev/null || { echo "python3 not installed" >&2; exit 77; }

SECRET=HOSTILExSECRETxNEVERxSHOWN
TOKEN=HOSTILExTOKENxNEVERxSHOWN
export AWS_ACCESS_KEY_ID=AKIDHOSTILE AWS_SECRET_ACCESS_KEY=$SECRET AWS_SESSION_TOKEN=$TOKEN
export AWS_MAX_ATTEMPTS=1
unset AWS_ENDPOINT_URL_S3 AWS_PROFILE

# start_hostile NAME MODE [REDIRECT_PORT]: starts the server; its port in ${NAME}_PORT.
start_hostile() {
  python3 "$HERE/../tools/hostile_s3.py" "$2" "$WORK/$1.port" "$WORK/$1.log" "${3:-}" &
  PIDS+=($!)
  for _ in $(seq 1 400); do [ -s "$WORK/$1.port" ] && break; sleep 0.05; done
  [ -s "$WORK/$1.port" ] || fail "the hostile server did not start"
  touch "$WORK/$1.log"
  printf -v "${1}_PORT" '%s' "$(cat "$WORK/$1.port")"
}
no_secret() {
  if grep -q -e "$SECRET" -e "$TOKEN" "$WORK/.stdout" "$WORK/.stderr"; then
    fail "a secret was printed"
  fi
}

scenario_s3_hostile_redirect_not_followed() {
  start_hostile other record
  start_hostile hostile redirect "$other_PORT"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$hostile_PORT"
  for url in s3://bucket/d.capsule s3://bucket/d.file; do
    expect_exit 3 "$CAPSULE" inspect "$url"
    one_line_err; expect_err "redirects are not followed"; no_secret
    grep -q passwd "$WORK/.stderr" && fail "the Location was quoted"
    expect_exit 3 "$CAPSULE" inspect "$url" --json
    no_secret
  done
  [ -s "$WORK/other.log" ] && fail "the redirect was followed: $(cat "$WORK/other.log")"
  [ -s "$WORK/hostile.log" ] || fail "the endpoint saw no request"
}

scenario_s3_hostile_lying_ranges() {
  start_hostile hostile liar
  export AWS_ENDPOINT_URL="http://127.0.0.1:$hostile_PORT"
  "$CAPSULE" keygen -o alice >/dev/null || fail "keygen"
  expect_exit 9 "$CAPSULE" inspect s3://bucket/d.capsule
  one_line_err; expect_err "malformed response"; no_secret
  expect_exit 9 "$CAPSULE" cat s3://bucket/d.capsule some/file --identity alice.key \
    --trust alice.pub
  one_line_err; expect_err "malformed response"; no_secret
  [ -s "$WORK/.stdout" ] && fail "cat wrote something"
  true
}

scenario_s3_hostile_endless_error_body() {
  start_hostile hostile flood
  export AWS_ENDPOINT_URL="http://127.0.0.1:$hostile_PORT"
  "$CAPSULE" keygen -o alice >/dev/null || fail "keygen"
  expect_exit 9 "$CAPSULE" verify s3://bucket/d.capsule --trust alice.pub
  one_line_err; expect_err "response larger than expected"; no_secret
}

# s3:// URLs of odd forms are refused before any request (exit 3, one line); a key that only
# looks like a path ("%2F", "..%2F") is a key like any other, sent encoded.
scenario_s3_hostile_odd_urls() {
  start_hostile hostile record
  export AWS_ENDPOINT_URL="http://127.0.0.1:$hostile_PORT"
  for url in 's3://bucket/../x' 's3://bucket/a/./b' 's3://bucket//x' 's3://Bucket/x' \
             's3://bu_cket/x' 's3://127.0.0.1/x' 's3://bucket' 's3://bucket/prefix/' \
             "s3://bucket/$(printf 'a\033[2Jb')" "s3://bucket/$(head -c 1100 /dev/zero | tr '\0' k)" \
             's3://user@bucket/x' 's3://bucket:80/x'; do
    expect_exit 3 "$CAPSULE" inspect "$url"
    one_line_err; no_secret
    grep -q $'\033' "$WORK/.stderr" && fail "an escape reached the terminal"
  done
  [ -s "$WORK/hostile.log" ] && fail "a request was sent: $(cat "$WORK/hostile.log")"
  expect_exit 9 "$CAPSULE" inspect 's3://bucket/a%2F..%2Fb.capsule'
  grep -q '^HEAD /bucket/a%252F..%252Fb.capsule ' "$WORK/hostile.log" ||
    fail "the key was not sent as it is: $(cat "$WORK/hostile.log")"
}

# A session token or key id with a line break would add headers to every request: refused
# before any request, without quoting it.
scenario_s3_hostile_credentials_with_line_breaks() {
  start_hostile hostile record
  export AWS_ENDPOINT_URL="http://127.0.0.1:$hostile_PORT"
  AWS_SESSION_TOKEN=$'TOKENxPART\r\nX-Injected: 1' expect_exit 3 "$CAPSULE" inspect s3://bucket/d.capsule
  one_line_err; expect_err "session token"
  grep -q TOKENxPART "$WORK/.stderr" && fail "the token was quoted"
  AWS_ACCESS_KEY_ID=$'AKID\r\nX-Injected: 1' expect_exit 3 "$CAPSULE" inspect s3://bucket/d.capsule
  one_line_err
  [ -s "$WORK/hostile.log" ] && fail "a request was sent: $(cat "$WORK/hostile.log")"
  true
}

run_scenario

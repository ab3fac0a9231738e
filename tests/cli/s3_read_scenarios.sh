#!/usr/bin/env bash
# Reading capsules straight from S3 (spec/STORE.md "Reading"), against the real Swift S3 server.
# Run through tests/tools/with_swift_s3.sh, which exports AWS_ENDPOINT_URL and the keys and
# BUNKER_S3_DIR (the server's folder; its proxy access log is server/log/access.log).
#   s3_read_scenarios.sh CAPSULE CAPSULED SCENARIO
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CAPSULE=$1
CAPSULED=$2
SCENARIO=$3
. "$HERE/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bunker-cli-XXXXXX")
DAEMON_PID=
trap 'rc=$?; [ -z "$DAEMON_PID" ] || kill -9 "$DAEMON_PID" 2>/dev/null; remove_work $rc' EXIT
cd "$WORK"

AWS=/usr/bin/aws
ACCESS_LOG=${BUNKER_S3_DIR:-}/server/log/access.log
BUCKET=bunker-read
# Short retries: an endpoint that is down fails in well under a second.
export AWS_MAX_ATTEMPTS=2

aws_() { "$AWS" --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }

setup() {
  [ -n "${AWS_ENDPOINT_URL:-}" ] ||
    { echo "AWS_ENDPOINT_URL not set (run through tests/tools/with_swift_s3.sh)" >&2; exit 77; }
  [ -x "$AWS" ] || { echo "awscli (/usr/bin/aws) not installed" >&2; exit 77; }
  mkdir -p data/train data/small
  head -c 3000000 /dev/urandom > data/train/big.bin
  printf 'hello\n' > data/small/README
  for i in $(seq 1 20); do printf 'sample %d\n' "$i" > "data/small/s$i.txt"; done
  "$CAPSULE" keygen -o issuer >/dev/null || fail "keygen issuer"
  "$CAPSULE" keygen -o alice >/dev/null || fail "keygen alice"
  "$CAPSULE" seal data -o d.capsule --sign issuer.key --to alice.pub --chunk-size 64K \
    >/dev/null 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "seal"; }
  aws_ s3 mb "s3://$BUCKET" >/dev/null 2>&1
  aws_ s3 cp d.capsule "s3://$BUCKET/caps/d.capsule" >/dev/null || fail "upload"
  URL="s3://$BUCKET/caps/d.capsule"
}

# Bytes the server sent for GETs of KEY since the access log had LINES lines. The log travels
# by UDP: first a marker request, which the one proxy process logs after every request before
# it, then a wait (up to 10 s) until the marker's line is there.
get_bytes_since() {
  local marker="/$BUCKET/.log-marker-$RANDOM$RANDOM" hostport=${AWS_ENDPOINT_URL#http://}
  hostport=${hostport%%/*}
  { exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" &&
      printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$marker" "$hostport" >&3 &&
      timeout 10 cat <&3 >/dev/null; exec 3<&-; } 2>/dev/null
  for _ in $(seq 1 200); do grep -qF -- "$marker" "$ACCESS_LOG" && break; sleep 0.05; done
  tail -n +"$(( $2 + 1 ))" "$ACCESS_LOG" | awk -v key="/$BUCKET/$1" \
    '$5 == "GET" && $6 == key && $13 ~ /^[0-9]+$/ { sum += $13 } END { print sum + 0 }'
}
log_lines() { wc -l < "$ACCESS_LOG"; }

scenario_s3_read_every_command() {
  setup
  expect_exit 0 "$CAPSULE" inspect "$URL"
  expect_out "recipients"
  "$CAPSULE" inspect d.capsule --json > local.json
  expect_exit 0 "$CAPSULE" inspect "$URL" --json
  cmp -s local.json "$WORK/.stdout" || fail "inspect of the object differs from the file's"
  expect_exit 0 "$CAPSULE" verify "$URL" --trust issuer.pub
  expect_out "OK"
  expect_exit 0 "$CAPSULE" open "$URL" --identity alice.key --trust issuer.pub --to out
  diff -r data out || fail "opened tree differs"
  expect_exit 0 "$CAPSULE" ls "$URL" --identity alice.key --trust issuer.pub
  expect_out "train/big.bin"
  "$CAPSULE" cat "$URL" train/big.bin --identity alice.key --trust issuer.pub > got || fail "cat"
  cmp -s got data/train/big.bin || fail "cat contents differ"
  expect_exit 0 "$CAPSULE" open "$URL" --identity alice.key --trust issuer.pub --to-tar t.tar
  [ -s t.tar ] || fail "no tar"
}

scenario_s3_cat_fetches_only_its_chunks() {
  setup
  size=$(stat -c %s d.capsule)
  n=$(log_lines)
  "$CAPSULE" cat "$URL" small/README --identity alice.key --trust issuer.pub > got || fail "cat"
  [ "$(cat got)" = hello ] || fail "cat contents"
  small=$(get_bytes_since caps/d.capsule "$n")
  n=$(log_lines)
  expect_exit 0 "$CAPSULE" verify "$URL" --trust issuer.pub
  all=$(get_bytes_since caps/d.capsule "$n")
  echo "cat of one small file fetched $small bytes; verify fetched $all; the capsule is $size"
  [ "$all" -ge "$size" ] || fail "verify fetched $all bytes of $size (is the access log working?)"
  [ "$small" -gt 0 ] && [ "$small" -lt $(( size / 4 )) ] ||
    fail "cat of one small file fetched $small bytes of a $size-byte capsule"
}

scenario_s3_large_file_fetched_once() {
  setup
  # A file over the in-memory limit (8 MiB): a checking pass, then the writing pass, which reads
  # the chunks the first pass kept in a release spool (site/chunk_spool.h), not the object.
  head -c 20000000 /dev/urandom > data/train/big.bin
  "$CAPSULE" seal data -o big.capsule --sign issuer.key --to alice.pub --chunk-size 64K \
    >/dev/null 2>&1 || fail "seal"
  aws_ s3 cp big.capsule "$URL" >/dev/null || fail "upload"
  mkdir spool
  n=$(log_lines)
  TMPDIR="$WORK/spool" "$CAPSULE" cat "$URL" train/big.bin --identity alice.key \
    --trust issuer.pub > got || fail "cat"
  once=$(get_bytes_since caps/d.capsule "$n")
  cmp -s got data/train/big.bin || fail "cat contents differ"
  [ -z "$(ls -A spool)" ] || fail "the spool left a file behind"
  echo "cat of a 20000000-byte file fetched $once bytes"
  [ "$once" -ge 20000000 ] && [ "$once" -lt 24000000 ] ||
    fail "cat of a 20000000-byte file fetched $once bytes (each chunk once: about 20 MB)"
  # The whole archive to stdout: checked, then written from the spool.
  n=$(log_lines)
  TMPDIR="$WORK/spool" "$CAPSULE" open "$URL" --identity alice.key --trust issuer.pub \
    --to-tar - > t.tar || fail "open --to-tar -"
  tar_once=$(get_bytes_since caps/d.capsule "$n")
  [ "$tar_once" -lt 26000000 ] || fail "open --to-tar - fetched $tar_once bytes (once: ~23 MB)"
  mkdir x && tar -xf t.tar -C x && cmp -s x/train/big.bin data/train/big.bin ||
    fail "the archive's big.bin differs"
  # No room for a spool: a stream is refused before it reads the file (nothing written, exit
  # 8); a release into a new folder fetches the object twice and is still exact.
  n=$(log_lines)
  TMPDIR="$WORK/no-such-folder" "$CAPSULE" cat "$URL" train/big.bin --identity alice.key \
    --trust issuer.pub > got2 2>"$WORK/.stderr"
  [ $? -eq 8 ] || { cat "$WORK/.stderr"; fail "cat without a spool did not exit 8"; }
  expect_err "no room in"
  [ ! -s got2 ] || fail "cat without a spool wrote something"
  twice=$(get_bytes_since caps/d.capsule "$n")
  [ "$twice" -lt 20000000 ] || fail "cat without a spool read the file ($twice bytes)"
  TMPDIR="$WORK/no-such-folder" "$CAPSULE" open "$URL" --identity alice.key --trust issuer.pub \
    --to out2 >/dev/null || fail "open --to without a spool"
  cmp -s out2/train/big.bin data/train/big.bin || fail "open --to without a spool: contents differ"
  # A corrupted chunk near the end of the file: nothing of it comes out.
  size=$(stat -c %s big.capsule)
  cp big.capsule bad.capsule
  flip_byte bad.capsule $((size - 2000000))
  aws_ s3 cp bad.capsule "$URL" >/dev/null || fail "rewrite"
  TMPDIR="$WORK/spool" "$CAPSULE" cat "$URL" train/big.bin --identity alice.key \
    --trust issuer.pub > bad.out 2>"$WORK/.stderr"
  code=$?
  [ "$code" -eq 4 ] || { cat "$WORK/.stderr" >&2; fail "cat of a corrupted object exited $code"; }
  [ ! -s bad.out ] || fail "cat of a corrupted object wrote $(stat -c %s bad.out) bytes"
}

scenario_s3_corrupted_object_is_refused() {
  setup
  cp d.capsule bad.capsule
  # One byte inside chunk 2 (64 KiB chunks + 16-byte tags after a 16-byte header).
  flip_byte bad.capsule $((16 + 2 * (65536 + 16) + 100))
  aws_ s3 cp bad.capsule "$URL" >/dev/null || fail "rewrite"
  expect_exit 4 "$CAPSULE" verify "$URL" --trust issuer.pub
  expect_err "chunk 2 of"
  one_line_err
  expect_exit 4 "$CAPSULE" open "$URL" --identity alice.key --trust issuer.pub --to out
  [ ! -e out ] || fail "destination created from a corrupted object"
  no_leftovers .
  # A truncated object, as a truncated file.
  head -c 100000 d.capsule > cut.capsule
  aws_ s3 cp cut.capsule "$URL" >/dev/null || fail "rewrite"
  expect_exit 4 "$CAPSULE" verify "$URL" --trust issuer.pub
  one_line_err
}

scenario_s3_rewritten_while_read_fails() {
  setup
  # A reader (one thread) of a file too large to be held in memory (over 8 MiB: a checking
  # pass, then a writing pass that blocks on the pipe), rewritten under it. What was checked is
  # kept in the release spool, so the writing pass never fetches again: the output is the whole
  # file as checked (exit 0), or, when the rewrite landed in the checking pass, nothing (exit 9).
  head -c 70000000 /dev/urandom > data/train/big.bin
  "$CAPSULE" seal data -o big.capsule --sign issuer.key --to alice.pub --chunk-size 64K \
    >/dev/null 2>&1 || fail "seal"
  aws_ s3 cp big.capsule "$URL" >/dev/null || fail "upload"
  # The writing pass blocks on a full pipe until the object is rewritten; its next GET must
  # fail (the file is larger than the reader's read-ahead, 16 MiB: the rest is fetched after
  # the rewrite). Or the rewrite lands in the checking pass, which fails the same way.
  mkdir -p "$WORK/spool"
  ( TMPDIR="$WORK/spool" "$CAPSULE" cat "$URL" train/big.bin --identity alice.key \
      --trust issuer.pub --threads 1 2>"$WORK/.stderr"; echo $? > code ) |
    { while [ ! -f rewritten ]; do sleep 0.1; done; cat > got; } &
  pid=$!
  sleep 1
  aws_ s3 cp d.capsule "$URL" >/dev/null || { touch rewritten; fail "rewrite"; }
  touch rewritten
  wait $pid
  code=$(cat code)
  if [ "$code" -eq 0 ]; then
    cmp -s got data/train/big.bin || fail "exit 0, but the output is not the file as checked"
  else
    [ "$code" -eq 9 ] || { cat "$WORK/.stderr" >&2; fail "a read across a rewrite exited $code, expected 0 or 9"; }
    [ ! -s got ] || fail "a failed read wrote $(stat -c %s got) bytes"
    expect_err "changed while reading"
  fi
}

scenario_s3_errors() {
  setup
  expect_exit 6 "$CAPSULE" inspect "s3://$BUCKET/caps/absent.capsule"
  expect_err "not found"
  one_line_err
  expect_exit 6 "$CAPSULE" verify "s3://no-such-bucket-x/d.capsule" --trust issuer.pub
  expect_exit 3 "$CAPSULE" inspect "s3://Bad_Bucket/d.capsule"
  expect_err "invalid S3 bucket name"
  expect_exit 3 "$CAPSULE" inspect "s3://$BUCKET/../etc/passwd"
  AWS_SECRET_ACCESS_KEY=wrong-secret-xyzzy expect_exit 5 "$CAPSULE" inspect "$URL"
  expect_err "access denied by"
  expect_err "wrong key or secret"
  ! grep -q xyzzy "$WORK/.stderr" || fail "the secret was printed"
  AWS_ENDPOINT_URL=http://127.0.0.1:9 expect_exit 9 "$CAPSULE" inspect "$URL"
  expect_err "cannot reach"
  # No credentials at all: a clear error, not an unsigned request.
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
    "$CAPSULE" inspect "$URL" >/dev/null 2>"$WORK/.stderr"
  [ $? -eq 6 ] || fail "no credentials should exit 6"
  expect_err "no S3 credentials"
  # A credentials file others can read is refused.
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > creds
  chmod 644 creds
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE="$WORK/creds" \
    "$CAPSULE" inspect "$URL" >/dev/null 2>"$WORK/.stderr"
  [ $? -eq 5 ] || fail "a world-readable credentials file should exit 5"
  expect_err "chmod 600"
  chmod 600 creds
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE="$WORK/creds" \
    "$CAPSULE" inspect "$URL" >/dev/null 2>"$WORK/.stderr" || fail "the shared credentials file"
}

# Store and forward from object storage: `capsule send s3://...` reads the object with ranged GETs
# and the receiving daemon stores the same bytes.
scenario_s3_send_from_object() {
  setup
  for k in site-a site-b; do "$CAPSULE" keygen -o $k >/dev/null; done
  rm -f d.capsule
  "$CAPSULE" seal data -o d.capsule --sign issuer.key --to site-b.pub --chunk-size 64K \
    >/dev/null 2>&1 || fail "seal"
  aws_ s3 cp d.capsule "$URL" >/dev/null || fail "upload"
  cat > a.json <<'JSON'
{"site": "site-a", "identity": "site-a.key", "trust": ["issuer.pub"], "destinations": ["land"],
 "state": "state-a", "peers": ["site-b.pub"], "store": "store-a"}
JSON
  cat > b.json <<'JSON'
{"site": "site-b", "identity": "site-b.key", "trust": ["issuer.pub"], "destinations": ["land"],
 "state": "state-b", "listen": "127.0.0.1:0", "peers": ["site-a.pub"], "store": "store-b"}
JSON
  : > b.log
  "$CAPSULED" --site b.json 2>>b.log &
  DAEMON_PID=$!
  for _ in $(seq 1 400); do
    PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' b.log | tail -1)
    [ -n "$PORT" ] && break
    sleep 0.05
  done
  [ -n "${PORT:-}" ] || { cat b.log; fail "daemon did not start"; }
  expect_exit 0 "$CAPSULE" send "$URL" --to "127.0.0.1:$PORT" --site a.json
  cmp -s d.capsule "$(ls store-b/*.capsule | head -1)" || fail "stored capsule differs"
  expect_exit 6 "$CAPSULE" send "s3://$BUCKET/caps/absent.capsule" --to "127.0.0.1:$PORT" --site a.json
  expect_err "not found"
  kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=
}

# A site whose store is the bucket, with its verifier service on a socket: the data user's
# requests name the object (s3://...), the daemon reads it with its own credentials.
start_store_site() {
  setup
  "$CAPSULE" keygen -o site-b >/dev/null || fail "keygen site-b"
  rm -f d.capsule
  "$CAPSULE" seal data -o d.capsule --sign issuer.key --to site-b.pub --chunk-size 64K \
    >/dev/null 2>&1 || fail "seal"
  ID=$("$CAPSULE" inspect d.capsule --json | sed -n 's/^{"capsule": "\([0-9a-f]*\)".*/\1/p')
  SITE_URL="s3://$BUCKET/store/$ID.capsule"
  aws_ s3 cp d.capsule "$SITE_URL" >/dev/null || fail "upload"
  mkdir -p land run
  cat > b.json <<JSON
{"site": "site-b", "identity": "site-b.key", "trust": ["issuer.pub"], "destinations": ["land"],
 "state": "state-b", "store": "s3://$BUCKET/store", "socket": "$WORK/run/verifier.sock"}
JSON
  : > b.log
  "$CAPSULED" --site b.json 2>>b.log &
  DAEMON_PID=$!
  for _ in $(seq 1 400); do
    grep -q "verifier listening" b.log && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat b.log; fail "daemon exited at start"; }
    sleep 0.05
  done
  grep -q "verifier listening" b.log || { cat b.log; fail "daemon did not start"; }
}

scenario_s3_site_serves_its_store() {
  start_store_site
  expect_exit 0 "$CAPSULE" ls "$SITE_URL" --site b.json
  expect_out "train/big.bin"
  "$CAPSULE" cat "$SITE_URL" small/README --site b.json > got || fail "cat through the site"
  [ "$(cat got)" = hello ] || fail "cat through the site gave $(cat got)"
  expect_exit 0 "$CAPSULE" open "$SITE_URL" --site b.json --to land/out
  diff -r data land/out || fail "opened tree differs"
  # Outside the site's store: refused, nothing read with the site's credentials.
  aws_ s3 cp d.capsule "s3://$BUCKET/elsewhere/$ID.capsule" >/dev/null || fail "upload"
  "$CAPSULE" ls "s3://$BUCKET/elsewhere/$ID.capsule" --site b.json >/dev/null 2>err &&
    fail "a capsule outside the site's store was served"
  grep -q "store" err || fail "refusal does not name the store: $(cat err)"
}

scenario_s3_site_mounts_from_its_store() {
  [ -e /dev/fuse ] || { echo "skipped: /dev/fuse is missing (FUSE mount)"; exit 77; }
  command -v fusermount3 >/dev/null || { echo "skipped: fusermount3 (fuse3) is missing"; exit 77; }
  start_store_site
  mkdir -p mnt
  if ! "$CAPSULE" mount "$SITE_URL" mnt --site b.json >"$WORK/.stdout" 2>"$WORK/.stderr"; then
    if grep -qi "fuse" "$WORK/.stderr"; then
      echo "skipped: this machine cannot mount FUSE: $(cat "$WORK/.stderr")"; exit 77
    fi
    cat "$WORK/.stderr"; fail "mount from s3:// failed"
  fi
  cmp -s mnt/train/big.bin data/train/big.bin || { "$CAPSULE" umount mnt; fail "mounted file differs"; }
  [ "$(cat mnt/small/README)" = hello ] || { "$CAPSULE" umount mnt; fail "mounted README differs"; }
  expect_exit 0 "$CAPSULE" umount mnt
}

run_scenario

#!/usr/bin/env bash
# capsule mount (site/mount.h): a real capsuled running as its own system user serves a FUSE
# mount that root made (/dev/fuse is root's only on these machines), and a second, unprivileged
# uid tries to get in. Needs root, setpriv, useradd, fusermount3 and a working /dev/fuse; exits
# 77 (skipped) with a message otherwise.
# Usage: mount_scenarios.sh CAPSULE_BINARY CAPSULED_BINARY SCENARIO
set -uo pipefail
CAPSULE=$1
CAPSULED=$2
SCENARIO=$3
SITE_USER=bunker-test-site
USER_B=bunker-test-bob

skip() { echo "SKIP [$SCENARIO]: $*" >&2; exit 77; }
if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null || ! command -v useradd >/dev/null; then
  skip "needs root, setpriv and useradd to run the daemon and a second user as real users"
fi
command -v fusermount3 >/dev/null || skip "needs fusermount3 (Debian package fuse3)"
[ -c /dev/fuse ] || skip "needs /dev/fuse (FUSE is not available here)"
. "$(dirname "$0")/lib.sh"
ensure_users "$SITE_USER" "$USER_B"

WORK=$(mktemp -d /tmp/bunker-mount-XXXXXX)
chmod 755 "$WORK"
DAEMON_PID=""
cleanup() {
  local rc=$?
  for m in "$WORK"/mnt*; do
    [ -d "$m" ] && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }
  done
  [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
  sleep 0.2
  remove_work $rc
}
trap cleanup EXIT
share_programs
cd "$WORK"

as_bob() { setpriv --reuid "$USER_B" --regid "$USER_B" --init-groups -- "$@"; }
is_mounted() { grep -q " $WORK/$1 fuse" /proc/mounts; }
# Waits up to $2 seconds (default 10) for mount point $1 to be gone.
wait_unmounted() {
  for _ in $(seq 1 $(( ${2:-10} * 20 ))); do is_mounted "$1" || return 0; sleep 0.05; done
  return 1
}
audit_json() { "$CAPSULE" audit show --site site.json --json 2>/dev/null; }
# Waits for the audit log to hold a record matching $1.
wait_audit() {
  for _ in $(seq 1 400); do audit_json | grep -q -- "$1" && return 0; sleep 0.05; done
  audit_json; fail "the audit log holds no record matching $1"
}

# A site whose key and state belong to the daemon's user and a capsule of data/. $1: rules.
setup() {
  for k in owner site; do [ -f $k.key ] || "$CAPSULE" keygen -o $k >/dev/null; done
  mkdir -p data/train/deep/er data/pii run state mnt mnt2 landing
  printf 'row 1\n' > data/train/a.csv
  printf 'row 2\n' > data/train/b.csv
  printf 'MARKER-%s\n' "$RANDOM$RANDOM" > data/train/marker.txt
  chmod 640 data/train/b.csv
  printf 'secret\n' > data/pii/names.csv
  head -c 1000000 /dev/urandom > data/train/big.bin
  head -c 3000000 /dev/urandom > data/train/deep/er/huge.bin
  : > data/train/empty
  ln -s a.csv data/train/link.csv
  touch -d '2021-02-03 04:05:06' data/train/a.csv
  printf '{"version": 1, "rules": [%s]}\n' "$1" > policy.json
  "$CAPSULE" seal data -o d.capsule --sign owner.key --to site.pub --policy policy.json \
    --chunk-size 64K >/dev/null 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "seal"; }
  cat > site.json <<JSON
{ "site": "site-b", "identity": "site.key", "trust": ["owner.pub"], "state": "state",
  "destinations": ["landing"],
  "socket": "run/verifier.sock"${SITE_EXTRA:-} }
JSON
  chown "$SITE_USER" site.key state run
  chmod 700 state
  chmod 755 run
  chmod 644 d.capsule site.json ./*.pub
  start_daemon
}

start_daemon() {
  : > daemon.log
  chmod 666 daemon.log
  setpriv --reuid "$SITE_USER" --regid "$SITE_USER" --init-groups -- \
    "$CAPSULED" --site site.json 2>>daemon.log &
  DAEMON_PID=$!
  for _ in $(seq 1 400); do
    grep -q 'verifier listening' daemon.log && return
    sleep 0.05
  done
  cat daemon.log; fail "the daemon did not start"
}

# capsule mount CAPSULE MNT ...; skips when this machine cannot mount FUSE at all.
mount_capsule() {
  local capsule=$1 mnt=$2; shift 2
  "$CAPSULE" mount "$capsule" "$mnt" --site site.json "$@" >"$WORK/.stdout" 2>"$WORK/.stderr"
  local rc=$?
  if [ $rc -ne 0 ] && grep -q -e '/dev/fuse' -e 'fusermount3 is not' "$WORK/.stderr"; then
    skip "FUSE mounts do not work here: $(cat "$WORK/.stderr")"
  fi
  return $rc
}

scenario_mount_serves_permitted_files() {
  setup '{"id": "all", "effect": "permit"}, {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}'
  mount_capsule d.capsule mnt || { cat "$WORK/.stderr"; fail "mount"; }
  expect_out 'mounted'
  is_mounted mnt || fail "nothing is mounted"
  # Every permitted file's content and metadata equal the source; forbidden names are absent.
  diff -r data/train mnt/train || fail "mounted files differ from the source"
  [ "$(ls mnt)" = "train" ] || fail "the mount shows $(ls mnt), not only train"
  [ ! -e mnt/pii ] || fail "a forbidden folder is visible"
  [ ! -e mnt/pii/names.csv ] || fail "a forbidden file is visible"
  (cd data/train && find . -type f | sort | while read -r f; do
    for fmt in %s %Y %a; do
      [ "$(stat -c $fmt "$f")" = "$(stat -c $fmt "../../mnt/train/$f")" ] ||
        { echo "FAIL [$SCENARIO]: $f: stat $fmt differs" >&2; exit 1; }
    done
  done) || exit 1
  [ "$(readlink mnt/train/link.csv)" = "a.csv" ] || fail "symlink target differs"
  # Read-only.
  expect_exit 1 touch mnt/train/new
  expect_exit 2 sh -c 'echo x >> mnt/train/a.csv'
  # Random access inside a large file, across chunk boundaries.
  cmp <(dd if=data/train/deep/er/huge.bin bs=1 skip=65530 count=100000 status=none) \
      <(dd if=mnt/train/deep/er/huge.bin bs=1 skip=65530 count=100000 status=none) ||
    fail "a random read differs"
  # A second uid cannot read the mount, nor list it.
  as_bob cat mnt/train/a.csv >/dev/null 2>&1 && fail "another uid read the mount"
  as_bob ls mnt >/dev/null 2>&1 && fail "another uid listed the mount"
  # The daemon knows the mount.
  expect_exit 0 "$CAPSULE" mounts --site site.json
  expect_out "$WORK/mnt"
  # The permit was recorded before; the summary at unmount.
  audit_json | grep -q '"decision": "permit"' || fail "no permit on record"
  expect_exit 0 "$CAPSULE" umount mnt
  wait_unmounted mnt || fail "still mounted after umount"
  wait_audit '"event": "mount-ended"'
  audit_json | grep -q 'files opened: [1-9]' || { audit_json; fail "no usage in the summary"; }
  audit_json | grep -q 'bytes read: [1-9]' || fail "no bytes in the summary"
  expect_exit 0 "$CAPSULE" mounts --site site.json
  expect_out 'no live mounts'
  # Not mounted any more: fusermount3 refuses. A path that does not exist is "not found".
  "$CAPSULE" umount mnt 2>/dev/null && fail "umount of a mount point that is not mounted succeeded"
  expect_exit 6 "$CAPSULE" umount nowhere
  one_line_err
  # Only an empty directory is a mount point: a file or a folder with files in it is refused
  # before anything is decided or recorded.
  local before; before=$(audit_json | grep -c '"decision"')
  : > plain-file
  mkdir full && : > full/keep
  expect_exit 3 "$CAPSULE" mount d.capsule plain-file --site site.json
  expect_err 'not a directory'
  expect_exit 7 "$CAPSULE" mount d.capsule full --site site.json
  expect_err 'not empty'
  [ -e full/keep ] || fail "the folder's file is gone"
  [ "$(audit_json | grep -c '"decision"')" -eq "$before" ] || fail "a refused mount point was decided"
}

scenario_mount_counts_one_open_and_denies_after() {
  setup '{"id": "once", "effect": "permit", "maxOpens": 1}'
  mount_capsule d.capsule mnt || { cat "$WORK/.stderr"; fail "mount"; }
  [ "$(cat mnt/train/a.csv)" = "row 1" ] || fail "cannot read the first mount"
  # The one use is spent: a second mount is denied and leaves nothing mounted.
  mount_capsule d.capsule mnt2 && fail "a second mount was permitted past maxOpens"
  expect_err 'denied'
  sleep 0.5
  is_mounted mnt2 && fail "a denied mount stayed mounted"
  fusermount3 -u mnt || fail "fusermount3 -u"
  wait_audit '"event": "mount-ended"'
  [ "$(audit_json | grep -c '"decision": "deny"')" -ge 1 ] || fail "the deny is not on record"
}

scenario_mount_corrupt_chunk_gives_eio() {
  setup '{"id": "all", "effect": "permit"}'
  mount_capsule d.capsule mnt || { cat "$WORK/.stderr"; fail "mount"; }
  # The archive holds train/big.bin (1 MB) before train/deep/er/huge.bin (3 MB): a byte flipped
  # in the capsule at 3 MB lands in a chunk of huge.bin only.
  local size; size=$(stat -c %s d.capsule)
  [ "$size" -gt 4000000 ] || fail "unexpected capsule size $size"
  flip_byte d.capsule 3000000
  cat mnt/train/deep/er/huge.bin >/dev/null 2>"$WORK/.stderr" && fail "a corrupt chunk was served"
  expect_err 'Input/output error'
  # Every other file still reads, byte for byte.
  for f in a.csv b.csv big.bin marker.txt empty; do
    cmp data/train/$f mnt/train/$f || fail "$f is unreadable or wrong after an unrelated corruption"
  done
  # Reads that do not need the bad chunk succeed too.
  cmp <(head -c 65536 data/train/deep/er/huge.bin) <(dd if=mnt/train/deep/er/huge.bin bs=65536 count=1 iflag=direct status=none) ||
    fail "the first chunk of the damaged file is not served"
  fusermount3 -u mnt
}

scenario_mount_ends_at_not_after() {
  # Room for set-up, a daemon start and a mount on a loaded machine (ASan) before notAfter;
  # then the wait runs to just past it, whatever the set-up took.
  local until; until=$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%SZ)
  setup "{\"id\": \"soon\", \"effect\": \"permit\", \"notAfter\": \"$until\"}"
  mount_capsule d.capsule mnt || { cat "$WORK/.stderr"; fail "mount"; }
  cmp data/train/big.bin mnt/train/big.bin || fail "cannot read before notAfter"
  exec 3< mnt/train/deep/er/huge.bin
  local left=$(( $(date -d "$until" +%s) - $(date +%s) + 2 ))
  if [ "$left" -gt 0 ]; then sleep "$left"; fi
  # Reads fail (the open file included) and the mount is gone by itself.
  cat mnt/train/a.csv >/dev/null 2>&1 && fail "a read succeeded after notAfter"
  head -c 10 <&3 >/dev/null 2>&1 && fail "an open file still reads after notAfter"
  exec 3<&-
  wait_unmounted mnt 10 || fail "the mount did not end by itself"
  wait_audit 'ended: notAfter'
}

# One uid's mounts share the site's decrypted-chunk budget (not 16 times it): a second mount
# gets what the first left, here nothing, and still serves every byte.
scenario_mount_cache_is_shared_by_a_uids_mounts() {
  setup '{"id": "all", "effect": "permit"}'
  mount_capsule d.capsule mnt || { cat "$WORK/.stderr"; fail "mount"; }
  mount_capsule d.capsule mnt2 --cache-mib 8 || { cat "$WORK/.stderr"; fail "second mount"; }
  grep -q "at $WORK/mnt: decrypted-chunk cache up to 256 MiB" daemon.log || { cat daemon.log; fail "the first mount's cache"; }
  grep -q "at $WORK/mnt2: decrypted-chunk cache up to 0 MiB" daemon.log || { cat daemon.log; fail "the second mount's cache"; }
  cmp data/train/deep/er/huge.bin mnt2/train/deep/er/huge.bin || fail "the mount without a cache differs"
  fusermount3 -u mnt || fail "fusermount3 -u"
  wait_unmounted mnt || fail "still mounted"
  fusermount3 -u mnt2
  # The budget came back with the first mount.
  for _ in $(seq 1 100); do "$CAPSULE" mounts --site site.json | grep -q "$WORK/mnt " || break; sleep 0.05; done
  mount_capsule d.capsule mnt || { cat "$WORK/.stderr"; fail "mount again"; }
  [ "$(grep -c "at $WORK/mnt: decrypted-chunk cache up to 256 MiB" daemon.log)" -eq 2 ] ||
    { cat daemon.log; fail "the budget was not given back"; }
  fusermount3 -u mnt
}

scenario_mount_daemon_killed_leaves_nothing() {
  setup '{"id": "all", "effect": "permit"}'
  mount_capsule d.capsule mnt || { cat "$WORK/.stderr"; fail "mount"; }
  local marker; marker=$(cat data/train/marker.txt)
  [ "$(cat mnt/train/marker.txt)" = "$marker" ] || fail "cannot read the marker"
  cat mnt/train/deep/er/huge.bin >/dev/null || fail "cannot read huge.bin"
  kill -9 "$DAEMON_PID"
  wait "$DAEMON_PID" 2>/dev/null
  DAEMON_PID=""
  # The mount point is dead at once (ENOTCONN), then detached by fusermount3's auto-unmount.
  local out; out=$(cat mnt/train/a.csv 2>&1) && fail "the mount still serves after kill -9"
  case "$out" in
    *"not connected"*|*"No such file"*) ;;
    *) fail "unexpected error after kill -9: $out" ;;
  esac
  wait_unmounted mnt 10 || { fusermount3 -u -z mnt; fail "the dead mount stayed mounted"; }
  # No plaintext on disk where the daemon could write: its state, the work folder, temp dirs.
  rm -rf data
  if grep -r -l -F "$marker" "$WORK" /var/tmp /dev/shm 2>/dev/null; then
    fail "plaintext found on disk"
  fi
}

# examples/train_on_mount: worker processes train on a mounted capsule; the site file's
# "mountCacheMiB" bounds the daemon's cache (and capsuled's flag overrides it).
scenario_mount_example_trains_with_workers() {
  command -v python3 >/dev/null || skip "needs python3 for the example"
  local example; example="$(cd "$(dirname "$0")/../.." && pwd)/examples/train_on_mount"
  mkdir -p data
  python3 "$example/make_data.py" data/samples --samples 600 >/dev/null || fail "make_data.py"
  SITE_EXTRA=', "mountCacheMiB": 8' \
    setup '{"id": "all", "effect": "permit"}, {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}'
  grep -q 'cache up to 8 MiB per uid, 32 MiB for all uids' daemon.log || { cat daemon.log; fail "mountCacheMiB not used"; }
  expect_exit 2 "$CAPSULED" --site site.json --mount-cache-mib 0
  expect_err 'mount-cache-mib must be'
  mount_capsule d.capsule mnt || { cat "$WORK/.stderr"; fail "mount"; }
  python3 "$example/train.py" mnt/samples --workers 4 --epochs 2 --batch 16 \
    >"$WORK/.stdout" 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "train.py on the mount"; }
  cat "$WORK/.stdout"
  expect_out 'epoch 2: 600 samples'
  expect_out 'read 1200 files'
  local workers; workers=$(sed -n 's/.* with \([0-9]*\) worker processes.*/\1/p' "$WORK/.stdout")
  [ "${workers:-0}" -ge 2 ] || fail "the example read with ${workers:-no} worker processes, not several"
  local accuracy; accuracy=$(sed -n 's/^epoch 2: .*accuracy \([0-9.]*\)$/\1/p' "$WORK/.stdout")
  awk -v a="$accuracy" 'BEGIN {exit !(a >= 0.9)}' || fail "accuracy $accuracy after two epochs"
  # Forbidden files stay invisible to the job too.
  python3 "$example/train.py" mnt/pii --workers 2 --epochs 1 >/dev/null 2>&1 &&
    fail "the example found samples in a forbidden folder"
  expect_exit 0 "$CAPSULE" umount mnt
  wait_unmounted mnt || fail "still mounted after umount"
  wait_audit 'files opened: 600 (opens: 1200)'
  # A daemon started with --mount-cache-mib uses it instead of the site file's.
  kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
  setpriv --reuid "$SITE_USER" --regid "$SITE_USER" --init-groups -- \
    "$CAPSULED" --site site.json --mount-cache-mib 32 2>daemon.log &
  DAEMON_PID=$!
  for _ in $(seq 1 400); do grep -q 'verifier listening' daemon.log && break; sleep 0.05; done
  grep -q 'cache up to 32 MiB per uid, 128 MiB for all uids' daemon.log || { cat daemon.log; fail "--mount-cache-mib not used"; }
}

run_scenario

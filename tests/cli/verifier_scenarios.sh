#!/usr/bin/env bash
# The bunker's walls (spec/VERIFIER.md): a real capsuled running as its own system user serves a
# real unprivileged user over the site's Unix socket. Needs root (to create the users and drop to
# them with setpriv); exits 77 (skipped) with a message otherwise.
# Usage: verifier_scenarios.sh CAPSULE_BINARY CAPSULED_BINARY SCENARIO
set -uo pipefail
CAPSULE=$1
CAPSULED=$2
SCENARIO=$3
SITE_USER=bunker-test-site
USER_A=bunker-test-alice
USER_B=bunker-test-bob

if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null || ! command -v useradd >/dev/null; then
  echo "SKIP [$SCENARIO]: needs root, setpriv and useradd to run the daemon and a user as real users" >&2
  exit 77
fi
. "$(dirname "$0")/lib.sh"
ensure_users "$SITE_USER" "$USER_A" "$USER_B"

# The binaries must be reachable by the unprivileged users.
WORK=$(mktemp -d /tmp/bunker-verifier-XXXXXX)
chmod 755 "$WORK"
DAEMON_PID=""
cleanup() {
  local rc=$?
  [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
  pkill -9 -u "$USER_A" 2>/dev/null
  mountpoint -q "$WORK/small" 2>/dev/null && umount "$WORK/small"
  remove_work $rc
}
trap cleanup EXIT
share_programs
cd "$WORK"

as_user() { local u=$1; shift; setpriv --reuid "$u" --regid "$u" --init-groups -- "$@"; }
as_alice() { as_user "$USER_A" "$@"; }

# A site whose key and state belong to the daemon's user, a landing folder every user can write
# (sticky, like /tmp: users can plant symlinks there), and a capsule. $1: policy rules.
setup() {
  for k in owner site alice bob; do [ -f $k.key ] || "$CAPSULE" keygen -o $k >/dev/null; done
  mkdir -p data/train data/pii run state landing outside
  printf 'row 1\n' > data/train/a.csv
  printf 'row 2\n' > data/train/b.csv
  printf 'secret\n' > data/pii/names.csv
  head -c "${DATA_BYTES:-100000}" /dev/urandom > data/train/big.bin
  printf '{"version": 1, "rules": [%s]}\n' "$1" > policy.json
  "$CAPSULE" seal data -o d.capsule --sign owner.key --to site.pub --policy policy.json \
    --chunk-size 64K >/dev/null 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "seal"; }
  cat > site.json <<JSON
{ "site": "site-b", "identity": "site.key", "trust": ["owner.pub"], "destinations": ["landing"],
  "state": "state", "socket": "run/verifier.sock" ${SITE_EXTRA:-} }
JSON
  chown "$SITE_USER" site.key state run
  chmod 700 state
  chmod 755 run
  chmod 1777 landing
  chmod 755 outside
  chmod 644 d.capsule site.json ./*.pub
  chown "$USER_A" alice.key
  start_daemon
}

start_daemon() {
  : > daemon.log
  chmod 666 daemon.log
  # umask 077 as in packaging/capsuled.service.
  (umask 077; exec setpriv --reuid "$SITE_USER" --regid "$SITE_USER" --init-groups --inh-caps +chown \
    --ambient-caps +chown -- "$CAPSULED" --site site.json 2>>daemon.log) &
  DAEMON_PID=$!
  for _ in $(seq 1 400); do
    grep -q 'verifier listening' daemon.log && return
    sleep 0.05
  done
  cat daemon.log; fail "the daemon did not start"
}

open_as_alice() { as_alice "$CAPSULE" open d.capsule --site site.json "$@"; }
nothing_outside() {
  [ -z "$(ls -A outside)" ] || fail "bytes landed outside the destinations: $(ls -A outside)"
}

scenario_verifier_user_holds_no_key_and_no_state() {
  setup '{"id": "all", "effect": "permit"}'
  expect_exit 1 as_alice cat site.key
  expect_exit 1 as_alice touch state/x
  as_alice ls state >/dev/null 2>&1 && fail "the user can list the state folder"
  # Without the service, the user cannot decide: the key is not theirs to read.
  expect_exit 5 open_as_alice --direct --to landing/direct
  expect_err 'site.key'
  [ ! -e landing/direct ] || fail "released without the key"
  # The site's audit log is not hers either: she is told who may read it.
  expect_exit 0 open_as_alice --to landing/one
  expect_exit 5 as_alice "$CAPSULE" audit show --site site.json
  expect_err 'cannot open'
  expect_err "hint: a site's audit log is its user's alone: run this as root or as $SITE_USER (sudo -u $SITE_USER capsule audit"
  expect_exit 5 as_alice "$CAPSULE" audit verify --log state/audit.log --key site.pub
  expect_err "hint: a site's audit log is its user's alone"
}

# A second daemon of the same site (the same state) refuses to start before it touches the
# first one's socket or its running releases' staging folders; the first keeps serving.
scenario_verifier_second_daemon_refuses() {
  setup '{"id": "all", "effect": "permit"}'
  mkdir -m 700 landing/.held.bunker-AAAAAA && chown "$SITE_USER" landing/.held.bunker-AAAAAA
  local rc=0
  setpriv --reuid "$SITE_USER" --regid "$SITE_USER" --init-groups -- \
    "$CAPSULED" --site site.json >second.out 2>second.err || rc=$?
  [ "$rc" -eq 10 ] || { cat second.err; fail "a second daemon exited $rc, expected 10"; }
  grep -q 'another capsuled serves site site-b' second.err || { cat second.err; fail "no clear line"; }
  [ -d landing/.held.bunker-AAAAAA ] || fail "the second daemon swept the first one's staging folder"
  kill -0 "$DAEMON_PID" || fail "the first daemon died"
  expect_exit 0 open_as_alice --to landing/after
}

# capsuled started by another user than the one its state belongs to (root, by hand) refuses
# before it creates anything: state it wrote would shut the site's own daemon out. Before, it
# left root's audit log, lock and witness folder, and the service then failed "Permission denied"
# with no hint. State files another user left get a hint to chown them.
scenario_verifier_daemon_runs_only_as_the_states_user() {
  setup '{"id": "all", "effect": "permit"}'
  local before; before=$(ls -lA state)
  expect_exit 5 "$CAPSULED" --site site.json
  expect_err "capsuled runs as root but the state folder \"$WORK/state\" belongs to $SITE_USER"
  expect_err "hint: run it as that user: sudo -u $SITE_USER capsuled --site site.json"
  one_line_err
  [ "$(ls -lA state)" = "$before" ] || fail "the refused daemon changed the state folder"
  # The operator's --direct as root would write the audit log and use counts as root, and shut
  # the service out of them: refused before anything is written.
  expect_exit 5 "$CAPSULE" open d.capsule --site site.json --direct --to landing/direct
  expect_err "capsule open --direct runs as root but the state folder \"$WORK/state\" belongs to $SITE_USER"
  expect_err "hint: run it as that user: sudo -u $SITE_USER capsule open ... --direct"
  [ "$(ls -lA state)" = "$before" ] || fail "--direct as root changed the state folder"
  [ ! -e landing/direct ] || fail "--direct as root released"
  kill -0 "$DAEMON_PID" || fail "the daemon died"
  kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=""
  # Before the state folder exists, the site key's owner decides.
  mv state state.kept
  expect_exit 5 "$CAPSULED" --site site.json
  expect_err "the site key \"$WORK/site.key\" belongs to $SITE_USER"
  [ ! -e state ] || fail "the refused daemon made the state folder"
  mv state.kept state
  # What a run as root left behind (a file in the folder, or the folder itself): the daemon's
  # user is refused at start and told how to take it back, never to run as root.
  chown root state/capsuled.lock
  expect_exit 5 setpriv --reuid "$SITE_USER" --regid "$SITE_USER" --init-groups -- \
    "$CAPSULED" --site site.json
  expect_err "\"$WORK/state/capsuled.lock\" in its state folder belongs to root"
  expect_err "hint: give the site's files back to the site's user: chown -R $SITE_USER: $WORK/state"
  one_line_err
  chown root state
  expect_exit 5 setpriv --reuid "$SITE_USER" --regid "$SITE_USER" --init-groups -- \
    "$CAPSULED" --site site.json
  expect_err "the state folder \"$WORK/state\" belongs to root"
  expect_err "hint: give the site's files back to the site's user: chown -R $SITE_USER: $WORK/state"
  ! grep -q "sudo -u root" "$WORK/.stderr" || fail "hinted to run the site as root"
  chown -R "$SITE_USER" state
  start_daemon
  expect_exit 0 open_as_alice --to landing/after
}

scenario_verifier_open_through_the_socket_gives_files_to_the_user() {
  setup '{"id": "train", "effect": "permit", "purposes": ["training"], "paths": ["train/**"]}'
  expect_exit 0 open_as_alice --purpose training --only 'train/**' --to landing/run1
  expect_out 'permitted by train'
  diff -r data/train landing/run1/train || fail "released files differ"
  [ "$(stat -c %U landing/run1)" = "$USER_A" ] || fail "the destination is not the user's"
  [ "$(stat -c %U landing/run1/train/a.csv)" = "$USER_A" ] || fail "files are not the user's"
  [ -z "$(find landing/run1 ! -user "$USER_A")" ] || fail "an entry is not the user's"
  # A deny releases nothing and is on record with the user's uid.
  expect_exit 5 open_as_alice --purpose marketing --to landing/run2
  [ ! -e landing/run2 ] || fail "released on a deny"
  no_leftovers landing
  local uid; uid=$(id -u "$USER_A")
  "$CAPSULE" audit show --site site.json --json > show.json 2>/dev/null || fail "audit show"
  grep -q "\"uid\": $uid" show.json || { cat show.json; fail "no uid in the audit records"; }
  [ "$(grep -c '"decision": "deny"' show.json)" -ge 1 ] || fail "deny not on record"
  # cat and --to-tar - stream into the user's own descriptors.
  as_alice "$CAPSULE" cat d.capsule train/a.csv --site site.json --purpose training > cat.out 2>"$WORK/.stderr" ||
    { cat "$WORK/.stderr"; fail "cat"; }
  [ "$(cat cat.out)" = "row 1" ] || fail "cat gave $(cat cat.out)"
  expect_exit 5 as_alice "$CAPSULE" cat d.capsule pii/names.csv --site site.json --purpose training
  expect_exit 0 as_alice "$CAPSULE" ls d.capsule --site site.json --purpose training
  ! grep -q pii "$WORK/.stdout" || fail "ls shows forbidden names"
  expect_exit 0 as_alice "$CAPSULE" policy explain d.capsule --site site.json --purpose training --only 'train/**'
  expect_out 'decision   permit'
}

# A site that receives capsules keeps them as the package does: the store is the daemon's (0750),
# each capsule 0600. Users name a stored capsule (its path, or its id) and the daemon reads it
# from its own store, by name, beneath the folder: never another file, never through a link.
# Before, the command opened the path with the user's rights: "Permission denied" (exit 5).
scenario_verifier_users_read_the_sites_stored_capsules() {
  "$CAPSULE" keygen -o sender >/dev/null
  mkdir -m 750 store
  chown "$SITE_USER" store
  SITE_EXTRA=', "listen": "127.0.0.1:0", "peers": ["sender.pub"], "store": "store"' \
    setup '{"id": "all", "effect": "permit", "paths": ["train/**"]}'
  wait_for daemon.log 'listening on 127.0.0.1:'
  local port; port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' daemon.log | head -1)
  [ -n "$port" ] || { cat daemon.log; fail "no transfer listener"; }
  cat > sender.json <<JSON
{ "site": "site-a", "identity": "sender.key", "trust": ["owner.pub"], "destinations": ["landing"],
  "state": "sender-state", "peers": ["site.pub"], "store": "sender-store" }
JSON
  expect_exit 0 "$CAPSULE" send d.capsule --to "127.0.0.1:$port" --site sender.json
  local stored id; stored=$(ls store/*.capsule)
  id=$(basename "$stored" .capsule)
  [ "$(stat -c '%a %U' store)" = "750 $SITE_USER" ] || fail "store is $(stat -c '%a %U' store)"
  [ "$(stat -c '%a %U' "$stored")" = "600 $SITE_USER" ] || fail "capsule is $(stat -c '%a %U' "$stored")"
  expect_exit 1 as_alice cat "$stored"   # not hers to read
  # By its path, by a path through a link to the store, and by its id.
  expect_exit 0 as_alice "$CAPSULE" ls "$stored" --site site.json
  expect_out 'train/a.csv'
  ln -s store store-link
  expect_exit 0 as_alice "$CAPSULE" ls "store-link/$id.capsule" --site site.json
  expect_out 'train/a.csv'
  expect_exit 0 as_alice "$CAPSULE" cat "$id" train/a.csv --site site.json
  [ "$(cat "$WORK/.stdout")" = "row 1" ] || fail "cat gave $(cat "$WORK/.stdout")"
  expect_exit 0 as_alice "$CAPSULE" open "$WORK/$stored" --site site.json --only 'train/**' --to landing/s1
  diff -r data/train landing/s1/train || fail "released files differ"
  grep -q "open uid=$(id -u "$USER_A") .* capsule=$id -> ok" daemon.log || { cat daemon.log; fail "the open is not logged"; }
  # Nothing else through the daemon's rights. A capsule-like name elsewhere (the state folder) is
  # opened with the user's own rights: refused.
  cp "$stored" "state/$id.capsule" && chown "$SITE_USER" "state/$id.capsule" && chmod 600 "state/$id.capsule"
  expect_exit 5 as_alice "$CAPSULE" ls "state/$id.capsule" --site site.json
  expect_err 'cannot open'
  as_alice ln -s "$WORK/state" landing/st
  expect_exit 5 as_alice "$CAPSULE" ls "landing/st/$id.capsule" --site site.json
  expect_err 'cannot open'
  # A link in the store (planted here as root: users cannot write the store), even to a
  # capsule, a FIFO, and an id the store does not hold: refused by the daemon, one line each.
  ln -s "$WORK/state/$id.capsule" store/11111111111111111111111111111111.capsule
  expect_exit 5 as_alice "$CAPSULE" ls 11111111111111111111111111111111 --site site.json
  expect_err 'symbolic link'
  one_line_err
  mkfifo -m 666 store/22222222222222222222222222222222.capsule
  expect_exit 3 as_alice "$CAPSULE" ls 22222222222222222222222222222222 --site site.json
  expect_err 'not a regular file'
  expect_exit 6 as_alice "$CAPSULE" ls 33333333333333333333333333333333 --site site.json
  expect_err "is not in the store"
  kill -0 "$DAEMON_PID" || fail "the daemon died"
}

scenario_verifier_planted_symlinks_never_lead_outside() {
  setup '{"id": "all", "effect": "permit"}'
  as_alice ln -s ../outside landing/evil
  expect_exit 5 open_as_alice --to landing/evil/x
  expect_exit 5 open_as_alice --to landing/evil/newsub/x
  expect_exit 5 open_as_alice --to-tar landing/evil/x.tar
  nothing_outside
  # A symlink swapped in and out of the path while opens run: landing/u is, by turns, a real
  # folder (the user's, writable by the daemon as in a shared landing zone) and a symlink to
  # outside, exchanged atomically (renameat2 RENAME_EXCHANGE) every millisecond.
  [ -x /usr/bin/python3 ] || { echo "SKIP [$SCENARIO]: needs /usr/bin/python3 for the racer" >&2; exit 77; }
  as_alice mkdir -m 1777 landing/u
  as_alice ln -s ../outside landing/u.link
  as_alice /usr/bin/python3 -c '
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
end = time.time() + 120
while time.time() < end:
    libc.renameat2(-100, b"landing/u", -100, b"landing/u.link", 2)
    time.sleep(0.001)
' &
  local racer=$!
  local ok=0
  for i in $(seq 1 100); do
    if open_as_alice --to "landing/u/out$i" >/dev/null 2>>race.err; then ok=$((ok + 1)); fi
  done
  kill "$racer" 2>/dev/null; wait "$racer" 2>/dev/null
  nothing_outside
  # Not vacuous: opens ran while the folder was real, too.
  [ "$ok" -gt 0 ] || fail "no open succeeded while racing: $(cat daemon.log | tail -3)"
  echo "racing opens that landed inside: $ok of 100"; sort race.err | sed "s/out[0-9]*/outN/g" | uniq -c | sort -rn | head -5
}

scenario_verifier_last_use_race() {
  setup '{"id": "once", "effect": "permit", "maxOpens": 1}'
  local pids=()
  for i in $(seq 1 20); do
    ( open_as_alice --to "landing/r$i" >/dev/null 2>&1; echo $? > "rc$i" ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  local won; won=$(cat rc* | grep -c '^0$')
  [ "$won" -eq 1 ] || fail "$won of 20 opens won the last use: $(cat rc* | tr '\n' ' ')"
  [ "$(ls landing | wc -l)" -eq 1 ] || fail "landing holds $(ls landing)"
}

scenario_verifier_kill9_during_extraction() {
  DATA_BYTES=400000000 setup '{"id": "all", "effect": "permit"}'
  open_as_alice --to landing/big --threads 1 >/dev/null 2>open.err &
  local client=$!
  for _ in $(seq 1 400); do
    [ -n "$(find landing -maxdepth 1 -name '.*bunker*' 2>/dev/null)" ] && break
    sleep 0.01
  done
  kill -9 "$DAEMON_PID"
  wait "$client"; local rc=$?
  [ "$rc" -ne 0 ] || fail "the open succeeded although its daemon was killed"
  [ ! -e landing/big ] || fail "a partial destination is named"
  grep -q "closed the connection" open.err || { cat open.err; fail "no clear error"; }
  start_daemon
  no_leftovers landing
  expect_exit 0 open_as_alice --to landing/again --only 'train/a.csv'
}

scenario_verifier_requester_is_proven() {
  SITE_EXTRA=', "users": {"'"$USER_B"'": "bob.pub"}'
  local alice bob
  alice=$(fingerprint_of alice)
  bob=$(fingerprint_of bob)
  setup '{"id": "alice", "effect": "permit", "requesters": ["'"$alice"'"]}, {"id": "bob", "effect": "permit", "requesters": ["'"$bob"'"]}'
  # Alice proves her key by signing the daemon's challenge.
  expect_exit 0 open_as_alice --as alice.key --to landing/a
  # A public key proves nothing: refused for a release (explain may name one).
  expect_exit 3 open_as_alice --as bob.pub --to landing/b
  [ ! -e landing/b ] || fail "released to an unproven requester"
  expect_exit 0 as_alice "$CAPSULE" policy explain d.capsule --site site.json --as bob.pub
  # Without --as, alice is nobody; bob's uid stands for bob's key (site file "users").
  expect_exit 5 open_as_alice --to landing/c
  expect_exit 0 as_user "$USER_B" "$CAPSULE" open d.capsule --site site.json --to landing/d
  [ "$(stat -c %U landing/d)" = "$USER_B" ] || fail "bob's files are not bob's"
}

scenario_verifier_garbage_on_the_socket() {
  [ -x /usr/bin/python3 ] || { echo "SKIP [$SCENARIO]: needs /usr/bin/python3 for a raw client" >&2; exit 77; }
  setup '{"id": "all", "effect": "permit"}'
  # Garbage, oversized lengths and silent clients: each is refused, the service lives on.
  for payload in 'hello' "$(printf '\xff\xff\xff\x7f')" "$(head -c 5000 /dev/urandom)"; do
    as_alice /usr/bin/python3 - run/verifier.sock "$payload" <<'PY' || true
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
s.recv(4096); s.sendall(sys.argv[2].encode('latin-1', 'replace')); s.shutdown(socket.SHUT_WR)
try:
    s.recv(65536)
except Exception:
    pass
PY
  done
  expect_exit 0 open_as_alice --to landing/after --only 'train/a.csv'
}

scenario_verifier_corrupt_copy_spends_no_use() {
  DATA_BYTES=1000000 setup '{"id": "once", "effect": "permit", "maxOpens": 1}'
  # A copy with one flipped byte deep in the chunks: the structure and table still check out,
  # so the open is decided and recorded, then the release fails and gives its use back.
  cp d.capsule bad.capsule
  flip_byte bad.capsule 700000
  chmod 644 bad.capsule
  expect_exit 4 as_alice "$CAPSULE" open bad.capsule --site site.json --to landing/bad
  [ ! -e landing/bad ] || fail "a corrupt capsule released files"
  no_leftovers landing
  expect_exit 0 open_as_alice --to landing/good
  expect_exit 5 open_as_alice --to landing/again
  "$CAPSULE" audit show --site site.json --json > show.json 2>/dev/null || fail "audit show"
  grep -q '"event": "release-failed"' show.json || { cat show.json; fail "the failure is not on record"; }
}

scenario_verifier_state_tamper_is_caught() {
  command -v sqlite3 >/dev/null || { echo "SKIP [$SCENARIO]: needs sqlite3" >&2; exit 77; }
  setup '{"id": "once", "effect": "permit", "maxOpens": 1}'
  expect_exit 0 open_as_alice --to landing/one
  # The operator's (or an intruder's) edit of the counts is caught by the daemon: exit 4, and
  # no use is regained.
  sqlite3 state/state.db 'UPDATE uses SET count = 0' || fail "sqlite3"
  expect_exit 4 open_as_alice --to landing/two
  expect_err 'does not match its audit log'
  [ ! -e landing/two ] || fail "released after the state was edited"
}

scenario_verifier_new_parents_and_archives() {
  setup '{"id": "all", "effect": "permit"}'
  # The daemon creates only the destination itself: a missing parent is the user's to make
  # (spec/VERIFIER.md "Destinations"), and nothing is decided or counted before.
  expect_exit 6 open_as_alice --to landing/np/deeper/out
  expect_err 'does not exist'
  one_line_err
  [ ! -e landing/np ] || fail "a parent was created for the user"
  # A folder of hers that the site's user cannot write is named as such.
  as_alice mkdir -p landing/np/deeper
  expect_exit 5 open_as_alice --to landing/np/deeper/out
  expect_err 'writable by the site'
  one_line_err
  as_alice chmod 1777 landing/np/deeper
  expect_exit 0 open_as_alice --to landing/np/deeper/out
  [ "$(stat -c %U landing/np/deeper/out/train/a.csv)" = "$USER_A" ] || fail "not the user's"
  as_alice cat landing/np/deeper/out/train/a.csv >/dev/null || fail "the user cannot read her files"
  # An archive into a destination through the daemon (fs.protected_hardlinks: linked first,
  # given away after) is the user's.
  expect_exit 0 open_as_alice --to-tar landing/np/deeper/d.tar
  [ "$(stat -c %U landing/np/deeper/d.tar)" = "$USER_A" ] || fail "the archive is not the user's"
  as_alice tar -tf landing/np/deeper/d.tar > tar.list || fail "the archive is not readable"
  grep -q 'train/a.csv' tar.list || fail "the archive lacks train/a.csv"
  # Everything on the way is hers: she can remove what she was given, and release again.
  as_alice rm -rf landing/np || fail "the user cannot remove her release and its folders"
  expect_exit 0 open_as_alice --to landing/again
}

# The daemon does in a destination only what its requester could do there: another user's
# folders, another request's staging folder and folders the user cannot write are refused
# before anything is decided, and nothing lands there.
scenario_verifier_releases_only_where_the_user_could_write() {
  SITE_EXTRA=', "users": {"'"$USER_B"'": "bob.pub"}' setup '{"id": "once", "effect": "permit", "maxOpens": 3}'
  as_bob() { as_user "$USER_B" "$@"; }
  open_as_bob() { as_bob "$CAPSULE" open d.capsule --site site.json "$@"; }
  # Into a folder of alice's that bob may not write (the daemon may): refused, nothing there.
  as_alice mkdir -m 755 landing/alice
  chgrp "$(id -gn "$SITE_USER")" landing/alice && chmod 775 landing/alice  # the site's group may
  expect_exit 5 open_as_bob --to landing/alice/bobs
  expect_err 'may not create entries in'
  one_line_err
  [ ! -e landing/alice/bobs ] || fail "released into a folder the requester cannot write"
  # Over alice's empty folder, in a folder bob may write: refused, hers stays hers.
  as_bob mkdir -m 777 landing/shared
  as_alice mkdir -m 755 landing/shared/hers
  expect_exit 5 open_as_bob --to landing/shared/hers
  expect_err 'not yours'
  [ "$(stat -c %U landing/shared/hers)" = "$USER_A" ] || fail "alice's folder was replaced"
  # Through a folder he may not search: another request's staging folder is the daemon's and
  # 0700 (made here by hand, as a running release has it).
  mkdir -m 700 landing/.run.bunker-AAAAAA
  mkdir -m 755 landing/.run.bunker-AAAAAA/root
  chown "$SITE_USER" landing/.run.bunker-AAAAAA landing/.run.bunker-AAAAAA/root
  expect_exit 5 open_as_bob --to landing/.run.bunker-AAAAAA/root/x
  expect_err 'may not search'
  [ -z "$(ls -A landing/.run.bunker-AAAAAA/root)" ] || fail "released into another request's staging folder"
  rm -rf landing/.run.bunker-AAAAAA
  # Through a folder of alice's that the site's user may not search (0700): named as such.
  as_alice mkdir -m 700 landing/private
  as_alice mkdir -m 777 landing/private/sub
  expect_exit 5 open_as_alice --to landing/private/sub/x
  expect_err 'cannot search folder'
  one_line_err
  # An archive into a folder the daemon can write but not read (0733): refused before it is
  # decided, not after it is named (a use given back for a release it made).
  as_alice mkdir -m 733 landing/dropbox
  expect_exit 5 open_as_alice --to-tar landing/dropbox/d.tar
  expect_err 'cannot read folder'
  chmod 755 landing/dropbox
  [ -z "$(ls -A landing/dropbox)" ] || fail "an archive was left in the folder"
  # A folder of her own that the site's user may not write (her `mkdir`, 0755): refused, with a
  # hint toward the two ways out.
  as_alice mkdir -m 755 landing/mine
  expect_exit 5 open_as_alice --to landing/mine/run
  expect_err "must be writable by the site's user too"
  expect_err "hint: release straight into the destination"
  expect_err "setfacl -m u:$SITE_USER:rwx"
  [ -z "$(ls -A landing/mine)" ] || fail "released into a folder the site's user cannot write"
  # What each may do works, and only those releases spend the three uses.
  expect_exit 0 open_as_alice --to landing/shared/hers
  [ "$(stat -c %U landing/shared/hers/train/a.csv)" = "$USER_A" ] || fail "not alice's"
  expect_exit 0 open_as_bob --to landing/shared/bobs
  expect_exit 0 open_as_alice --to-tar landing/one.tar
  expect_exit 5 open_as_alice --to landing/four
  expect_err 'maxOpens'
  "$CAPSULE" audit show --site site.json --json > show.json 2>/dev/null || fail "audit show"
  ! grep -q '"event": "release-failed"' show.json || { cat show.json; fail "a refused destination reached the release"; }
}

# Regression: an interrupted cat said "nothing was written" after the relay had written part of
# the file into its output. Now the message says what the reader got (counted by the relay).
scenario_verifier_interrupted_cat_says_what_it_wrote() {
  DATA_BYTES=20000000 setup '{"id": "all", "effect": "permit"}'
  local wait_s cpid rc got cut=0
  for wait_s in 0.05 0.3 1; do
    rm -f landing/got landing/err
    as_alice sh -c "'$CAPSULE' cat d.capsule train/big.bin --site site.json 2>landing/err | (sleep 2; wc -c > landing/got)" &
    local job=$!
    cpid=""
    for _ in $(seq 1 100); do
      cpid=$(pgrep -u "$USER_A" -f "^$CAPSULE cat d.capsule train/big.bin" | head -1)
      [ -n "$cpid" ] && break
      sleep 0.02
    done
    [ -n "$cpid" ] || fail "the cat did not run"
    sleep "$wait_s"
    kill -INT "$cpid" 2>/dev/null
    wait "$job"
    got=$(cat landing/got)
    grep -q interrupted landing/err || { cat landing/err; fail "no interrupt message"; }
    if [ "$got" -eq 0 ]; then
      grep -q "nothing was written" landing/err || { cat landing/err; fail "0 bytes out, but: $(cat landing/err)"; }
    else
      grep -q "interrupted after $got bytes were written" landing/err ||
        { cat landing/err; fail "the reader got $got bytes, the message says otherwise"; }
      cut=$((cut + 1))
    fi
  done
  # Every cut-short stream is on record, its use spent (uses 0), saying how much had left.
  "$CAPSULE" audit show --site site.json --json > show.json 2>/dev/null || fail "audit show"
  local recorded
  recorded=$(grep '"event": "release-failed"' show.json | grep '"uses": 0' |
             grep -c 'failed after [0-9]* bytes were written; the use stays spent')
  echo "cut short: $cut, on record: $recorded"
  [ "$recorded" -ge "$cut" ] || { cat show.json; fail "$cut streams were cut short, $recorded are on record"; }
}

scenario_verifier_unread_output_does_not_hold_the_daemon() {
  DATA_BYTES=20000000 setup '{"id": "all", "effect": "permit"}'
  # A cat into a pipe nobody reads: SIGTERM still stops the daemon.
  as_alice sh -c "'$CAPSULE' cat d.capsule train/big.bin --site site.json | sleep 60" &
  local reader=$!
  sleep 1
  kill -TERM "$DAEMON_PID"
  local stopped=""
  for _ in $(seq 1 600); do
    kill -0 "$DAEMON_PID" 2>/dev/null || { stopped=yes; break; }
    sleep 0.1
  done
  pkill -u "$USER_A" sleep 2>/dev/null
  wait "$reader" 2>/dev/null
  [ -n "$stopped" ] || { tail -5 daemon.log; fail "the daemon did not stop while a reader held its output"; }
  DAEMON_PID=""
  # A FIFO the user holds open at both ends (so no write ever fails), as cat's output, and the
  # user's processes then killed: the daemon holds nothing of it and still stops.
  start_daemon
  as_alice mkfifo landing/held
  as_alice sh -c "exec 3<>landing/held; exec '$CAPSULE' cat d.capsule train/big.bin --site site.json >&3" &
  reader=$!
  sleep 1
  # Ctrl-C ends the client at once (exit 130), though its own output does not move. ($! is
  # the subshell that runs as_alice; the signal goes to the capsule process itself.)
  local cpid="" rc="" _
  cpid=$(pgrep -u "$USER_A" -f 'cat d.capsule train/big.bin' | head -1)
  [ -n "$cpid" ] || fail "the cat did not run"
  kill -INT "$cpid"
  for _ in $(seq 1 100); do
    kill -0 "$cpid" 2>/dev/null || { wait "$reader"; rc=$?; break; }
    sleep 0.1
  done
  [ "$rc" = 130 ] || { pkill -9 -u "$USER_A"; fail "an interrupted cat with a stalled output exited '$rc', expected 130"; }
  pkill -9 -u "$USER_A" 2>/dev/null
  expect_exit 0 open_as_alice --to landing/after --only 'train/a.csv'
  kill -TERM "$DAEMON_PID"
  stopped=""
  for _ in $(seq 1 600); do
    kill -0 "$DAEMON_PID" 2>/dev/null || { stopped=yes; break; }
    sleep 0.1
  done
  [ -n "$stopped" ] || { tail -5 daemon.log; fail "the daemon did not stop after a FIFO output"; }
  DAEMON_PID=""
}

# Hostile local users (spec/VERIFIER.md "Threat model"): each attack ends refused or bounded,
# nothing released that the policy forbids, the service serving others.

scenario_verifier_held_connections_do_not_starve_others() {
  [ -x /usr/bin/python3 ] || { echo "SKIP [$SCENARIO]: needs /usr/bin/python3 for a raw client" >&2; exit 77; }
  setup '{"id": "all", "effect": "permit"}'
  # Alice holds 200 connections open without sending a request.
  as_alice /usr/bin/python3 - run/verifier.sock <<'PY' &
import socket, sys, time
held = []
for _ in range(200):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    held.append(s)
import os
with open("landing/held", "w") as f:
    f.write(str(os.getpid()))
time.sleep(20)
PY
  local holder=$!
  for _ in $(seq 1 400); do [ -e landing/held ] && break; sleep 0.05; done
  [ -e landing/held ] || fail "the holder never held its connections"
  # Her own next request is refused with one clear line; bob is served.
  expect_exit 8 open_as_alice --to landing/alice --only 'train/a.csv'
  expect_err 'busy'
  one_line_err
  [ ! -e landing/alice ] || fail "released to a refused request"
  expect_exit 0 as_user "$USER_B" "$CAPSULE" open d.capsule --site site.json --to landing/bob --only 'train/a.csv'
  kill "$(cat landing/held)" 2>/dev/null; wait "$holder" 2>/dev/null
  # Her slots come back once her connections are gone.
  local ok=""
  for _ in $(seq 1 100); do
    open_as_alice --to landing/later --only 'train/a.csv' >/dev/null 2>&1 && { ok=yes; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || fail "alice was never served again after closing her connections"
}

scenario_verifier_full_disk_releases_nothing() {
  setup '{"id": "once", "effect": "permit", "maxOpens": 1}'
  mkdir -p small
  if ! mount -t tmpfs -o size=2m,mode=1777 tmpfs small 2>/dev/null; then
    echo "SKIP [$SCENARIO]: needs to mount a tmpfs (a small file system to fill)" >&2; exit 77
  fi
  kill -9 "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
  sed -i 's|"destinations": \["landing"\]|"destinations": ["landing", "small"]|' site.json
  start_daemon
  # 100 kB of data against a file system with a few kB free: the release fails mid-way.
  head -c $((2048 * 1024 - 40 * 1024)) /dev/zero > small/filler 2>/dev/null
  expect_exit 8 open_as_alice --to small/out
  one_line_err
  [ ! -e small/out ] || { umount small; fail "a partial release is named"; }
  local left; left=$(ls -A small | grep -v '^filler$')
  rm -f small/filler
  [ -z "$left" ] || { umount small; fail "left behind: $left"; }
  # The failed release gave its use back: the one use still opens, then none.
  expect_exit 0 open_as_alice --to small/out
  expect_exit 5 open_as_alice --to small/again
  umount small
  "$CAPSULE" audit show --site site.json --json > show.json 2>/dev/null || fail "audit show"
  grep -q '"event": "release-failed"' show.json || fail "the failed release is not on record"
}

scenario_verifier_output_reopened_only_with_the_users_rights() {
  [ -x /usr/bin/python3 ] || { echo "SKIP [$SCENARIO]: needs /usr/bin/python3 to pass an O_PATH descriptor" >&2; exit 77; }
  setup '{"id": "all", "effect": "permit"}'
  # A FIFO only the site's user may write, in a folder anyone may cross.
  mkdir -m 755 pipes
  mkfifo -m 600 pipes/site-only
  chown "$SITE_USER" pipes/site-only
  exec 7<>pipes/site-only  # a reader (and a writer, so opening never blocks)
  # Alice passes it as cat's output through O_PATH, which needs no right on the FIFO itself.
  as_alice /usr/bin/python3 - "$CAPSULE" <<'PY' 2>"$WORK/.stderr"
import os, sys
fd = os.open("pipes/site-only", os.O_PATH)
os.dup2(fd, 1)
os.execv(sys.argv[1], [sys.argv[1], "cat", "d.capsule", "train/a.csv", "--site", "site.json"])
PY
  local rc=$?
  [ "$rc" -eq 3 ] || { cat "$WORK/.stderr" >&2; fail "cat through an O_PATH output exited $rc, expected 3"; }
  expect_err 'not open for writing'
  local got; got=$(timeout 1 dd bs=64 count=1 iflag=nonblock <&7 2>/dev/null | head -c 64)
  exec 7<&-
  [ -z "$got" ] || fail "the daemon wrote into a FIFO the user may not write: $got"
  expect_exit 0 open_as_alice --to landing/after --only 'train/a.csv'
}

scenario_verifier_hostile_destination_names() {
  setup '{"id": "all", "effect": "permit"}'
  # A FIFO at the target name: refused without opening it (no hang), left as it was.
  as_alice mkfifo landing/fifo
  expect_exit 7 open_as_alice --to landing/fifo
  one_line_err
  expect_exit 7 open_as_alice --to-tar landing/fifo
  one_line_err
  [ -p landing/fifo ] || fail "the FIFO was replaced"
  # Control characters in the name: one error line, escaped; the daemon's log stays one line a
  # request.
  expect_exit 5 open_as_alice --to "$(printf 'outside/x\nrequest uid=0 -> ok')"
  one_line_err
  grep -q '^request uid=0' daemon.log && fail "a forged line in the daemon's log"
  # A path longer than the system allows: one clear line, nothing made.
  local long="landing/$(head -c 300 /dev/zero | tr '\0' 'a')"
  open_as_alice --to "$long/x" >/dev/null 2>"$WORK/.stderr" && fail "a 300-byte name was used"
  one_line_err
  local deep="landing"
  for _ in $(seq 1 30); do deep="$deep/$(head -c 200 /dev/zero | tr '\0' 'c')"; done
  open_as_alice --to "$deep" >/dev/null 2>"$WORK/.stderr" && fail "a 6 kB destination was used"
  one_line_err
  nothing_outside
  no_leftovers landing
  expect_exit 0 open_as_alice --to landing/after --only 'train/a.csv'
}

run_scenario

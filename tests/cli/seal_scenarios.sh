#!/usr/bin/env bash
# `capsule seal` against a tree others can change while it is sealed, and its inputs' edge cases.
# Scenarios that need a second, unprivileged user (a hostile one, or one who cannot read part of
# the input) need root, setpriv and useradd, and exit 77 (skipped) with a message otherwise.
# Usage: seal_scenarios.sh CAPSULE_BINARY RENAME_EXCHANGE_BINARY SCENARIO
set -uo pipefail
CAPSULE=$1
RENAME_EXCHANGE=$2
SCENARIO=$3
HOSTILE_USER=bunker-test-mallory
. "$(dirname "$0")/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bunker-seal-XXXXXX")
RACER_PID=""
SHM_DIR=""
cleanup() {
  local rc=$?
  [ -n "$RACER_PID" ] && { kill -9 "$RACER_PID" 2>/dev/null; wait "$RACER_PID" 2>/dev/null; }
  [ -n "$SHM_DIR" ] && rm -rf "$SHM_DIR"
  mountpoint -q "$WORK/small" 2>/dev/null && umount "$WORK/small"
  remove_work $rc
}
trap cleanup EXIT
cd "$WORK"

needs_root() {
  if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null || ! command -v useradd >/dev/null; then
    echo "SKIP [$SCENARIO]: needs root, setpriv and useradd to $1" >&2
    exit 77
  fi
  ensure_users "$HOSTILE_USER"
  chmod 755 "$WORK"
}
as_mallory() { setpriv --reuid "$HOSTILE_USER" --regid "$HOSTILE_USER" --init-groups -- "$@"; }

keys() { "$CAPSULE" keygen -o owner >/dev/null || fail "keygen"; }
seal() { "$CAPSULE" seal "$@" --sign owner.key --to owner.pub; }
names_in() { "$CAPSULE" ls "$1" --identity owner.key --trust owner.pub; }

# A user who may write one folder of the dataset swaps a folder in it for a symlink to the
# owner's private folder, over and over, while the owner seals the dataset. The walk opens every
# folder and file relative to its parent without following symlinks and checks that it is what
# was listed: each seal either succeeds with nothing from outside the tree, or refuses (the
# symlink listed as such: exit 3, it leaves the tree; the swap seen: exit 9, "changed while it
# was being sealed"). Before, about one seal in ten put the private file in the capsule.
scenario_seal_swapped_folder_never_leaves_the_tree() {
  needs_root "run a hostile user beside the sealing owner"
  keys
  mkdir -p private ds/shared/a atk
  printf 'the owner key\n' > private/PRIVATE-owner-secret
  chmod 700 private
  for i in $(seq 1 10); do printf '%d\n' "$i" > "ds/f$i"; done
  printf 'ok\n' > ds/shared/a/inside.txt
  ln -s "$WORK/private" atk/a
  chown -R "$HOSTILE_USER" ds/shared atk
  cp "$RENAME_EXCHANGE" "$WORK/rename_exchange" && chmod 755 "$WORK/rename_exchange"
  # setpriv itself in the background (not a function, which would fork a shell): $! is the
  # racer's pid, for the kill.
  setpriv --reuid "$HOSTILE_USER" --regid "$HOSTILE_USER" --init-groups -- \
    "$WORK/rename_exchange" "$WORK/ds/shared/a" "$WORK/atk/a" &
  RACER_PID=$!
  local i rc ok=0 changed=0 escape=0
  for i in $(seq 1 100); do
    seal ds -o "c$i.capsule" >"$WORK/.stdout" 2>"$WORK/.stderr"
    rc=$?
    case $rc in
      0)
        names_in "c$i.capsule" >"$WORK/.names" 2>&1 || { cat "$WORK/.names"; fail "ls c$i.capsule"; }
        ! grep -q PRIVATE "$WORK/.names" || { cat "$WORK/.names"; fail "seal $i took a file from outside the tree"; }
        ok=$((ok + 1))
        ;;
      3) expect_err "symbolic link\|symlink"; escape=$((escape + 1)) ;;
      9) expect_err "changed while it was being sealed"; one_line_err; changed=$((changed + 1)) ;;
      *) cat "$WORK/.stderr" >&2; fail "seal $i exited $rc" ;;
    esac
    rm -f "c$i.capsule"
    kill -0 "$RACER_PID" 2>/dev/null || fail "the racer stopped"
  done
  kill -9 "$RACER_PID"; wait "$RACER_PID" 2>/dev/null; RACER_PID=""
  echo "seals: $ok sealed, $changed refused as changed, $escape refused as a symlink out of the tree"
  no_leftovers "$WORK"
}

# "link/" names the folder a symlink points to: its files are sealed. "link" (no slash) is the
# symlink itself, which is not something to seal (exit 3). Before, "link/" sealed 0 files.
scenario_seal_symlinked_folder_named_with_a_slash() {
  keys
  mkdir -p real/sub
  printf 'one\n' > real/one.txt
  printf 'two\n' > real/sub/two.txt
  ln -s real lnkdir
  expect_exit 0 seal lnkdir/ -o slash.capsule --json
  expect_out '"files": 2'
  names_in slash.capsule >names.txt || fail "ls"
  grep -q 'one.txt' names.txt && grep -q 'sub/two.txt' names.txt || { cat names.txt; fail "files missing"; }
  expect_exit 3 seal lnkdir -o noslash.capsule
  expect_err "neither a directory nor a regular file"
  [ ! -e noslash.capsule ] || fail "noslash.capsule written"
}

# An input the sealing user may not read is refused with the reason (exit 5, "Permission
# denied"), whether it is a file or a folder; before, "cannot read in/w: Can't open" exit 9.
scenario_seal_unreadable_input_says_why() {
  needs_root "seal as a user who cannot read part of the input"
  mkdir -p in/sub
  printf 'x\n' > in/w
  printf 'y\n' > in/sub/y
  chmod 000 in/w
  mkdir -p bin && cp "$CAPSULE" bin/ && chmod 755 bin bin/* && CAPSULE="$WORK/bin/$(basename "$CAPSULE")"
  chown -R "$HOSTILE_USER" "$WORK"
  as_mallory "$CAPSULE" keygen -o owner >/dev/null || fail "keygen"
  expect_exit 5 as_mallory "$CAPSULE" seal in -o f.capsule --sign owner.key --to owner.pub
  expect_err 'cannot read "w": Permission denied'
  one_line_err
  chmod 644 in/w
  chmod 000 in/sub
  expect_exit 5 as_mallory "$CAPSULE" seal in -o d.capsule --sign owner.key --to owner.pub
  expect_err 'cannot read "sub": Permission denied'
  [ ! -e f.capsule ] && [ ! -e d.capsule ] || fail "a capsule was written"
  no_leftovers "$WORK"
}

# The file index waits in a temporary file in $TMPDIR (unnamed, O_TMPFILE). A full one is "out
# of disk space" (exit 8) naming the errno; before, "cannot write the temporary file index"
# without a reason, exit 9, and the file went to /tmp whatever TMPDIR said.
scenario_seal_full_tmpdir_is_out_of_space() {
  needs_root "mount a small tmpfs"
  keys
  mkdir -p data small
  for i in $(seq 1 2000); do printf '%d\n' "$i" > "data/a_file_with_a_rather_long_name_$i.txt"; done
  mount -t tmpfs -o size=64k tmpfs small || { echo "SKIP [$SCENARIO]: cannot mount a tmpfs" >&2; exit 77; }
  TMPDIR="$WORK/small" expect_exit 8 seal data -o full.capsule
  umount small
  expect_err "temporary file index.*No space left on device"
  one_line_err
  [ ! -e full.capsule ] || fail "full.capsule written"
  no_leftovers "$WORK"
}

# TMPDIR is where the index waits: a TMPDIR that does not exist is named (exit 6).
scenario_seal_index_goes_to_tmpdir() {
  keys
  mkdir -p data
  printf 'x\n' > data/x
  TMPDIR="$WORK/nowhere" expect_exit 6 seal data -o x.capsule
  expect_err "cannot create the temporary file index in $WORK/nowhere: No such file or directory"
  [ ! -e x.capsule ] || fail "x.capsule written"
  TMPDIR="$WORK" expect_exit 0 seal data -o y.capsule
}

# -o is checked before anything is sealed: a dangling symlink there is an existing name (exit 7
# at once; before, seal encrypted the whole dataset, then failed "cannot create dl: File
# exists"). A capsule written inside the input folder is not sealed into itself.
scenario_seal_output_is_checked_first() {
  keys
  mkdir -p data
  printf 'x\n' > data/x
  ln -s nowhere dl
  expect_exit 7 seal data -o dl
  expect_err "dl already exists"
  [ -L dl ] && [ ! -e nowhere ] || fail "dl changed"
  expect_exit 0 seal data -o data/self.capsule
  names_in data/self.capsule >names.txt || fail "ls"
  ! grep -q 'self.capsule\|partial' names.txt || { cat names.txt; fail "the capsule sealed itself"; }
  no_leftovers "$WORK"
}

# Sealing a folder keeps nothing per file in memory: 100,000 files take no more than a few
# (before, every path was kept for the hard-link check only imported archives need: 39 MiB here
# against 24, 114 MiB at 300,000 files with longer names).
scenario_seal_memory_does_not_grow_with_files() {
  [ -x /usr/bin/time ] || { echo "SKIP [$SCENARIO]: needs /usr/bin/time (GNU time)" >&2; exit 77; }
  # AddressSanitizer's shadow memory and quarantine are no measure of the program's own. (Not
  # `ldd | grep -q`: under pipefail, grep leaving early fails the pipeline.)
  local libs; libs=$(ldd "$CAPSULE" 2>/dev/null)
  if [[ $libs == *libasan* ]]; then
    echo "SKIP [$SCENARIO]: peak RSS is not measured in a sanitizer build" >&2
    exit 77
  fi
  need python3
  keys
  # 100,000 files: on a tmpfs when there is one (making them on a disk file system takes
  # 10-20 s of kernel time here; sealing them, 2 s).
  local tree=many
  if [ -d /dev/shm ] && [ -w /dev/shm ] && SHM_DIR=$(mktemp -d /dev/shm/bunker-seal-XXXXXX 2>/dev/null); then
    tree=$SHM_DIR/many
  fi
  TREE=$tree python3 -c '
import os
for d in range(100):
    p = os.environ["TREE"] + "/folder_%04d" % d
    os.makedirs(p)
    for i in range(1000):
        with open("%s/a_sample_file_with_a_longer_name_%06d.txt" % (p, i), "w") as f:
            f.write("x")
' || fail "cannot make the files"
  expect_exit 0 /usr/bin/time -f "maxrss %M" "$CAPSULE" seal "$tree" -o many.capsule --sign owner.key \
    --to owner.pub --threads 2
  local kib; kib=$(sed -n 's/^maxrss \([0-9]*\)$/\1/p' "$WORK/.stderr")
  [ -n "$kib" ] || { cat "$WORK/.stderr"; fail "no maxrss"; }
  echo "sealing 100000 files took at most $((kib / 1024)) MiB"
  [ "$kib" -lt $((32 * 1024)) ] || fail "sealing 100000 files took $((kib / 1024)) MiB (at most 32 expected)"
}

run_scenario

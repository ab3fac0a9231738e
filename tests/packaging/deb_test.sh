#!/usr/bin/env bash
# The Debian package, installed on this machine: cpack builds it from the build folder, lintian
# finds no error in it, `dpkg -i` installs working capsule and capsuled (--version, keygen, man
# pages, bash completion), the installed unit rates <= 2.0 in `systemd-analyze security`, and
# the installed daemon serves a site as the unit runs it: as the bunker user with CAP_CHOWN
# only, the file system read-only but for the unit's writable paths (ProtectSystem=strict,
# PrivateTmp, StateDirectory, RuntimeDirectory). Then `dpkg --purge` and the test removes what
# it created: the machine is as before.
# Root only (dpkg -i, a system user); skips (77) without root or dpkg-deb, or when a Bunker
# site is already set up here (the test will not touch it).
# Usage: deb_test.sh BUILD_DIR SOURCE_DIR VERSION
set -uo pipefail
BUILD=$(realpath "$1") SRC=$(realpath "$2") VERSION=$3
skip() { echo "SKIP [deb]: $*" >&2; exit 77; }
fail() { echo "FAIL [deb]: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i, the bunker system user)"
command -v dpkg-deb >/dev/null || skip "dpkg-deb is not installed"
command -v cpack >/dev/null || skip "cpack is not installed"
[ -f "$BUILD/CPackConfig.cmake" ] || skip "$BUILD has no CPack configuration (a sanitizer build)"
dpkg-query -W -f='${Status}' bunker 2>/dev/null | grep -q 'install ok installed' &&
  skip "the bunker package is installed on this machine; the test would replace it"
getent passwd bunker >/dev/null && skip "a user bunker exists here (a site?); the test would use it"
for d in /etc/bunker /var/lib/bunker /srv/bunker /srv/datasets /run/bunker; do
  [ -e "$d" ] && skip "$d exists here (a site?); the test would use it"
done

WORK=$(mktemp -d)
DAEMON=""
cleanup() {
  [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
  if dpkg-query -W -f='${Status}' bunker 2>/dev/null | grep -q installed; then
    dpkg --purge bunker >/dev/null 2>&1 || echo "deb: dpkg --purge bunker failed" >&2
  fi
  # What postinst created and purging keeps (the site's audit log), and what this test made.
  rm -rf /etc/bunker /var/lib/bunker /srv/bunker /srv/datasets /run/bunker
  if [ -n "${BUNKER_KEEP_TMP:-}" ] && [ "$BUNKER_KEEP_TMP" != 0 ]; then
    echo "BUNKER_KEEP_TMP: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  getent passwd bunker >/dev/null && userdel bunker
  getent group bunker >/dev/null && groupdel bunker
}
trap cleanup EXIT

# 1. Build the package from the build folder into our own folder.
cpack --config "$BUILD/CPackConfig.cmake" -G DEB -B "$WORK/pkg" >"$WORK/cpack.log" 2>&1 ||
  { cat "$WORK/cpack.log" >&2; fail "cpack failed"; }
DEB=$(ls "$WORK"/pkg/bunker_"$VERSION"-*_amd64.deb 2>/dev/null | head -n1)
[ -f "$DEB" ] || { cat "$WORK/cpack.log" >&2; fail "cpack made no bunker_${VERSION}-*_amd64.deb"; }
echo "deb: $(basename "$DEB"), $(stat -c %s "$DEB") bytes"

# 2. lintian: no errors (warnings are listed). Its temporary files in our folder: lintian leaves
# an mldbm-elf-* database in $TMPDIR behind on every run.
if command -v lintian >/dev/null; then
  mkdir -p "$WORK/lintian-tmp"
  TMPDIR="$WORK/lintian-tmp" lintian --fail-on error "$DEB" >"$WORK/lintian.log" 2>&1
  rc=$?
  grep -v 'running with root privileges' "$WORK/lintian.log" | sed 's/^/deb: lintian: /'
  [ $rc -eq 0 ] || fail "lintian reports errors"
  grep -q '^E: ' "$WORK/lintian.log" && fail "lintian reports errors"
  echo "deb: lintian: no errors"
else
  echo "deb: lintian is not installed: the lintian check is skipped" >&2
fi

# The S3 client dlopens libcurl (capsule/curl_api.h): the package names it, the programs do not.
depends=$(dpkg-deb -f "$DEB" Depends)
grep -Eq '(^|, )libcurl4 \(>= 7\.85\.0\)(,|$)' <<<"$depends" ||
  fail "Depends lacks libcurl4 (>= 7.85.0): $depends"
echo "deb: Depends: $depends"

# 3. Install.
dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; fail "dpkg -i failed"; }
[ "$(/usr/bin/capsule --version)" = "capsule $VERSION (capsule format 1)" ] ||
  fail "/usr/bin/capsule --version says '$(/usr/bin/capsule --version)'"
[ "$(/usr/bin/capsuled --version)" = "capsuled $VERSION (capsule format 1)" ] ||
  fail "/usr/bin/capsuled --version says '$(/usr/bin/capsuled --version)'"
for prog in capsule capsuled; do
  readelf -d "/usr/bin/$prog" | grep -q 'NEEDED.*libcurl' && fail "$prog links libcurl at load time"
done
getent passwd bunker >/dev/null || fail "postinst made no bunker user"
[ "$(stat -c '%U %a' /var/lib/bunker)" = "bunker 700" ] || fail "/var/lib/bunker: $(stat -c '%U %a' /var/lib/bunker)"
[ "$(stat -c '%U %a' /srv/bunker)" = "bunker 750" ] || fail "/srv/bunker: $(stat -c '%U %a' /srv/bunker)"

# 4. The installed capsule works: an identity, then (below) a capsule sealed to the site.
(cd "$WORK" && capsule keygen -o owner >/dev/null) || fail "capsule keygen failed"
[ "$(stat -c %a "$WORK/owner.key")" = 600 ] || fail "keygen's private key is not 0600"

# 5. Man pages.
if ! command -v man >/dev/null; then
  echo "deb: man is not installed (man-db): the man page check is skipped" >&2
elif [ ! -e /usr/share/man/man1/capsule.1.gz ] &&
     grep -qs '^path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
  echo "deb: dpkg here excludes /usr/share/man (path-exclude): the man page check is skipped" >&2
else
  page=$(MANWIDTH=80 man -P cat capsule 2>&1) || fail "man capsule: $page"
  for want in 'capsule seal' 'capsule audit verify' 'EXIT STATUS' '--sign KEY'; do
    grep -qF -- "$want" <<<"$page" || fail "man capsule lacks '$want'"
  done
  page=$(MANWIDTH=80 man -P cat 8 capsuled 2>&1) || fail "man 8 capsuled: $page"
  grep -qF -- '--accept-witnessed-loss' <<<"$page" || fail "man capsuled lacks its options"
  echo "deb: man capsule, man 8 capsuled ok"
fi

# 6. The installed unit: exposure and the promised lines (tests/packaging/unit_security.sh).
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  bash "$SRC/tests/packaging/unit_security.sh" /lib/systemd/system/capsuled.service ||
    fail "the installed unit fails unit_security.sh"
else
  echo "deb: systemd-analyze lacks --offline: the exposure check is skipped" >&2
fi

# 7. Bash completion, as bash-completion loads it (on demand, by command name).
complete_words() {  # complete_words LINE...: what <TAB> after the words offers
  bash -c '
    if [ -f /usr/share/bash-completion/bash_completion ]; then
      . /usr/share/bash-completion/bash_completion
      _completion_loader "$1" 2>/dev/null || . "/usr/share/bash-completion/completions/$1"
    else
      . "/usr/share/bash-completion/completions/$1"
    fi
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
    fn=$(complete -p "$1" | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
    "$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    echo "${COMPREPLY[*]}"' complete "$@"
}
[ "$(complete_words capsule au)" = audit ] || fail "capsule au<TAB> offers '$(complete_words capsule au)'"
[[ " $(complete_words capsule audit '') " == *" verify "* ]] || fail "capsule audit <TAB> lacks verify"
[[ " $(complete_words capsule seal --s) " == *" --sign "* ]] || fail "capsule seal --s<TAB> lacks --sign"
[ "$(complete_words capsuled --si)" = --site ] || fail "capsuled --si<TAB> offers '$(complete_words capsuled --si)'"
echo "deb: bash completion ok"

# 8. The daemon as the unit runs it. The site the unit expects: /etc/bunker/site.json, the key
# owned by bunker, state /var/lib/bunker, store /srv/bunker, socket in /run/bunker.
UNIT=/lib/systemd/system/capsuled.service
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
[ "$exec_start" = "/usr/bin/capsuled --site /etc/bunker/site.json" ] || fail "unexpected ExecStart=$exec_start"
mkdir -p /etc/bunker/trusted "$WORK/data"
(cd /etc/bunker && capsule keygen -o site >/dev/null) || fail "keygen of the site key failed"
chown bunker:bunker /etc/bunker/site.key
cp "$WORK/owner.pub" /etc/bunker/trusted/
# The package's example site file as it is, and its destination made as the README says:
# `install -d -m 1777 /srv/datasets` and a drop-in `ReadWritePaths=/srv/datasets`.
cp /usr/share/doc/bunker/examples/site.json /etc/bunker/site.json
grep -q '"/srv/datasets"' /etc/bunker/site.json || fail "the example site file has no /srv/datasets destination"
grep -q 'install -d -m 1777 /srv/datasets' "$SRC/README.md" ||
  fail "the README no longer makes /srv/datasets: follow it here"
install -d -m 1777 /srv/datasets
echo "sealed by the deb test" > "$WORK/data/hello.txt"
capsule seal "$WORK/data" -o "$WORK/data.capsule" --sign "$WORK/owner.key" \
  --to /etc/bunker/site.pub >/dev/null || fail "capsule seal failed"
chmod 644 "$WORK/data.capsule"
# RuntimeDirectory=bunker with RuntimeDirectoryMode=0755.
install -d -o bunker -g bunker -m 0755 /run/bunker
# ProtectSystem=strict + ReadWritePaths + StateDirectory + RuntimeDirectory + PrivateTmp:
# everything read-only in the daemon's mount namespace but those paths; then the unit's user,
# capabilities and UMask=0077.
rw_paths="$(sed -n 's/^ReadWritePaths=//p' "$UNIT") /srv/datasets"  # + the README's drop-in
unshare --mount --propagation private -- bash -c '
  set -e
  for p in $1 /run/bunker; do mount --bind "$p" "$p"; done
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  while read -r _ _ _ _ mp _; do
    case " $1 /run/bunker /tmp " in *" $mp "*) continue ;; esac
    # Mounts below /tmp are hidden by the tmpfs above (a FUSE mount of another user among them).
    case $mp in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/tmp/*) continue ;; esac
    mp=$(printf "%b" "$mp")  # mountinfo writes a space as \040
    mount -o remount,bind,ro "$mp"
  done < /proc/self/mountinfo
  if touch /usr/.bunker-deb-test 2>/dev/null; then
    rm -f /usr/.bunker-deb-test; echo "the sandbox left /usr writable" >&2; exit 1
  fi
  umask 077
  shift
  exec setpriv --reuid bunker --regid bunker --init-groups --inh-caps=-all,+chown \
    --ambient-caps=-all,+chown --bounding-set=-all,+chown --no-new-privs -- "$@"
' sandbox "$rw_paths" $exec_start 2>"$WORK/capsuled.log" &
DAEMON=$!
for _ in $(seq 1 400); do
  [ -S /run/bunker/verifier.sock ] && break
  kill -0 "$DAEMON" 2>/dev/null || break
  sleep 0.05
done
[ -S /run/bunker/verifier.sock ] || { cat "$WORK/capsuled.log" >&2; fail "the daemon made no socket in /run/bunker"; }
got=$(capsule cat "$WORK/data.capsule" hello.txt --site /etc/bunker/site.json 2>&1) ||
  { cat "$WORK/capsuled.log" >&2; fail "capsule cat through the daemon: $got"; }
[ "$got" = "sealed by the deb test" ] || fail "capsule cat through the daemon gave '$got'"
# Any local user may ask (RuntimeDirectoryMode=0755, whatever UMask=0077 does to the socket).
chmod 755 "$WORK"
got=$(setpriv --reuid nobody --regid nogroup --clear-groups -- \
        capsule ls "$WORK/data.capsule" --site /etc/bunker/site.json 2>&1) ||
  { cat "$WORK/capsuled.log" >&2; fail "capsule ls as nobody through the daemon: $got"; }
[[ $got == *hello.txt* ]] || fail "capsule ls as nobody gave '$got'"
capsule open "$WORK/data.capsule" --site /etc/bunker/site.json --to /srv/datasets/out >/dev/null 2>&1 ||
  { cat "$WORK/capsuled.log" >&2; fail "capsule open through the daemon failed"; }
[ "$(stat -c %U /srv/datasets/out/hello.txt)" = root ] || fail "the release does not belong to its requester"
# Any local user releases into a folder of their own below the shared destination.
got=$(setpriv --reuid nobody --regid nogroup --clear-groups -- capsule open "$WORK/data.capsule" \
        --site /etc/bunker/site.json --to /srv/datasets/nobody-run 2>&1) ||
  { cat "$WORK/capsuled.log" >&2; fail "capsule open as nobody into /srv/datasets: $got"; }
[ "$(stat -c %U /srv/datasets/nobody-run/hello.txt)" = nobody ] || fail "nobody's release is not nobody's"
[ "$(stat -c %U /var/lib/bunker/audit.log)" = bunker ] || fail "no audit log of bunker in /var/lib/bunker"
capsule audit verify --log /var/lib/bunker/audit.log --key /etc/bunker/site.pub >/dev/null ||
  fail "the daemon's audit log does not verify"
kill "$DAEMON"; wait "$DAEMON"; rc=$?; DAEMON=""
[ $rc -eq 0 ] || { cat "$WORK/capsuled.log" >&2; fail "the daemon exited $rc on SIGTERM"; }
echo "deb: capsuled served cat, ls (as nobody) and open as bunker, read-only but for $rw_paths /run/bunker"

# 9. Remove and purge: nothing of the package is left.
dpkg -r bunker >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; fail "dpkg -r failed"; }
dpkg --purge bunker >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; fail "dpkg --purge failed"; }
for f in /usr/bin/capsule /usr/bin/capsuled "$UNIT" /etc/systemd/system/capsuled.service \
         /usr/share/man/man1/capsule.1.gz /usr/share/doc/bunker; do
  [ -e "$f" ] || [ -L "$f" ] && fail "$f is left after dpkg --purge"
done
echo "ok [deb]: $(basename "$DEB") lintian-clean, installs, runs, purges"

#!/usr/bin/env bash
# The generated man pages and bash completion (packaging/gen_man.sh, gen_completion.sh) follow
# the built CLI: every command and subcommand `capsule --help` lists has its section in
# capsule(1) and completes; every option of a command completes; the pages render without
# groff warnings.
# Usage: docs_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
BUILD=$(realpath "$1") SRC=$(realpath "$2")
CAPSULE=$BUILD/cli/capsule GEN=$BUILD/packaging
fail() { echo "FAIL [docs]: $*" >&2; exit 1; }
command -v man >/dev/null || { echo "SKIP [docs]: man is not installed (man-db)" >&2; exit 77; }

for page in "$GEN/capsule.1.gz" "$GEN/capsuled.8.gz"; do
  [ -f "$page" ] || fail "$page was not generated"
  out=$(MANWIDTH=100 man --warnings -l -P cat "$page" 2>"$BUILD/docs_test.err") || fail "man $page failed"
  [ -s "$BUILD/docs_test.err" ] && { cat "$BUILD/docs_test.err" >&2; fail "groff warns about $page"; }
  [ "$page" = "$GEN/capsule.1.gz" ] && capsule_page=$out
done

complete_words() {  # complete_words LINE...: what <TAB> after the words offers
  bash -c '. "$0/$1"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); "_$1"; echo "${COMPREPLY[*]}"' \
    "$GEN/completions" "$@"
}

tree=$(bash "$SRC/packaging/cli_commands.sh" "$CAPSULE") || fail "cli_commands.sh failed"
n=0
while read -r cmd sub; do
  grep -qE "^   capsule $cmd${sub:+ $sub}\$" <<<"$capsule_page" || fail "capsule(1) has no section 'capsule $cmd $sub'"
  if [ -z "$sub" ]; then
    [[ " $(complete_words capsule "${cmd:0:2}") " == *" $cmd "* ]] || fail "capsule ${cmd:0:2}<TAB> does not offer $cmd"
  else
    [[ " $(complete_words capsule "$cmd" "") " == *" $sub "* ]] || fail "capsule $cmd <TAB> does not offer $sub"
  fi
  # Every option of the command's --help completes after --.
  offered=" $(complete_words capsule $cmd $sub --) "
  for opt in $("$CAPSULE" $cmd $sub --help | sed -n 's/^  \(--[a-z][a-z-]*\).*/\1/p'); do
    [[ $offered == *" $opt "* ]] || fail "capsule $cmd $sub --<TAB> does not offer $opt"
  done
  n=$((n + 1))
done <<<"$tree"
[ "$(complete_words capsule audit show --decision '')" = "permit deny" ] ||
  fail "--decision <TAB> offers '$(complete_words capsule audit show --decision '')'"
[ -z "$(complete_words capsule seal -o '')" ] || fail "-o <TAB> should leave file names to bash"
[ "$(complete_words capsuled --ac)" = --accept-witnessed-loss ] || fail "capsuled --ac<TAB>"
echo "ok [docs]: $n commands in capsule(1) and the completion"

#!/usr/bin/env bash
# Builds a man page from docs/man/NAME.SECTION.md: the hand-written page with its placeholders
# filled from the built programs (so the page says what the binary does), rendered by lowdown
# and compressed as Debian wants (gzip -9n: no name, no time stamp).
#   @VERSION@  @DATE@   the project version; the date of the top packaging/debian/changelog entry
#   @COMMANDS@          every capsule command and subcommand, from their --help
#   @HELP@              the --help of the program itself (capsuled)
#   @EXIT_STATUS@       the README's "Exit status" table, as a list
# Usage: gen_man.sh TEMPLATE OUT.gz PROGRAM VERSION CHANGELOG README
set -euo pipefail
template=$1 out=$2 program=$3 version=$4 changelog=$5 readme=$6
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The man page's date: the changelog's, not the build's (reproducible).
stamp=$(sed -n 's/^ -- .*>  \(.*\)$/\1/p' "$changelog" | head -n1)
date=$(LC_ALL=C date -u -d "$stamp" +%Y-%m-%d)

help_md() {  # help_md HEADING ARGS... : the markdown of `PROGRAM ARGS... --help`
  local heading=$1; shift
  "$program" "$@" --help | awk -v heading="$heading" -f "$here/help_to_markdown.awk"
}

commands() {
  local line
  while IFS= read -r line; do
    if [[ $line == *" "* ]]; then help_md "### capsule $line" $line; else help_md "## capsule $line" $line; fi
    echo
  done < <(bash "$here/cli_commands.sh" "$program")
}

exit_status() {  # The README table "| N | meaning |" rows under "### Exit status".
  awk '/^### Exit status/ { on = 1; next }
       on && /^\| *[0-9]+ *\|/ {
         line = $0; sub(/^\| */, "", line); n = line; sub(/ *\|.*/, "", n)
         sub(/^[0-9]+ *\| */, "", line); sub(/ *\| *$/, "", line)
         print "**" n "**"; print ":   " line; print ""; rows++; next }
       on && rows && !/^\|/ { exit }
       END { if (!rows) exit 1 }' "$readme"
}

{
  while IFS= read -r line; do
    case $line in
      @COMMANDS@) commands ;;
      @HELP@) help_md "" ;;
      @EXIT_STATUS@) exit_status ;;
      *) line=${line//@VERSION@/$version}; printf '%s\n' "${line//@DATE@/$date}" ;;
    esac
  done < "$template"
} > "$tmp/page.md"
lowdown -s -Tman --out-no-smarty "$tmp/page.md" > "$tmp/page"
gzip -9n < "$tmp/page" > "$out.tmp"
mv "$out.tmp" "$out"

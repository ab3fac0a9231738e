#!/usr/bin/env bash
# Prints the command tree of a built `capsule`, read from its own --help: one line per command
# ("seal"), then one per subcommand ("audit show"). What the man page and the bash completion
# are generated from, so that they follow the CLI's command table.
# Usage: cli_commands.sh CAPSULE
set -euo pipefail
capsule=$1
commands=$("$capsule" --help | awk '/^Commands:$/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ { on = 0 }')
[ -n "$commands" ] || { echo "cli_commands.sh: no commands in '$capsule --help'" >&2; exit 1; }
for c in $commands; do
  echo "$c"
  help=$("$capsule" "$c" --help)
  # Subcommands: a "Subcommands:" list (audit), or usage lines "capsule CMD SUB ..." (policy).
  subs=$( { awk '/^Subcommands:$/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ { on = 0 }' <<<"$help"
            awk -v c="$c" '/^$/ { exit } { sub(/^Usage:/, ""); if ($1 == "capsule" && $2 == c && $3 ~ /^[a-z][a-z-]*$/) print $3 }' <<<"$help"
          } | awk '!seen[$0]++')
  for s in $subs; do
    # Only what really is a subcommand: its own --help works.
    if "$capsule" "$c" "$s" --help >/dev/null 2>&1; then echo "$c $s"; fi
  done
done

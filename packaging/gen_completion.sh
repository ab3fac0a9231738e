#!/usr/bin/env bash
# Generates the bash completion of `capsule` and `capsuled` from the built programs' --help
# (packaging/cli_commands.sh), so that it completes exactly the commands, subcommands and
# options the binaries have. Options taking a value complete its choices when the help names
# them (--decision permit|deny), else file names.
# Usage: gen_completion.sh CAPSULE CAPSULED OUT_DIR   (writes OUT_DIR/capsule, OUT_DIR/capsuled)
set -euo pipefail
capsule=$1 capsuled=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"

# options_of ARGS...: "name value" per option of `ARGS --help` ("-" for a flag without value).
options_of() {
  "$@" --help | awk '
    /^Options:$/ { on = 1; next }
    on && /^$/ { exit }
    on && /^  --/ {
      line = substr($0, 3)
      if (length(line) > 22 && substr(line, 23, 1) == " ") {
        n = split(substr(line, 1, 22), w, " ")
      } else {
        n = split(line, w, " ")
        if (n >= 2 && w[2] ~ /^[a-z(]+$/) n = 1
      }
      name = substr(w[1], 3)
      print name, (n >= 2 ? w[2] : "-")
    }'
}

# case_arms KEY ARGS...: the lines of a `case` arm filling opts, valued and choices.
case_arms() {
  local key=$1; shift
  local opts="" valued="" choices=""
  local name value
  while read -r name value; do
    opts+=" --$name"
    if [ "$value" != "-" ]; then
      valued+=" --$name"
      if [[ $value =~ ^[a-z0-9-]+(\|[a-z0-9-]+)+$ ]]; then choices+=" --$name=${value//|/,}"; fi
    fi
  done < <(options_of "$@")
  printf "    '%s')\n      opts='%s --help'\n      valued='%s'\n      choices='%s' ;;\n" \
    "$key" "${opts# }" "${valued# }" "${choices# }"
}

tree=$(bash "$here/cli_commands.sh" "$capsule")
commands=$(grep -v ' ' <<<"$tree" | tr '\n' ' ')

{
  cat <<'HEAD'
# bash completion for capsule(1). Generated from `capsule --help` by packaging/gen_completion.sh:
# do not edit.

# _bunker_complete_option OPTS VALUED CHOICES: completes the word at COMP_CWORD from a command's
# options, the choices of the option before it, or file names (COMPREPLY left empty: the
# completion falls back to file names, `complete -o default`).
_bunker_complete_option() {
  local opts=$1 valued=$2 choices=$3
  local cur=${COMP_WORDS[COMP_CWORD]} prev=
  [ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}
  [ "$prev" = -o ] && prev=--output
  local c
  if [ -n "$prev" ] && [[ " $valued " == *" $prev "* ]]; then
    for c in $choices; do
      if [ "${c%%=*}" = "$prev" ]; then
        local words=${c#*=}
        COMPREPLY=($(compgen -W "${words//,/ }" -- "$cur"))
        return 0
      fi
    done
    return 0
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  fi
  return 0
}

_capsule() {
  COMPREPLY=()
  local cur=${COMP_WORDS[COMP_CWORD]}
HEAD
  printf "  local commands='%s'\n" "${commands% }"
  cat <<'MID'
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
    return 0
  fi
  local key=${COMP_WORDS[1]} subs=
  case $key in
MID
  for c in $commands; do
    s=$(awk -v c="$c" '$1 == c && NF == 2 { printf "%s%s", sep, $2; sep = " " }' <<<"$tree")
    [ -n "$s" ] && printf "    '%s') subs='%s' ;;\n" "$c" "$s"
  done
  cat <<'MID'
  esac
  if [ -n "$subs" ]; then
    if [ "$COMP_CWORD" -eq 2 ]; then
      COMPREPLY=($(compgen -W "$subs --help" -- "$cur"))
      return 0
    fi
    key="$key ${COMP_WORDS[2]}"
  fi
  local opts= valued= choices=
  case $key in
MID
  while IFS= read -r line; do
    # shellcheck disable=SC2086  # the words are the command's arguments
    case_arms "$line" "$capsule" $line
  done <<<"$tree"
  cat <<'TAIL'
    *) return 0 ;;
  esac
  _bunker_complete_option "$opts" "$valued" "$choices"
}
complete -o default -F _capsule capsule
TAIL
} > "$out/capsule.tmp"

{
  cat <<'HEAD'
# bash completion for capsuled(8). Generated from `capsuled --help` by
# packaging/gen_completion.sh: do not edit.

_capsuled() {
  COMPREPLY=()
  local opts= valued= choices=
  case capsuled in
HEAD
  case_arms capsuled "$capsuled"
  cat <<'TAIL'
  esac
  _bunker_complete_option "$opts" "$valued" "$choices"
}
TAIL
  # capsuled's file must stand alone: bash-completion loads one file per command, on demand.
  sed -n '/^_bunker_complete_option() {$/,/^}$/p' "$out/capsule.tmp"
  echo 'complete -o default -F _capsuled capsuled'
} > "$out/capsuled.tmp"
bash -n "$out/capsule.tmp" && bash -n "$out/capsuled.tmp"
mv "$out/capsule.tmp" "$out/capsule"
mv "$out/capsuled.tmp" "$out/capsuled"

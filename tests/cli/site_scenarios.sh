#!/usr/bin/env bash
# CLI scenarios for opening under a policy at a site (issue: policy, verifier, audit log).
# Usage: site_scenarios.sh CAPSULE_BINARY SCENARIO
set -uo pipefail
CAPSULE=$1
SCENARIO=$2
. "$(dirname "$0")/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bunker-site-XXXXXX")
trap 'remove_work $?' EXIT
cd "$WORK"

# A dataset, an owner, site B with its config, and Alice. $1: the policy's rules (JSON array
# body); the seal happens here.
keys() {  # the identities; ALICE and BOB hold fingerprints (call before naming them in rules)
  [ -f owner.key ] && return
  "$CAPSULE" keygen -o owner >/dev/null
  "$CAPSULE" keygen -o site-b >/dev/null
  "$CAPSULE" keygen -o mallory >/dev/null
  ALICE=$(fingerprint_of alice)
  BOB=$(fingerprint_of bob)
}

setup() {
  mkdir -p data/train data/pii
  printf 'row 1\n' > data/train/a.csv
  printf 'row 2\n' > data/train/b.csv
  printf 'secret\n' > data/pii/names.csv
  keys
  mkdir -p landing
  cat > site-b.json <<JSON
{ "site": "site-b", "region": "eu-west-1", "storage": ["encrypted-at-rest", "eu"],
  "identity": "site-b.key", "trust": ["owner.pub"], "destinations": ["landing"],
  "state": "state" }
JSON
  printf '{"version": 1, "rules": [%s]}\n' "$1" > policy.json
  "$CAPSULE" seal data -o d.capsule --sign owner.key --to site-b.pub --policy policy.json \
    >/dev/null 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "seal"; }
}
open_site() { "$CAPSULE" open d.capsule --site site-b.json "$@"; }
# audit_has DECISION: the last audit entry has this decision.
audit_last() {
  "$CAPSULE" audit show --site site-b.json --json 2>/dev/null | tail -1
}


scenario_site_permit_and_audit() {
  setup '{"id": "train", "effect": "permit", "sites": ["site-b"], "purposes": ["training"], "paths": ["train/**"]}, {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}'
  expect_exit 0 open_site --purpose training --only 'train/**' --to landing/run1
  expect_out "permitted by train"
  diff -r data/train landing/run1/train || fail "extracted train/ differs"
  [ ! -e landing/run1/pii ] || fail "pii extracted"
  audit_last | grep -q '"decision": "permit"' || fail "permit not in the audit log"
  expect_exit 0 "$CAPSULE" audit verify --log state/audit.log --key site-b.pub
}

scenario_site_wrong_purpose_is_denied_and_logged() {
  setup '{"id": "train", "effect": "permit", "purposes": ["training"]}'
  expect_exit 5 open_site --purpose marketing --to landing/out
  expect_err 'denied by the capsule'
  expect_err 'marketing'
  [ ! -e landing/out ] || fail "destination created on a deny"
  audit_last | grep -q '"decision": "deny"' || fail "deny not in the audit log"
  expect_exit 5 open_site --to landing/out
}

scenario_site_forbidden_path_names_the_file() {
  setup '{"id": "all", "effect": "permit"}, {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}'
  expect_exit 5 open_site --to landing/out
  expect_err 'pii/names.csv'
  [ ! -e landing/out ] || fail "destination created on a partial grant"
  no_leftovers landing
  expect_exit 0 open_site --only 'train/**' --to landing/out
  expect_exit 5 "$CAPSULE" cat d.capsule pii/names.csv --site site-b.json
  expect_exit 0 "$CAPSULE" cat d.capsule train/a.csv --site site-b.json
  expect_out 'row 1'
  # ls shows what may be opened, and not even the name of the forbidden folder.
  expect_exit 0 "$CAPSULE" ls d.capsule --site site-b.json
  expect_out 'train/a.csv'
  ! grep -q 'pii' "$WORK/.stdout" || fail "ls shows the forbidden tree: $(cat "$WORK/.stdout")"
}

scenario_site_wrong_site_region_storage() {
  setup '{"id": "s", "effect": "permit", "sites": ["site-a"]}'
  expect_exit 5 open_site --to landing/out
  expect_err 'site-a'
  rm -rf state d.capsule
  printf '{"version": 1, "rules": [{"id": "r", "effect": "permit", "regions": ["cn-east-1"]}]}' > policy.json
  "$CAPSULE" seal data -o d.capsule --sign owner.key --to site-b.pub --policy policy.json >/dev/null
  expect_exit 5 open_site --to landing/out
  expect_err 'cn-east-1'
  rm -rf state d.capsule
  printf '{"version": 1, "rules": [{"id": "r", "effect": "permit", "storage": ["eu", "hsm"]}]}' > policy.json
  "$CAPSULE" seal data -o d.capsule --sign owner.key --to site-b.pub --policy policy.json >/dev/null
  expect_exit 5 open_site --to landing/out
  expect_err 'hsm'
  [ ! -e landing/out ] || fail "destination created"
}

scenario_site_requester() {
  keys
  setup "{\"id\": \"alice-only\", \"effect\": \"permit\", \"requesters\": [\"$ALICE\"]}"
  expect_exit 5 open_site --to landing/out
  expect_exit 5 open_site --as bob.key --to landing/out
  expect_err "$BOB"
  expect_exit 0 open_site --as alice.key --to landing/out
}

scenario_site_time_window() {
  setup '{"id": "past", "effect": "permit", "notAfter": "2001-01-01T00:00:00Z"}, {"id": "future", "effect": "permit", "notBefore": "2099-01-01T00:00:00Z"}'
  expect_exit 5 open_site --to landing/out
  expect_err 'past'
  expect_err 'future'
}

scenario_site_max_opens() {
  setup '{"id": "twice", "effect": "permit", "maxOpens": 2}'
  expect_exit 0 open_site --to landing/o1
  expect_exit 0 open_site --to landing/o2
  expect_exit 5 open_site --to landing/o3
  expect_err 'maxOpens'
  [ ! -e landing/o3 ] || fail "third open extracted"
  # explain counts nothing: still denied, and the count is unchanged.
  expect_exit 5 "$CAPSULE" policy explain d.capsule --site site-b.json
}

scenario_site_last_use_race() {
  setup '{"id": "once", "effect": "permit", "maxOpens": 1}'
  for i in 1 2 3 4; do
    ( open_site --to "landing/race$i" >/dev/null 2>"err$i"; echo $? > "rc$i" ) &
  done
  wait
  wins=$(cat rc1 rc2 rc3 rc4 | grep -c '^0$')
  denies=$(cat rc1 rc2 rc3 rc4 | grep -c '^5$')
  for i in 1 2 3 4; do
    case "$(cat "rc$i")" in 0|5) ;; *) echo "racer $i exited $(cat "rc$i"): $(cat "err$i")" >&2 ;; esac
  done
  [ "$wins" -eq 1 ] || fail "$wins opens won the last use"
  [ "$denies" -eq 3 ] || fail "$denies opens were denied"
  [ "$(ls landing | wc -l)" -eq 1 ] || fail "more than one extraction"
  expect_exit 0 "$CAPSULE" audit verify --log state/audit.log --key site-b.pub
  expect_out '4/4'
}

scenario_site_destination_outside() {
  setup '{"id": "all", "effect": "permit"}'
  expect_exit 5 open_site --to elsewhere
  expect_err 'not under any of the site'
  [ ! -e elsewhere ] || fail "extracted outside the destinations"
  [ ! -e state/audit.log ] || [ "$("$CAPSULE" audit show --site site-b.json --json | wc -l)" -eq 0 ] \
    || fail "refused destination reached the verifier"
}

scenario_site_untrusted_issuer() {
  setup '{"id": "all", "effect": "permit"}'
  "$CAPSULE" seal data -o m.capsule --sign mallory.key --to site-b.pub >/dev/null
  expect_exit 5 "$CAPSULE" open m.capsule --site site-b.json --to landing/out
  expect_err 'is not trusted'
}

scenario_site_offline_denies_site_conditions() {
  setup '{"id": "s", "effect": "permit", "sites": ["site-b"]}'
  expect_exit 5 "$CAPSULE" open d.capsule --identity site-b.key --trust owner.pub --to out
  expect_err 'need a site'
  [ ! -e out ] || fail "offline open extracted"
  rm d.capsule
  printf '{"version": 1, "rules": [{"id": "p", "effect": "permit", "purposes": ["x"]}]}' > policy.json
  "$CAPSULE" seal data -o d.capsule --sign owner.key --to site-b.pub --policy policy.json >/dev/null
  expect_exit 0 "$CAPSULE" open d.capsule --identity site-b.key --trust owner.pub --purpose x --to out
}

scenario_site_bad_config() {
  setup '{"id": "all", "effect": "permit"}'
  printf '{"site": "x", "colour": 1}' > bad.json
  expect_exit 3 "$CAPSULE" open d.capsule --site bad.json --to landing/out
  expect_err 'colour'
  one_line_err
  expect_exit 2 "$CAPSULE" open d.capsule --site site-b.json --identity site-b.key --to landing/o
}

scenario_site_audit_tamper_blocks_the_verifier() {
  setup '{"id": "all", "effect": "permit"}'
  expect_exit 0 open_site --to landing/o1
  expect_exit 0 open_site --to landing/o2
  # Roll the log back to its first entry: the site refuses to decide on it.
  cp state/audit.log saved.log
  first_len=$(( $(od -An -tu1 -N4 state/audit.log | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}') + 4 ))
  head -c "$first_len" saved.log > state/audit.log
  expect_exit 4 open_site --to landing/o3
  expect_err 'audit'
  [ ! -e landing/o3 ] || fail "opened on a rolled-back log"
  expect_exit 4 "$CAPSULE" audit verify --log state/audit.log --key site-b.pub
}

scenario_site_failed_open_spends_no_use() {
  setup '{"id": "once", "effect": "permit", "maxOpens": 1}'
  mkdir -p landing/full && touch landing/full/x
  expect_exit 7 open_site --to landing/full
  expect_exit 7 open_site --to landing/full
  expect_exit 6 "$CAPSULE" cat d.capsule nope.csv --site site-b.json
  expect_exit 0 open_site --to landing/ok
}

scenario_site_state_reset_is_noticed() {
  setup '{"id": "once", "effect": "permit", "maxOpens": 1}'
  expect_exit 0 open_site --to landing/o1
  expect_exit 5 open_site --to landing/o2
  rm -f state/state.db*
  expect_exit 4 open_site --to landing/o3
  expect_err 'state database'
  [ ! -e landing/o3 ] || fail "opened after the use counter was reset"
}

# The counts are bound to the audit log: editing state.db, or rolling it back (with or without
# the last checkpoint), is noticed and regains no use (spec/POLICY.md "Use counting").
scenario_site_state_tamper_is_noticed() {
  need sqlite3
  setup '{"id": "twice", "effect": "permit", "maxOpens": 2}'
  expect_exit 0 open_site --to landing/o1
  sqlite3 state/state.db ".backup saved.db"
  cp state/audit.checkpoints saved.checkpoints
  expect_exit 0 open_site --to landing/o2
  expect_exit 5 open_site --to landing/o3
  sqlite3 state/state.db 'UPDATE uses SET count=0'
  expect_exit 4 open_site --to landing/o4
  expect_err 'does not match its audit log'
  one_line_err
  sqlite3 state/state.db 'UPDATE uses SET count=2'
  expect_exit 5 open_site --to landing/o5
  # Back one step: the database as it was before the second open.
  sqlite3 state/state.db ".backup current.db"
  rm -f state/state.db*
  cp saved.db state/state.db
  expect_exit 4 open_site --to landing/o6
  expect_err 'does not match its audit log'
  # ... and the last checkpoint trimmed, so that the log's last entry looks unsigned.
  cp state/audit.checkpoints current.checkpoints
  head -n -6 current.checkpoints > state/audit.checkpoints
  expect_exit 4 open_site --to landing/o7
  expect_err 'no checkpoint signs'
  for d in o4 o6 o7; do [ ! -e "landing/$d" ] || fail "opened on tampered state ($d)"; done
  # Put back, the state works again, and the budget is still spent.
  rm -f state/state.db*
  cp current.db state/state.db
  cp current.checkpoints state/audit.checkpoints
  expect_exit 5 open_site --to landing/o8
  expect_err 'maxOpens'
  expect_exit 0 "$CAPSULE" audit verify --log state/audit.log --key site-b.pub
}

scenario_site_dotdot_destination() {
  setup '{"id": "all", "effect": "permit"}'
  mkdir -p outside/deep && ln -s "$WORK/outside/deep" landing/lnk
  expect_exit 3 open_site --to landing/lnk/../escaped
  [ ! -e outside/escaped ] || fail "extracted outside the destinations"
}

scenario_site_cat_is_exact_and_follows_links() {
  keys
  mkdir -p src/pub && printf 'secret\n' > src/secret && printf 'a\n' > src/pub/a
  printf 'bracket\n' > 'src/pub/[a]'
  # A tar with a hard link pub/hl -> secret.
  (cd src && ln secret pub/hl && tar -cf ../in.tar secret pub)
  # pub/hl itself is permitted, but its content is secret's, which is not.
  printf '{"version": 1, "rules": [{"id": "pub", "effect": "permit", "paths": ["pub/a", "pub/hl"]}]}' > policy.json
  "$CAPSULE" seal in.tar --from-tar -o d.capsule --sign owner.key --to site-b.pub --policy policy.json \
    >/dev/null 2>"$WORK/.stderr" || { cat "$WORK/.stderr"; fail "seal"; }
  mkdir -p landing
  cat > site-b.json <<JSON
{ "site": "site-b", "identity": "site-b.key", "trust": ["owner.pub"], "destinations": ["landing"],
  "state": "state" }
JSON
  expect_exit 0 "$CAPSULE" cat d.capsule pub/a --site site-b.json
  expect_exit 5 "$CAPSULE" cat d.capsule 'pub/[a]' --site site-b.json
  expect_exit 5 "$CAPSULE" cat d.capsule pub/hl --site site-b.json
}

run_scenario

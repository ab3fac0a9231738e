// Test-only helper for the CLI scenarios (tests/cli/scenarios.sh, scenario_audit_*): appends
// synthetic decisions to a site's audit log through verifier::AuditLog, as the verifier does,
// so that `capsule audit` can be exercised without opening capsules. Not installed.
//
// Usage: audit_fixture STATE_DIR SITE.key COUNT [FIRST]
// Appends records FIRST..FIRST+COUNT-1 (FIRST defaults to 0) for site "site-b" and prints the
// last checkpoint. Record i: time 1700000000 + 3600*i; "deny" when i % 3 == 2, else "permit";
// capsule 00..00 followed by i % 2; purposes vary and include a terminal escape, U+202E and
// invalid UTF-8 (i % 4 == 3) and a spreadsheet formula (i % 4 == 1); record 0 has local uid
// 1000 and pid 4242.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "capsule/key_files.h"
#include "verifier/audit_log.h"

namespace {

bunker::verifier::AuditRecord Record(int i) {
  bunker::verifier::AuditRecord r;
  r.time = 1700000000 + int64_t{3600} * i;
  r.event = "open";
  r.decision = i % 3 == 2 ? "deny" : "permit";
  r.capsule_id = absl::StrCat("0000000000000000000000000000000", i % 2);
  r.issuer = "bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa";
  r.site = "site-b";
  r.requester = i % 2 == 0 ? "bk1:bbbbbbbbbbbbbbbbbbbbbbbbba" : "";
  switch (i % 4) {
    case 1:
      r.purpose = "=2+3";
      break;
    case 3:
      // A terminal escape, a right-to-left override and a byte that is not UTF-8.
      r.purpose = "evil \x1b[2J \xe2\x80\xaegnp.exe \xff";
      break;
    default:
      r.purpose = "training";
      break;
  }
  r.paths = {"train/**"};
  r.rules = {r.decision == "deny" ? "no-pii" : "train"};
  r.reasons = {absl::StrCat("fixture record ", i)};
  if (i == 0) {  // a request over the site's socket
    r.uid = 1000;
    r.pid = 4242;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int count = 0, first = 0;
  if (argc < 4 || argc > 5 || !absl::SimpleAtoi(argv[3], &count) || count < 0 ||
      (argc == 5 && (!absl::SimpleAtoi(argv[4], &first) || first < 0))) {
    std::fprintf(stderr, "usage: audit_fixture STATE_DIR SITE.key COUNT [FIRST]\n");
    return 2;
  }
  absl::StatusOr<bunker::crypto::Identity> key = bunker::capsule::LoadIdentity(argv[2]);
  if (!key.ok()) {
    std::fprintf(stderr, "audit_fixture: %s\n", std::string(key.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<bunker::verifier::AuditLog>> log =
      bunker::verifier::AuditLog::Open(argv[1], &*key, "site-b", std::nullopt);
  if (!log.ok()) {
    std::fprintf(stderr, "audit_fixture: %s\n", std::string(log.status().message()).c_str());
    return 1;
  }
  std::string last;
  for (int i = first; i < first + count; ++i) {
    const bunker::verifier::AuditRecord r = Record(i);
    absl::StatusOr<bunker::verifier::Checkpoint> c = (*log)->Append(r, r.time + 1);
    if (!c.ok()) {
      std::fprintf(stderr, "audit_fixture: %s\n", std::string(c.status().message()).c_str());
      return 1;
    }
    last = c->Encode();
  }
  std::fputs(last.c_str(), stdout);
  return 0;
}

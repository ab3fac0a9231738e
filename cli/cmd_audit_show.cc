// capsule audit show: list the decisions in a site's audit log (spec/AUDIT.md).
#include "cli/audit_common.h"

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/utc.h"
#include "site/site_config.h"
#include "verifier/audit_log.h"

namespace bunker::cli::audit {

int RunShow(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit show",
      "--site SITE.json | --log PATH [--capsule ID] [--requester FP] [--decision permit|deny]\n"
      "       [--since TIME] [--until TIME] [--json]",
      "List the decisions in a site's audit log, oldest first.",
      "TIME is RFC 3339 (2024-05-01T00:00:00Z or 2024-05-01T02:00:00+02:00); --since and\n"
      "--until are inclusive. This only reads the log; 'capsule audit verify' checks it.",
      {},
      {{"site", true, false, "the site's configuration (its state folder holds the log)",
        "SITE.json"},
       {"log", true, false, "the audit log file instead of --site", "PATH"},
       {"capsule", true, false, "only this capsule", "ID"},
       {"requester", true, false, "only this requester", "FP"},
       {"decision", true, false, "only permits or only denials", "permit|deny"},
       {"since", true, false, "only decisions at or after TIME", "TIME"},
       {"until", true, false, "only decisions at or before TIME", "TIME"},
       {"json", false, false, "one JSON object per line"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (a.Has("site") == a.Has("log")) return ctx.UsageError("give exactly one of --site or --log");
  std::string log = a.Get("log");
  if (a.Has("site")) {
    absl::StatusOr<site::SiteConfig> site = site::LoadSiteConfig(a.Get("site"));
    if (!site.ok()) return ctx.Fail(site.status());
    log = site->state + "/audit.log";
  }
  verifier::AuditFilter filter;
  filter.capsule_id = a.Get("capsule");
  filter.requester = a.Get("requester");
  filter.decision = a.Get("decision");
  if (!filter.decision.empty() && filter.decision != "permit" && filter.decision != "deny") {
    return ctx.UsageError("--decision must be permit or deny");
  }
  for (const char* flag : {"since", "until"}) {
    if (!a.Has(flag)) continue;
    absl::StatusOr<int64_t> t = ParseTimeFlag(flag, a.Get(flag));
    if (!t.ok()) return ctx.UsageError(std::string(t.status().message()));
    (std::string(flag) == "since" ? filter.since : filter.until) = *t;
  }

  uint64_t shown = 0;
  // The table's header goes out with its first row (or with "no matching entries"): a log that
  // cannot be read prints only its error.
  bool header = ctx.json();
  auto print_header = [&header]() {
    if (header) return;
    header = true;
    std::printf("%-6s %-20s  %-8s  %-8s  %-32s  %-10s  %-30s  %s\n", "#", "TIME", "EVENT",
                "DECISION", "CAPSULE", "UID", "REQUESTER/PEER", "PURPOSE; REASONS");
  };
  uint64_t entries = 0;
  absl::Status s =
      verifier::ForEachAuditRecord(log, [&](uint64_t index, const verifier::AuditRecord& r) {
        entries = index + 1;
        if (!filter.Matches(r)) return true;
        ++shown;
        if (ctx.json()) {
          ctx.PrintJson(verifier::AuditRecordToJson(index, r));
          return true;
        }
        print_header();
        std::string why = r.purpose.empty() ? "-" : absl::StrCat("\"", r.purpose, "\"");
        for (const std::string& reason : r.reasons) absl::StrAppend(&why, "; ", reason);
        // The local client's uid, or "-" when the request did not come over the site's socket.
        const std::string uid = r.uid ? absl::StrCat(*r.uid) : "-";
        std::printf("%-6llu %-20s  %-8s  %-8s  %-32s  %-10s  %-30s  %s\n",
                    static_cast<unsigned long long>(index), capsule::FormatUtc(r.time).c_str(),
                    TerminalSafe(r.event).c_str(), TerminalSafe(r.decision).c_str(),
                    TerminalSafe(r.capsule_id.empty() ? "-" : r.capsule_id).c_str(), uid.c_str(),
                    r.requester.empty() ? "-" : TerminalSafe(r.requester).c_str(),
                    TerminalSafe(why).c_str());
        return true;
      });
  std::fflush(stdout);
  if (!s.ok()) {
    return ctx.Fail(s, absl::IsDataLoss(s) ? "run 'capsule audit verify' to find what is wrong"
                                           : "");
  }
  if (!ctx.json() && shown == 0) {
    print_header();
    std::printf("(no matching entries)\n");
  }
  WarnIfUnsigned(log, entries);
  return kExitOk;
}

}  // namespace bunker::cli::audit

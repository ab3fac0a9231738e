// capsule audit: review a site's audit log (spec/AUDIT.md). One CommandSpec per subcommand, each
// in its own cli/cmd_audit_NAME.cc; what they share is cli/audit_common.h. The checking and the
// proofs are verifier/audit_log.h's.
#include <cstdio>
#include <string>

#include "cli/audit_common.h"
#include "cli/context.h"

namespace bunker::cli {
namespace {

void PrintAuditUsage(std::FILE* out) {
  std::fprintf(out,
               "Usage: capsule audit SUBCOMMAND [options]\n\n"
               "Review a site's tamper-evident audit log (spec/AUDIT.md).\n\nSubcommands:\n"
               "  show         list decisions, with filters (table or JSON lines)\n"
               "  verify       check every entry, the Merkle tree and every signed checkpoint\n"
               "  prove        print an inclusion proof for one entry\n"
               "  consistency  print a consistency proof from an older checkpoint\n"
               "  export       write every entry as JSON lines or CSV\n"
               "  report       one self-contained HTML page over one or more sites' logs\n\n"
               "Run 'capsule audit SUBCOMMAND --help' for its options.\n");
}

}  // namespace

int RunAudit(int argc, char** argv) {
  struct Sub {
    const char* name;
    int (*run)(int, char**);
  };
  static constexpr Sub kSubs[] = {{"show", audit::RunShow},
                                  {"verify", audit::RunVerifyLog},
                                  {"prove", audit::RunProve},
                                  {"consistency", audit::RunConsistency},
                                  {"export", audit::RunExport},
                                  {"report", audit::RunReport}};
  if (argc < 1) {
    std::fprintf(stderr, "capsule audit: missing subcommand\nhint: see 'capsule audit --help'\n");
    return kExitUsage;
  }
  const std::string sub = argv[0];
  if (sub == "-h" || sub == "--help" || sub == "help") {
    PrintAuditUsage(stdout);
    return kExitOk;
  }
  for (const Sub& s : kSubs) {
    if (sub == s.name) return s.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "capsule audit: unknown subcommand '%s'\nhint: see 'capsule audit --help'\n",
               TerminalSafe(sub).c_str());
  return kExitUsage;
}

}  // namespace bunker::cli

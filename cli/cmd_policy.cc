// capsule policy: check a policy file, or explain the decision a site would make for a capsule
// (spec/POLICY.md). Neither subcommand releases a key or counts a use.
#include <sys/stat.h>

#include <cstdio>
#include <ctime>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capsule/format.h"
#include "capsule/glob.h"
#include "capsule/io.h"
#include "capsule/json_writer.h"
#include "capsule/key_files.h"
#include "capsule/paths.h"
#include "capsule/reader.h"
#include "cli/context.h"
#include "verifier/policy.h"
#include "site/site_config.h"
#include "verifier/use_counter.h"

namespace bunker::cli {
namespace {

constexpr char kPolicyUsage[] =
    "Usage: capsule policy check POLICY.json [--json]\n"
    "       capsule policy explain CAPSULE --site SITE.json [--as KEY] [--purpose P] "
    "[--only GLOB]... [--json]\n\n"
    "Check a policy file, or explain the decision a site would make for a capsule.\n"
    "Run 'capsule policy SUBCOMMAND --help' for its options. The language: spec/POLICY.md.\n";


int RunCheck(int argc, char** argv) {
  static const CommandSpec kSpec{
      "policy check",
      "POLICY.json [--json]",
      "Validate a policy file exactly as `capsule seal --policy` does, and print OK with any\n"
      "warnings (such as a policy under which no rule can ever permit), or the first problem\n"
      "with its JSON path, e.g. `$.rules[1].maxOpens: must be at least 1` (exit 3).",
      "",
      {"POLICY.json"},
      {{"json", false, false, "print the result as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const std::string path = ctx.args().positionals()[0];
  // With --json a policy that cannot be read or is not valid is a result: {"valid": false}.
  auto invalid = [&ctx, &path](const absl::Status& s) {
    if (ctx.json()) {
      capsule::JsonWriter w;
      w.BeginObject()
          .Key("path").String(path)
          .Key("valid").Bool(false)
          .Key("error").String(std::string(s.message()))
          .Key("exitStatus").Number(ctx.ExitStatusFor(s))
          .EndObject();
      ctx.PrintJson(w.text());
    }
    return ctx.Fail(s);
  };
  absl::StatusOr<std::string> text = capsule::ReadSmallFile(path, capsule::kMaxPolicySize);
  if (!text.ok()) return invalid(text.status());
  absl::StatusOr<verifier::Policy> policy = verifier::ParsePolicy(*text);
  if (!policy.ok()) {
    return invalid(absl::Status(policy.status().code(),
                                absl::StrCat(path, ": ", policy.status().message())));
  }
  const std::vector<std::string> warnings = verifier::PolicyWarnings(*policy);
  size_t permits = 0;
  for (const verifier::Rule& r : policy->rules) {
    if (r.effect == verifier::Rule::Effect::kPermit) ++permits;
  }
  const size_t forbids = policy->rules.size() - permits;
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("path").String(path)
        .Key("valid").Bool(true)
        .Key("rules").Number(policy->rules.size())
        .Key("permitRules").Number(permits)
        .Key("forbidRules").Number(forbids)
        .Key("warnings").Strings(warnings)
        .EndObject();
    ctx.PrintJson(w.text());
    return kExitOk;
  }
  std::printf("%s: OK, %zu rule%s (%zu permit, %zu forbid)\n", TerminalSafe(path).c_str(),
              policy->rules.size(), policy->rules.size() == 1 ? "" : "s", permits, forbids);
  for (const std::string& w : warnings) std::printf("warning: %s\n", TerminalSafe(w).c_str());
  return kExitOk;
}

int RunExplain(int argc, char** argv) {
  static const CommandSpec kSpec{
      "policy explain",
      "CAPSULE --site SITE.json [--as KEY] [--purpose P] [--only GLOB]... [--json]",
      "Explain the decision `capsule open --site` would make for a capsule: permit or deny,\n"
      "the deciding rules, the denied files and each failing condition. Decrypts no file\n"
      "content, writes no audit record and counts no use. Exit 0 for a permit, 5 for a deny.",
      "The decision is the very one open would make: the site's verifier reads the capsule's\n"
      "file index (names only) and evaluates every selected file. Without --as no requester\n"
      "is known, so rules naming requesters do not match; --as may name a .pub here.",
      {"CAPSULE"},
      [] {
        std::vector<OptionSpec> o = ReleaseOptions();
        o.push_back({"only", true, true, "the selection to evaluate (default: everything)",
                     "GLOB"});
        o.push_back({"json", false, false, "print the decision as JSON"});
        return o;
      }()};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (!a.Has("site")) return ctx.UsageError("--site SITE.json is required");
  if (const std::string problem = ReleaseUsageProblem(ctx.args()); !problem.empty()) {
    return ctx.UsageError(problem);
  }
  absl::StatusOr<capsule::PathSelection> only = capsule::PathSelection::Parse(a.GetAll("only"));
  if (!only.ok()) return ctx.UsageError(std::string(only.status().message()));
  site::SiteRequest request;
  request.command = site::Command::kExplain;
  request.only = a.GetAll("only");
  absl::StatusOr<SiteRun> run = RunSiteRequest(ctx, a.positionals()[0], request);
  if (!run.ok()) return ctx.Fail(run.status());
  if (!run->status.ok()) return ctx.Fail(run->status);
  const site::Outcome& o = run->outcome;
  const verifier::Decision& decision = o.decision;
  const std::optional<std::string> requester =
      o.requester.empty() ? std::nullopt : std::optional<std::string>(o.requester);
  const std::optional<std::string> purpose =
      a.Has("purpose") ? std::optional<std::string>(a.Get("purpose")) : std::nullopt;
  const std::vector<std::string> selection = a.GetAll("only");

  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("capsule").String(o.capsule_id)
        .Key("site").String(run->site)
        .Key("requester").OptionalString(requester)
        .Key("purpose").OptionalString(purpose)
        .Key("selection").Strings(selection.empty() ? std::vector<std::string>{"**"} : selection)
        .Key("files").Number(o.files)
        .Key("decision").String(decision.permit ? "permit" : "deny")
        .Key("rules").Strings(decision.rules)
        .Key("reasons").Strings(decision.reasons)
        .Key("deniedFiles").Strings(decision.denied_files)
        .Key("countsUse").Bool(decision.counts_use)
        .EndObject();
    ctx.PrintJson(w.text());
  } else {
    std::printf("capsule    %s\n", o.capsule_id.c_str());
    std::printf("site       %s%s%s, storage [%s]\n", TerminalSafe(run->site).c_str(),
                run->region.empty() ? "" : " in ", TerminalSafe(run->region).c_str(),
                TerminalSafe(absl::StrJoin(run->storage, ", ")).c_str());
    std::printf("requester  %s\n", TerminalSafe(requester.value_or("none (no --as)")).c_str());
    std::printf("purpose    %s\n", TerminalSafe(purpose.value_or("none (no --purpose)")).c_str());
    std::printf("selection  %s (%llu files)\n",
                selection.empty() ? "everything"
                                  : TerminalSafe(absl::StrJoin(selection, ", ")).c_str(),
                static_cast<unsigned long long>(o.files));
    std::printf("decision   %s\n", decision.permit ? "permit" : "deny");
    if (!decision.rules.empty()) {
      std::printf("rules      %s\n", TerminalSafe(absl::StrJoin(decision.rules, ", ")).c_str());
    }
    for (const std::string& f : decision.denied_files) {
      std::printf("denied     %s\n", TerminalSafe(f).c_str());
    }
    for (const std::string& r : decision.reasons) {
      std::printf("reason     %s\n", TerminalSafe(r).c_str());
    }
    if (decision.permit && decision.counts_use) {
      std::printf("counting   opening would count one use of this capsule at %s\n",
                  TerminalSafe(run->site).c_str());
    }
  }
  return decision.permit ? kExitOk : kExitDenied;
}

}  // namespace

int RunPolicy(int argc, char** argv) {
  const std::string sub = argc > 0 ? argv[0] : "";
  if (sub == "check") return RunCheck(argc - 1, argv + 1);
  if (sub == "explain") return RunExplain(argc - 1, argv + 1);
  if (sub == "-h" || sub == "--help" || sub == "help") {
    std::fputs(kPolicyUsage, stdout);
    return kExitOk;
  }
  std::fprintf(stderr, "capsule policy: %s\nhint: see 'capsule policy --help'\n",
               sub.empty() ? "missing subcommand (check or explain)"
                           : absl::StrCat("unknown subcommand '", TerminalSafe(sub), "'").c_str());
  return kExitUsage;
}

}  // namespace bunker::cli

// capsule audit report: one self-contained HTML page over one or more sites' logs
// (verifier/audit_report.h builds it).
#include "cli/audit_common.h"

#include <cstdio>
#include <ctime>
#include <optional>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/json_writer.h"
#include "capsule/key_files.h"
#include "site/site_config.h"
#include "verifier/audit_log.h"
#include "verifier/audit_report.h"

namespace bunker::cli::audit {

namespace {

// The witnessed checkpoint of `key` that the folders hold (<dir>/<fingerprint>.checkpoint, as
// `audit verify --witness-dir` reads it), the largest when several do; nullopt when none does.
absl::StatusOr<std::optional<std::pair<Checkpoint, std::string>>> FindWitnessed(
    const std::vector<std::string>& dirs, const crypto::PublicIdentity& key) {
  std::optional<std::pair<Checkpoint, std::string>> best;
  for (const std::string& dir : dirs) {
    const std::string path = absl::StrCat(dir, "/", key.fingerprint().ToString(), ".checkpoint");
    if (access(path.c_str(), F_OK) != 0) continue;
    absl::StatusOr<Checkpoint> c = LoadCheckpointFile("witness-dir", path);
    if (!c.ok()) return c.status();
    if (!c->Verify(key).ok()) {
      return absl::DataLossError(absl::StrCat("the witnessed checkpoint ", path,
                                              " does not verify under the site key"));
    }
    if (!best || c->size > best->first.size) best = std::make_pair(*c, path);
  }
  return best;
}

}  // namespace

int RunReport(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit report",
      "(--site SITE.json | --log PATH --key SITE.pub)... -o REPORT.html [--witness-dir DIR]...\n"
      "       [--every-signature] [--force] [--json]",
      "Write one self-contained HTML page for an auditor over one or more sites' audit logs.",
      "Each log is verified first, as 'capsule audit verify' does (against a witnessed\n"
      "checkpoint when a --witness-dir holds one, and, with several --site, when another of\n"
      "those sites witnesses it), except that only the latest checkpoint's signature is checked\n"
      "unless --every-signature: every root still is, and the latest signature vouches for every\n"
      "entry through the tree. A log that does not verify writes no report (exit 4). The page\n"
      "shows the verdict, decisions over time, denials by reason, each capsule's history and\n"
      "uses against maxOpens (read from the site's store), what each requester opened for which\n"
      "purpose, the journey of each capsule across the sites given, and every entry in a table\n"
      "to filter, sort and prove. Its figures are counts over the entries 'capsule audit show\n"
      "--json' prints. It loads nothing from anywhere and runs only its own script.",
      {},
      {{"site", true, true, "a site's configuration: its log, key and store", "SITE.json"},
       {"log", true, true, "an audit log (give --key for each, in the same order)", "PATH"},
       {"key", true, true, "the public key of the site whose --log comes at the same place",
        "SITE.pub"},
       {"witness-dir", true, true, "a folder of witnessed checkpoints (<fingerprint>.checkpoint)",
        "DIR"},
       {"output", true, false, "the page to write (-o)", "REPORT.html"},
       {"every-signature", false, false,
        "verify every checkpoint's signature, not only the latest (slower)"},
       {"force", false, false, "replace REPORT.html if it exists"},
       {"json", false, false, "print a JSON summary of what was written"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  const std::vector<std::string> logs = a.Has("log") ? a.GetAll("log") : std::vector<std::string>{};
  const std::vector<std::string> keys = a.Has("key") ? a.GetAll("key") : std::vector<std::string>{};
  if (logs.size() != keys.size()) return ctx.UsageError("give one --key for each --log");
  if (logs.empty() && !a.Has("site")) return ctx.UsageError("give --site or --log with --key");
  if (!a.Has("output")) return ctx.UsageError("-o REPORT.html is required");
  std::vector<std::string> witness_dirs =
      a.Has("witness-dir") ? a.GetAll("witness-dir") : std::vector<std::string>{};

  std::vector<verifier::ReportLogInput> inputs;
  if (a.Has("site")) {
    for (const std::string& path : a.GetAll("site")) {
      absl::StatusOr<site::SiteConfig> site = site::LoadSiteConfig(path);
      if (!site.ok()) return ctx.Fail(site.status());
      // The site key's public half: from the key, or, for an auditor who may not read it, from
      // the public key file kept beside it.
      std::string pub;
      if (absl::EndsWith(site->identity, ".key")) {
        pub = site->identity.substr(0, site->identity.size() - 4) + ".pub";
        if (access(pub.c_str(), R_OK) != 0) pub.clear();
      }
      absl::StatusOr<crypto::PublicIdentity> key = absl::UnknownError("");
      absl::StatusOr<crypto::Identity> id = capsule::LoadIdentity(site->identity);
      if (id.ok()) {
        key = id->public_identity();
      } else if (!pub.empty()) {
        key = capsule::LoadPublicIdentity(pub);
      } else {
        return ctx.Fail(id.status(), "an auditor without the site key gives --log and --key");
      }
      if (!key.ok()) return ctx.Fail(key.status());
      if (id.ok() && !pub.empty()) {
        // The proof command names that file: it must be this site's key.
        absl::StatusOr<crypto::PublicIdentity> beside = capsule::LoadPublicIdentity(pub);
        if (!beside.ok() || !(*beside == *key)) pub.clear();
      }
      verifier::ReportLogInput in{site->state + "/audit.log", pub, *key, site->store,
                                  std::nullopt, ""};
      inputs.push_back(std::move(in));
      // A site keeps its peers' checkpoints: a witness for the other logs of this report.
      witness_dirs.push_back(site->state + "/witness");
    }
  }
  for (size_t i = 0; i < logs.size(); ++i) {
    absl::StatusOr<crypto::PublicIdentity> key = capsule::LoadPublicIdentity(keys[i]);
    if (!key.ok()) return ctx.Fail(key.status());
    inputs.push_back({logs[i], keys[i], *key, "", std::nullopt, ""});
  }
  for (verifier::ReportLogInput& in : inputs) {
    absl::StatusOr<std::optional<std::pair<Checkpoint, std::string>>> w =
        FindWitnessed(witness_dirs, in.key);
    if (!w.ok()) return ctx.Fail(w.status());
    if (*w) {
      in.witnessed = (*w)->first;
      in.witness_source = (*w)->second;
    }
  }
  absl::StatusOr<verifier::AuditReport> report =
      verifier::BuildAuditReport(std::move(inputs), static_cast<int64_t>(std::time(nullptr)),
                                 a.Has("every-signature"));
  if (!report.ok()) return ctx.Fail(report.status(), "run 'capsule audit verify' on that log");
  const std::string output = a.Get("output");
  absl::StatusOr<std::unique_ptr<capsule::AtomicFileWriter>> out =
      capsule::AtomicFileWriter::Create(output, 0644, a.Has("force"));
  if (!out.ok()) {
    return ctx.Fail(out.status(), absl::IsAlreadyExists(out.status())
                                      ? "pass --force to replace it"
                                      : "");
  }
  absl::Status s = verifier::WriteAuditReportHtml(*report, out->get());
  if (s.ok()) s = (*out)->Commit();
  if (!s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject().Key("output").String(output).Key("entries").Number(report->total);
    w.Key("sites").BeginArray();
    for (const verifier::ReportSite& site : report->sites) {
      w.BeginObject()
          .Key("site").String(site.name)
          .Key("log").String(site.log_path)
          .Key("entries").Number(site.entries)
          .Key("checkpoints").Number(site.checkpoints)
          .Key("witnessedSize").OptionalNumber(site.witnessed_size)
          .Key("leftOut").Number(site.left_out)
          .EndObject();
    }
    w.EndArray().EndObject();
    ctx.PrintJson(w.text());
    return kExitOk;
  }
  std::printf("wrote %s: %llu entries from %zu verified log%s\n", TerminalSafe(output).c_str(),
              static_cast<unsigned long long>(report->total), report->sites.size(),
              report->sites.size() == 1 ? "" : "s");
  return kExitOk;
}

}  // namespace bunker::cli::audit

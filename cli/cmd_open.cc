// capsule open: verify, decide under the policy (and record the decision), unwrap, decrypt and
// extract a capsule atomically, or write its decrypted archive. The site's verifier (or, offline,
// this process) does the work through the gate (site/gate.h); this file parses and prints.
#include <unistd.h>

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capsule/glob.h"
#include "capsule/json_writer.h"
#include "cli/context.h"

namespace bunker::cli {

int RunOpen(int argc, char** argv) {
  static const CommandSpec kSpec{
      "open",
      "CAPSULE (--site SITE.json | --identity KEY --trust ISSUER.pub) (--to DIR | --to-tar "
      "FILE|-) [--as KEY] [--purpose P] [--only GLOB]...",
      "Verify a capsule, decide under its policy, unwrap its key, decrypt, and extract it into a\n"
      "new directory DIR (which then holds the dataset's own top level), or write the decrypted\n"
      "pax archive with --to-tar.",
      "With --site, the site's verifier decides: signature and trust (the site's keys), then the\n"
      "policy (site, region, storage, requester --as, --purpose, time, paths, maxOpens), then a\n"
      "record in the site's audit log, and only then are contents decrypted; DIR must lie under\n"
      "one of the site's destinations. When the site file names a \"socket\", the site's\n"
      "verifier service does all of it (you never hold the site key) and the files it creates\n"
      "are yours; --direct decides in this process instead (operators with the key). Without\n"
      "--site, open works offline but denies a policy with conditions that need a site.\n"
      "Extraction is atomic: DIR appears only when every chunk authenticated. DIR must not\n"
      "exist or must be empty. Unsafe entries (absolute paths, '..', symlink escapes, devices,\n"
      "setuid bits) are refused. --only selects entries by glob: '*' within a path component,\n"
      "'**' across components; a directory selects everything below it. When the policy grants\n"
      "only some of the requested files, open refuses and names the denied ones.",
      {"CAPSULE"},
      [] {
        std::vector<OptionSpec> o = ReleaseOptions();
        o.insert(o.end(), {
       {"to", true, false, "directory to create and extract into", "DIR"},
       {"to-tar", true, false, "write the decrypted pax archive to FILE (- for stdout)", "FILE"},
       {"only", true, true, "extract only entries matching GLOB", "GLOB"},
       {"threads", true, false, "worker threads (default: all cores)", "N"},
       {"json", false, false, "print the result as JSON"}});
        return o;
      }()};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (a.Has("to") == a.Has("to-tar")) return ctx.UsageError("give exactly one of --to or --to-tar");
  if (a.Has("to-tar") && a.Has("only")) return ctx.UsageError("--only works with --to only");
  if (const std::string problem = ReleaseUsageProblem(a); !problem.empty()) {
    return ctx.UsageError(problem);
  }
  absl::StatusOr<int> threads = ctx.Threads();
  if (!threads.ok()) return ctx.UsageError(std::string(threads.status().message()));
  absl::StatusOr<capsule::PathSelection> only = capsule::PathSelection::Parse(a.GetAll("only"));
  if (!only.ok()) return ctx.UsageError(std::string(only.status().message()));
  const std::string to_tar = a.Get("to-tar");
  if (to_tar == "-" && ::isatty(STDOUT_FILENO) == 1) {
    return ctx.UsageError("refusing to write an archive to a terminal; redirect stdout");
  }

  site::SiteRequest request;
  request.command = a.Has("to") ? site::Command::kOpen : site::Command::kToTar;
  request.only = a.GetAll("only");
  request.destination = a.Has("to") ? a.Get("to") : (to_tar == "-" ? "" : to_tar);
  request.output_fd = to_tar == "-" ? STDOUT_FILENO : -1;
  request.threads = *threads;
  Progress progress("opening", 0, !ctx.json());
  request.progress = [&progress](uint64_t done, uint64_t total) {
    progress.SetTotal(total);
    progress.Update(done);
  };
  absl::StatusOr<SiteRun> run = RunSiteRequest(ctx, a.positionals()[0], std::move(request));
  progress.Finish();
  if (!run.ok()) return ctx.Fail(run.status());
  if (!run->status.ok()) return ctx.Fail(run->status);
  const site::Outcome& o = run->outcome;
  if (a.Has("to")) {
    const std::string dest = a.Get("to");
    if (ctx.json()) {
      capsule::JsonWriter w;
      w.BeginObject()
          .Key("capsule").String(o.capsule_id)
          .Key("to").String(dest)
          .Key("files").Number(o.files)
          .Key("directories").Number(o.directories)
          .Key("symlinks").Number(o.symlinks)
          .Key("bytes").Number(o.bytes)
          .Key("rules").Strings(o.decision.rules)
          .EndObject();
      ctx.PrintJson(w.text());
    } else {
      std::printf("opened capsule %s into %s: %llu files, %s%s\n", o.capsule_id.c_str(),
                  TerminalSafe(dest).c_str(), static_cast<unsigned long long>(o.files),
                  HumanBytes(o.bytes).c_str(),
                  o.decision.rules.empty()
                      ? ""
                      : absl::StrCat(" (permitted by ",
                                     TerminalSafe(absl::StrJoin(o.decision.rules, ", ")), ")")
                            .c_str());
    }
  } else if (to_tar != "-") {
    if (ctx.json()) {
      capsule::JsonWriter w;
      w.BeginObject()
          .Key("capsule").String(o.capsule_id)
          .Key("toTar").String(to_tar)
          .Key("bytes").Number(o.bytes)
          .EndObject();
      ctx.PrintJson(w.text());
    } else {
      std::printf("wrote the decrypted archive of capsule %s to %s (%s)\n", o.capsule_id.c_str(),
                  TerminalSafe(to_tar).c_str(), HumanBytes(o.bytes).c_str());
    }
  }
  return kExitOk;
}

}  // namespace bunker::cli

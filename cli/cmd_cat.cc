// capsule cat: one file's contents to stdout, decrypting only the chunks that hold it. The gate
// (site/gate.h) authenticates the whole file before its first byte is written.
#include <unistd.h>

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/context.h"

namespace bunker::cli {

int RunCat(int argc, char** argv) {
  static const CommandSpec kSpec{
      "cat",
      "CAPSULE PATH (--site SITE.json | --identity KEY --trust ISSUER.pub) [--as KEY] "
      "[--purpose P]",
      "Write one file's contents to standard output, when the capsule's policy permits it. Only\n"
      "the chunks holding the file are decrypted, each authenticated before any of its bytes is\n"
      "written.",
      "With --site the decision is recorded in the site's audit log (and counted), as for open;\n"
      "when the site file names a \"socket\" the site's verifier service writes the file into\n"
      "this command's standard output. Nothing is written unless every chunk of the file\n"
      "authenticated and its contents match the index digest.",
      {"CAPSULE", "PATH"},
      [] {
        std::vector<OptionSpec> o = ReleaseOptions();
        o.push_back({"threads", true, false, "worker threads (default: all cores)", "N"});
        return o;
      }()};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  if (const std::string problem = ReleaseUsageProblem(ctx.args()); !problem.empty()) {
    return ctx.UsageError(problem);
  }
  absl::StatusOr<int> threads = ctx.Threads();
  if (!threads.ok()) return ctx.UsageError(std::string(threads.status().message()));
  site::SiteRequest request;
  request.command = site::Command::kCat;
  request.path = ctx.args().positionals()[1];
  request.output_fd = STDOUT_FILENO;
  request.threads = *threads;
  // Progress on a terminal (stderr) while the file goes elsewhere: not over the file itself
  // when it is shown on the same terminal.
  Progress progress("checking", 0, ::isatty(STDOUT_FILENO) != 1);
  request.progress = [&progress](uint64_t done, uint64_t total) {
    progress.SetTotal(total);
    progress.Update(done);
  };
  absl::StatusOr<SiteRun> run = RunSiteRequest(ctx, ctx.args().positionals()[0], request);
  progress.Finish();
  if (!run.ok()) return ctx.Fail(run.status());
  if (!run->status.ok()) return ctx.Fail(run->status);
  return kExitOk;
}

}  // namespace bunker::cli

// capsule open: verify, decide under the policy (and record the decision), unwrap, decrypt and
// extract a capsule atomically.
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capsule/extract.h"
#include "capsule/glob.h"
#include "capsule/io.h"
#include "cli/context.h"

namespace bunker::cli {
namespace {

// Copies a payload stream to `out`, then checks that `rest` (the remainder of the payload) also
// authenticates, so nothing is committed from a capsule with a bad chunk anywhere.
absl::Status CopyAndDrain(capsule::ByteSource* stream, capsule::WritableFile* out,
                          capsule::ByteSource* rest) {
  while (true) {
    absl::Status s = CheckInterrupted();
    if (!s.ok()) return s;
    absl::StatusOr<absl::Span<const uint8_t>> piece = stream->Next();
    if (!piece.ok()) return piece.status();
    if (piece->empty()) break;
    s = out->Append(*piece);
    if (!s.ok()) return s;
  }
  while (rest != nullptr) {
    absl::StatusOr<absl::Span<const uint8_t>> piece = rest->Next();
    if (!piece.ok()) return piece.status();
    if (piece->empty()) break;
  }
  return absl::OkStatus();
}

}  // namespace

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
      "one of the site's destinations. Without --site, open works offline but denies a capsule\n"
      "whose policy has conditions that need a site.\n"
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
  if (const std::string problem = ReleaseUsageProblem(ctx.args()); !problem.empty()) {
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

  if (a.Has("site") && to_tar == "-") {
    return ctx.UsageError("with --site, write into a destination (--to DIR or --to-tar FILE)");
  }
  // Refuse what extraction would refuse anyway before deciding: a failed open spends no use.
  if (a.Has("to")) {
    absl::Status s = CheckEmptyDestination(a.Get("to"));
    if (!s.ok()) return ctx.Fail(s);
  } else if (to_tar != "-" && ::access(to_tar.c_str(), F_OK) == 0) {
    return ctx.Fail(absl::AlreadyExistsError(absl::StrCat(to_tar, " already exists")));
  }
  absl::StatusOr<Release> release =
      PrepareRelease(ctx, a.positionals()[0], a.Has("to") ? a.Get("to") : to_tar);
  if (!release.ok()) return ctx.Fail(release.status(), HintFor(release.status()));
  OpenedCapsule* c = &release->capsule;
  const capsule::Manifest& m = c->reader->manifest();
  verifier::OpenRequest& request = release->request;
  request.site = release->site_facts ? &*release->site_facts : nullptr;
  request.site_identity = c->identity ? &*c->identity : nullptr;
  request.only = *only;
  request.only_patterns = a.GetAll("only");
  absl::StatusOr<verifier::Authorization> auth =
      verifier::Authorize(*c->reader, *c->key, request, *threads);
  if (!auth.ok()) return ctx.Fail(auth.status());
  if (!auth->decision.permit) {
    return ctx.Fail(absl::PermissionDeniedError(DenialMessage(auth->decision)),
                    "see why with: capsule policy explain CAPSULE --site SITE.json");
  }

  Progress progress("opening", a.Has("to") ? m.payload_size : m.archive_size, !ctx.json());
  auto update = [&progress](uint64_t n) { progress.Update(n); };
  if (a.Has("to")) {
    const std::string dest = a.Get("to");
    absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> stream =
        c->reader->Stream(*c->key, 0, m.payload_size, *threads, update);
    if (!stream.ok()) return ctx.Fail(stream.status());
    capsule::ExtractOptions options;
    options.only = std::move(*only);
    InterruptibleSource source(stream->get());
    absl::StatusOr<capsule::ExtractStats> stats = capsule::ExtractArchive(&source, dest, options);
    progress.Finish();
    if (!stats.ok()) return ctx.Fail(stats.status());
    if (ctx.json()) {
      std::printf("{\"capsule\": %s, \"to\": %s, \"files\": %llu, \"directories\": %llu, "
                  "\"symlinks\": %llu, \"bytes\": %llu, \"rules\": [%s]}\n",
                  JsonString(m.IdHex()).c_str(), JsonString(dest).c_str(),
                  static_cast<unsigned long long>(stats->files),
                  static_cast<unsigned long long>(stats->directories),
                  static_cast<unsigned long long>(stats->symlinks),
                  static_cast<unsigned long long>(stats->bytes),
                  absl::StrJoin(auth->decision.rules, ", ",
                                [](std::string* out, const std::string& r) {
                                  out->append(JsonString(r));
                                })
                      .c_str());
    } else {
      std::printf("opened capsule %s into %s: %llu files, %s%s\n", m.IdHex().c_str(),
                  dest.c_str(), static_cast<unsigned long long>(stats->files),
                  HumanBytes(stats->bytes).c_str(),
                  auth->decision.rules.empty()
                      ? ""
                      : absl::StrCat(" (permitted by ",
                                     TerminalSafe(absl::StrJoin(auth->decision.rules, ", ")), ")")
                            .c_str());
    }
    return kExitOk;
  }

  absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> archive =
      c->reader->Stream(*c->key, 0, m.archive_size, *threads, update);
  if (!archive.ok()) return ctx.Fail(archive.status());
  absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> rest =
      c->reader->Stream(*c->key, m.archive_size, m.payload_size, 1);
  if (!rest.ok()) return ctx.Fail(rest.status());
  absl::Status s;
  if (to_tar == "-") {
    capsule::FdWriter out(STDOUT_FILENO);
    s = CopyAndDrain(archive->get(), &out, rest->get());
    if (s.ok()) s = out.Flush();
  } else {
    absl::StatusOr<std::unique_ptr<capsule::AtomicFileWriter>> out =
        capsule::AtomicFileWriter::Create(to_tar, 0600);
    if (!out.ok()) return ctx.Fail(out.status());
    s = CopyAndDrain(archive->get(), out->get(), rest->get());
    if (s.ok()) s = (*out)->Commit();
  }
  progress.Finish();
  if (!s.ok()) return ctx.Fail(s);
  if (to_tar != "-") {
    if (ctx.json()) {
      std::printf("{\"capsule\": %s, \"toTar\": %s, \"bytes\": %llu}\n",
                  JsonString(m.IdHex()).c_str(), JsonString(to_tar).c_str(),
                  static_cast<unsigned long long>(m.archive_size));
    } else {
      std::printf("wrote the decrypted archive of capsule %s to %s (%s)\n", m.IdHex().c_str(),
                  to_tar.c_str(), HumanBytes(m.archive_size).c_str());
    }
  }
  return kExitOk;
}

}  // namespace bunker::cli

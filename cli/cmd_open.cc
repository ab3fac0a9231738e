// capsule open: verify, unwrap, decrypt and extract a capsule atomically.
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
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
    absl::StatusOr<absl::Span<const uint8_t>> piece = stream->Next();
    if (!piece.ok()) return piece.status();
    if (piece->empty()) break;
    absl::Status s = out->Append(*piece);
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
      "CAPSULE --identity KEY --trust ISSUER.pub (--to DIR | --to-tar FILE|-) [--only GLOB]...",
      "Verify a capsule, unwrap its key with your identity, decrypt, and extract it into a new\n"
      "directory DIR (which then holds the dataset's own top level), or write the decrypted pax\n"
      "archive with --to-tar.",
      "Extraction is atomic: DIR appears only when every chunk authenticated. DIR must not\n"
      "exist or must be empty. Unsafe entries (absolute paths, '..', symlink escapes, devices,\n"
      "setuid bits) are refused. --only selects entries by glob: '*' within a path component,\n"
      "'**' across components; a directory selects everything below it.",
      {"CAPSULE"},
      {{"identity", true, false, "your private key (a recipient of the capsule)", "KEY"},
       {"trust", true, true, "trusted issuer public key, or a directory of them", "PUB|DIR"},
       {"to", true, false, "directory to create and extract into", "DIR"},
       {"to-tar", true, false, "write the decrypted pax archive to FILE (- for stdout)", "FILE"},
       {"only", true, true, "extract only entries matching GLOB", "GLOB"},
       {"threads", true, false, "worker threads (default: all cores)", "N"},
       {"json", false, false, "print the result as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (a.Has("to") == a.Has("to-tar")) return ctx.UsageError("give exactly one of --to or --to-tar");
  if (a.Has("to-tar") && a.Has("only")) return ctx.UsageError("--only works with --to only");
  if (!a.Has("identity")) return ctx.UsageError("--identity KEY is required");
  absl::StatusOr<int> threads = ctx.Threads();
  if (!threads.ok()) return ctx.UsageError(std::string(threads.status().message()));
  absl::StatusOr<capsule::PathSelection> only = capsule::PathSelection::Parse(a.GetAll("only"));
  if (!only.ok()) return ctx.UsageError(std::string(only.status().message()));
  const std::string to_tar = a.Get("to-tar");
  if (to_tar == "-" && ::isatty(STDOUT_FILENO) == 1) {
    return ctx.UsageError("refusing to write an archive to a terminal; redirect stdout");
  }

  const std::string path = a.positionals()[0];
  absl::StatusOr<OpenedCapsule> c = OpenCapsule(ctx, path, /*unlock=*/true);
  if (!c.ok()) return ctx.Fail(c.status(), HintFor(c.status()));
  const capsule::Manifest& m = c->reader->manifest();
  Progress progress("opening", m.archive_size, !ctx.json());
  auto update = [&progress](uint64_t n) { progress.Update(n); };

  if (a.Has("to")) {
    const std::string dest = a.Get("to");
    absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> stream =
        c->reader->Stream(*c->key, 0, m.payload_size, *threads, update);
    if (!stream.ok()) return ctx.Fail(stream.status());
    capsule::ExtractOptions options;
    options.only = std::move(*only);
    absl::StatusOr<capsule::ExtractStats> stats =
        capsule::ExtractArchive(stream->get(), dest, options);
    progress.Finish();
    if (!stats.ok()) return ctx.Fail(stats.status());
    if (ctx.json()) {
      std::printf("{\"capsule\": %s, \"to\": %s, \"files\": %llu, \"directories\": %llu, "
                  "\"symlinks\": %llu, \"bytes\": %llu}\n",
                  JsonString(m.IdHex()).c_str(), JsonString(dest).c_str(),
                  static_cast<unsigned long long>(stats->files),
                  static_cast<unsigned long long>(stats->directories),
                  static_cast<unsigned long long>(stats->symlinks),
                  static_cast<unsigned long long>(stats->bytes));
    } else {
      std::printf("opened capsule %s into %s: %llu files, %s\n", m.IdHex().c_str(), dest.c_str(),
                  static_cast<unsigned long long>(stats->files),
                  HumanBytes(stats->bytes).c_str());
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

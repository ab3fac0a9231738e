// capsule cat: one file's contents to stdout, decrypting only the chunks that hold it.
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "capsule/file_index.h"
#include "capsule/io.h"
#include "capsule/paths.h"
#include "cli/context.h"

namespace bunker::cli {
namespace {

absl::StatusOr<capsule::FileEntry> FindEntry(const OpenedCapsule& c, const std::string& path) {
  const capsule::Manifest& m = c.reader->manifest();
  absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> stream =
      c.reader->Stream(*c.key, m.archive_size, m.payload_size, 0);
  if (!stream.ok()) return stream.status();
  capsule::IndexReader index(stream->get(), m.index_entries);
  std::optional<capsule::FileEntry> found;
  while (true) {
    absl::StatusOr<std::optional<capsule::FileEntry>> e = index.Next();
    if (!e.ok()) return e.status();
    if (!e->has_value()) break;
    // Read to the end so the whole index authenticates; the last entry for a path wins, as in tar.
    if ((*e)->path == path) found = std::move(**e);
  }
  if (!found) {
    return absl::NotFoundError(absl::StrCat(capsule::QuotePath(path), " is not in the capsule"));
  }
  return *found;
}

}  // namespace

int RunCat(int argc, char** argv) {
  static const CommandSpec kSpec{
      "cat",
      "CAPSULE PATH --identity KEY --trust ISSUER.pub",
      "Write one file's contents to standard output. Only the chunks holding the file are\n"
      "decrypted, each authenticated before any of its bytes is written.",
      "",
      {"CAPSULE", "PATH"},
      {{"identity", true, false, "your private key (a recipient of the capsule)", "KEY"},
       {"trust", true, true, "trusted issuer public key, or a directory of them", "PUB|DIR"},
       {"threads", true, false, "worker threads (default: all cores)", "N"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  if (!ctx.args().Has("identity")) return ctx.UsageError("--identity KEY is required");
  absl::StatusOr<int> threads = ctx.Threads();
  if (!threads.ok()) return ctx.UsageError(std::string(threads.status().message()));
  absl::StatusOr<std::string> wanted = capsule::NormalizeEntryPath(ctx.args().positionals()[1]);
  if (!wanted.ok()) return ctx.Fail(wanted.status());
  absl::StatusOr<OpenedCapsule> c = OpenCapsule(ctx, ctx.args().positionals()[0], true);
  if (!c.ok()) return ctx.Fail(c.status(), HintFor(c.status()));

  absl::StatusOr<capsule::FileEntry> entry = FindEntry(*c, *wanted);
  if (!entry.ok()) return ctx.Fail(entry.status(), "list the files with: capsule ls");
  for (int hops = 0; entry->type == capsule::FileEntry::Type::kHardlink && hops < 8; ++hops) {
    entry = FindEntry(*c, entry->link_target);
    if (!entry.ok()) return ctx.Fail(entry.status());
  }
  if (entry->type != capsule::FileEntry::Type::kFile) {
    return ctx.Fail(absl::InvalidArgumentError(absl::StrCat(
        capsule::QuotePath(*wanted), " is a ", capsule::TypeName(entry->type),
        entry->link_target.empty() ? "" : absl::StrCat(" to ", entry->link_target),
        ", not a file")));
  }
  const capsule::Manifest& m = c->reader->manifest();
  if (entry->offset > m.archive_size || entry->size > m.archive_size - entry->offset) {
    return ctx.Fail(absl::DataLossError("file index entry points outside the archive"));
  }
  absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> stream =
      c->reader->Stream(*c->key, entry->offset, entry->offset + entry->size, *threads);
  if (!stream.ok()) return ctx.Fail(stream.status());
  capsule::FdWriter out(STDOUT_FILENO);
  crypto::Sha256 hash;
  while (true) {
    absl::StatusOr<absl::Span<const uint8_t>> piece = (*stream)->Next();
    if (!piece.ok()) return ctx.Fail(piece.status());
    if (piece->empty()) break;
    hash.Update(*piece);
    absl::Status s = out.Append(*piece);
    if (!s.ok()) return ctx.Fail(s);
  }
  absl::Status s = out.Flush();
  if (!s.ok()) return ctx.Fail(s);
  if (hash.Finish() != entry->sha256) {
    return ctx.Fail(absl::DataLossError("file contents do not match the index digest"));
  }
  return kExitOk;
}

}  // namespace bunker::cli

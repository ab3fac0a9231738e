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
      "CAPSULE PATH (--site SITE.json | --identity KEY --trust ISSUER.pub) [--as KEY] "
      "[--purpose P]",
      "Write one file's contents to standard output, when the capsule's policy permits it. Only\n"
      "the chunks holding the file are decrypted, each authenticated before any of its bytes is\n"
      "written.",
      "With --site the decision is recorded in the site's audit log (and counted), as for open.",
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
  absl::StatusOr<std::string> wanted = capsule::NormalizeEntryPath(ctx.args().positionals()[1]);
  if (!wanted.ok()) return ctx.Fail(wanted.status());
  absl::StatusOr<Release> release = PrepareRelease(ctx, ctx.args().positionals()[0], "");
  if (!release.ok()) return ctx.Fail(release.status(), HintFor(release.status()));
  OpenedCapsule* c = &release->capsule;

  // Find the file first (names only), following hard links, so that the decision covers every
  // path whose content is served and a request that cannot be served counts no use.
  absl::StatusOr<capsule::FileEntry> entry = FindEntry(*c, *wanted);
  if (!entry.ok()) return ctx.Fail(entry.status(), "list the files with: capsule ls");
  std::vector<std::string> chain = {*wanted};
  for (int hops = 0; entry->type == capsule::FileEntry::Type::kHardlink; ++hops) {
    if (hops == 8) return ctx.Fail(absl::DataLossError("hard link chain too long"));
    chain.push_back(entry->link_target);
    entry = FindEntry(*c, entry->link_target);
    if (!entry.ok()) return ctx.Fail(entry.status());
  }
  if (entry->type != capsule::FileEntry::Type::kFile) {
    return ctx.Fail(absl::InvalidArgumentError(absl::StrCat(
        capsule::QuotePath(*wanted), " is a ", capsule::TypeName(entry->type),
        entry->link_target.empty() ? "" : absl::StrCat(" to ", capsule::QuotePath(entry->link_target)),
        ", not a file")));
  }
  std::vector<std::string> exact;
  for (const std::string& p : chain) exact.push_back(capsule::EscapeGlob(p));
  absl::StatusOr<capsule::PathSelection> selection = capsule::PathSelection::Parse(exact);
  if (!selection.ok()) return ctx.Fail(selection.status());

  verifier::OpenRequest& request = release->request;
  request.site = release->site_facts ? &*release->site_facts : nullptr;
  request.site_identity = c->identity ? &*c->identity : nullptr;
  request.only = *selection;
  request.only_patterns = chain;
  absl::StatusOr<verifier::Authorization> auth =
      verifier::Authorize(*c->reader, *c->key, request, *threads);
  if (!auth.ok()) return ctx.Fail(auth.status());
  if (!auth->decision.permit) {
    return ctx.Fail(absl::PermissionDeniedError(DenialMessage(auth->decision)));
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
    if (Interrupted()) return ctx.Fail(CheckInterrupted());
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

// capsule ls: list the encrypted file index.
#include <algorithm>
#include <cstdio>
#include <set>

#include "absl/strings/str_format.h"
#include "capsule/file_index.h"
#include "cli/context.h"

namespace bunker::cli {

int RunLs(int argc, char** argv) {
  static const CommandSpec kSpec{
      "ls",
      "CAPSULE (--site SITE.json | --identity KEY --trust ISSUER.pub) [--as KEY] [--purpose P] "
      "[--json]",
      "List the files in a capsule (decrypting only its file index) that its policy would let\n"
      "this request open.",
      "Listing is evaluated like an open of the whole capsule but neither recorded nor counted;\n"
      "files the policy denies are left out. --json prints one JSON object per entry (JSON Lines).",
      {"CAPSULE"},
      [] {
        std::vector<OptionSpec> o = ReleaseOptions();
        o.push_back({"json", false, false, "print JSON Lines"});
        return o;
      }()};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  if (const std::string problem = ReleaseUsageProblem(ctx.args()); !problem.empty()) {
    return ctx.UsageError(problem);
  }
  absl::StatusOr<Release> release = PrepareRelease(ctx, ctx.args().positionals()[0], "");
  if (!release.ok()) return ctx.Fail(release.status(), HintFor(release.status()));
  OpenedCapsule* c = &release->capsule;
  release->request.site = release->site_facts ? &*release->site_facts : nullptr;
  release->request.dry_run = true;
  absl::StatusOr<verifier::Authorization> auth =
      verifier::Authorize(*c->reader, *c->key, release->request, 0);
  if (!auth.ok()) return ctx.Fail(auth.status());
  const std::set<std::string> denied(auth->decision.denied_files.begin(),
                                     auth->decision.denied_files.end());
  // A deny that names no files (invalid policy, offline with site conditions, ...) denies all.
  if (!auth->decision.permit &&
      (denied.empty() || denied.size() == auth->files.size())) {
    return ctx.Fail(absl::PermissionDeniedError(DenialMessage(auth->decision)));
  }
  // Files the request may open, sorted: a directory is listed only when one of them lies
  // below it, so the names of wholly forbidden trees stay hidden too.
  std::vector<std::string> permitted;
  for (const std::string& f : auth->files) {
    if (denied.count(f) == 0) permitted.push_back(f);
  }
  std::sort(permitted.begin(), permitted.end());
  auto has_permitted_below = [&permitted](const std::string& dir) {
    const std::string prefix = dir + "/";
    auto it = std::lower_bound(permitted.begin(), permitted.end(), prefix);
    return it != permitted.end() && it->compare(0, prefix.size(), prefix) == 0;
  };
  const capsule::Manifest& m = c->reader->manifest();
  absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> stream =
      c->reader->Stream(*c->key, m.archive_size, m.payload_size, 0);
  if (!stream.ok()) return ctx.Fail(stream.status());
  capsule::IndexReader index(stream->get(), m.index_entries);
  while (true) {
    absl::StatusOr<std::optional<capsule::FileEntry>> e = index.Next();
    if (!e.ok()) return ctx.Fail(e.status());
    if (!e->has_value()) break;
    const capsule::FileEntry& f = **e;
    if (denied.count(f.path) > 0) continue;
    if (f.type == capsule::FileEntry::Type::kDirectory && !has_permitted_below(f.path)) continue;
    if (ctx.json()) {
      std::printf("{\"path\": %s, \"type\": \"%s\", \"size\": %llu, \"mode\": \"%04o\", "
                  "\"mtime\": %s%s%s}\n",
                  JsonString(f.path).c_str(), capsule::TypeName(f.type),
                  static_cast<unsigned long long>(f.size), f.mode,
                  JsonString(FormatTime(f.mtime)).c_str(),
                  f.type == capsule::FileEntry::Type::kFile
                      ? absl::StrCat(", \"sha256\": \"", crypto::ToHex(f.sha256), "\"").c_str()
                      : "",
                  f.link_target.empty()
                      ? ""
                      : absl::StrCat(", \"target\": ", JsonString(f.link_target)).c_str());
    } else {
      std::string name = TerminalSafe(f.path);
      if (f.type == capsule::FileEntry::Type::kDirectory) name += "/";
      if (f.type == capsule::FileEntry::Type::kSymlink) name += " -> " + TerminalSafe(f.link_target);
      if (f.type == capsule::FileEntry::Type::kHardlink) {
        name += " link to " + TerminalSafe(f.link_target);
      }
      std::printf("%-8s %04o %12llu  %s  %s\n", capsule::TypeName(f.type), f.mode,
                  static_cast<unsigned long long>(f.size), FormatTime(f.mtime).c_str(),
                  name.c_str());
    }
  }
  return kExitOk;
}

}  // namespace bunker::cli

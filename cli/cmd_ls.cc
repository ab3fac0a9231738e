// capsule ls: list the encrypted file index.
#include <cstdio>

#include "absl/strings/str_format.h"
#include "capsule/file_index.h"
#include "cli/context.h"

namespace bunker::cli {

int RunLs(int argc, char** argv) {
  static const CommandSpec kSpec{
      "ls",
      "CAPSULE --identity KEY --trust ISSUER.pub [--json]",
      "List the files in a capsule (decrypting only its file index).",
      "--json prints one JSON object per entry (JSON Lines).",
      {"CAPSULE"},
      {{"identity", true, false, "your private key (a recipient of the capsule)", "KEY"},
       {"trust", true, true, "trusted issuer public key, or a directory of them", "PUB|DIR"},
       {"json", false, false, "print JSON Lines"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  if (!ctx.args().Has("identity")) return ctx.UsageError("--identity KEY is required");
  absl::StatusOr<OpenedCapsule> c = OpenCapsule(ctx, ctx.args().positionals()[0], true);
  if (!c.ok()) return ctx.Fail(c.status(), HintFor(c.status()));
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
      std::string name = f.path;
      if (f.type == capsule::FileEntry::Type::kDirectory) name += "/";
      if (f.type == capsule::FileEntry::Type::kSymlink) name += " -> " + f.link_target;
      if (f.type == capsule::FileEntry::Type::kHardlink) name += " link to " + f.link_target;
      std::printf("%-8s %04o %12llu  %s  %s\n", capsule::TypeName(f.type), f.mode,
                  static_cast<unsigned long long>(f.size), FormatTime(f.mtime).c_str(),
                  name.c_str());
    }
  }
  return kExitOk;
}

}  // namespace bunker::cli

// capsule ls: list the encrypted file index, as far as the policy lets this request see it.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "capsule/file_index.h"
#include "capsule/json_writer.h"
#include "cli/context.h"
#include "capsule/utc.h"
#include "capsule/utf8.h"
#include "crypto/sha256.h"

namespace bunker::cli {
namespace {

// A name as ls shows it, one to one: a backslash doubled before TerminalSafe writes its own
// escapes (\xNN), so that a name holding "\x0a" and one holding a newline never look alike.
std::string Shown(const std::string& name) {
  std::string doubled;
  doubled.reserve(name.size());
  for (char c : name) {
    if (c == '\\') doubled += '\\';
    doubled += c;
  }
  return TerminalSafe(doubled);
}

// JSON strings are UTF-8: a name that is not (a byte sequence a file system allows) is also
// given as hex under `hex_key`, so that a script can tell such names apart and name the file.
void NameFields(capsule::JsonWriter& w, const char* key, const char* hex_key,
                const std::string& name) {
  w.Key(key).String(name);
  if (capsule::ToValidUtf8(name) != name) {
    w.Key(hex_key).String(crypto::ToHex(absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(name.data()), name.size())));
  }
}

void PrintEntry(const capsule::FileEntry& f, bool json) {
  if (json) {
    capsule::JsonWriter w;
    w.BeginObject();
    NameFields(w, "path", "pathHex", f.path);
    w.Key("type").String(capsule::TypeName(f.type))
        .Key("size").Number(f.size)
        .Key("mode").String(absl::StrFormat("%04o", f.mode))
        .Key("mtime").String(capsule::FormatUtc(f.mtime));
    if (f.type == capsule::FileEntry::Type::kFile) w.Key("sha256").String(crypto::ToHex(f.sha256));
    if (!f.link_target.empty()) NameFields(w, "target", "targetHex", f.link_target);
    w.EndObject();
    std::printf("%s\n", w.text().c_str());
    return;
  }
  std::string name = Shown(f.path);
  if (f.type == capsule::FileEntry::Type::kDirectory) name += "/";
  if (f.type == capsule::FileEntry::Type::kSymlink) name += " -> " + Shown(f.link_target);
  if (f.type == capsule::FileEntry::Type::kHardlink) name += " link to " + Shown(f.link_target);
  std::printf("%-8s %04o %12llu  %s  %s\n", capsule::TypeName(f.type), f.mode,
              static_cast<unsigned long long>(f.size), capsule::FormatUtc(f.mtime).c_str(),
              name.c_str());
}

}  // namespace

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
  site::SiteRequest request;
  request.command = site::Command::kLs;
  const bool json = ctx.json();
  request.entries = [json](const std::vector<capsule::FileEntry>& batch) {
    for (const capsule::FileEntry& f : batch) PrintEntry(f, json);
    return absl::OkStatus();
  };
  absl::StatusOr<SiteRun> run = RunSiteRequest(ctx, ctx.args().positionals()[0], request);
  if (!run.ok()) return ctx.Fail(run.status());
  if (!run->status.ok()) return ctx.Fail(run->status);
  return kExitOk;
}

}  // namespace bunker::cli

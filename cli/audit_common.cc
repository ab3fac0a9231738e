// The pieces `capsule audit`'s subcommands share; see cli/audit_common.h.
#include "cli/audit_common.h"

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "capsule/io.h"
#include "capsule/json_writer.h"
#include "capsule/key_files.h"
#include "capsule/utc.h"
#include "cli/context.h"
#include "crypto/sha256.h"
#include "verifier/audit_log.h"

namespace bunker::cli::audit {
namespace {

// A checkpoint file is six short lines; anything much bigger is not one.
constexpr size_t kMaxCheckpointFile = 4096;

}  // namespace

std::string Hex(absl::Span<const uint8_t> bytes) { return crypto::ToHex(bytes); }

absl::StatusOr<Checkpoint> LoadCheckpointFile(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> text = capsule::ReadSmallFile(path, kMaxCheckpointFile);
  if (!text.ok()) return text.status();
  absl::StatusOr<Checkpoint> c = Checkpoint::Parse(*text);
  if (!c.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, " is not an audit checkpoint: ", c.status().message()));
  }
  return c;
}

absl::StatusOr<crypto::PublicIdentity> LoadSiteKey(const Context& ctx) {
  return capsule::LoadPublicIdentity(ctx.args().Get("key"));
}

// `text` as an RFC 3339 time, in seconds.
absl::StatusOr<int64_t> ParseTimeFlag(const std::string& flag, const std::string& text) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " '", text, "' is not an RFC 3339 time (e.g. 2024-05-01T00:00:00Z)"));
  }
  return absl::ToUnixSeconds(t);
}

// A checkpoint as the next value of `w` (spec/AUDIT.md "Proofs").
void WriteCheckpointJson(capsule::JsonWriter* w, const Checkpoint& c) {
  w->BeginObject()
      .Key("site").String(c.site)
      .Key("size").Number(c.size)
      .Key("root").String(Hex(c.root))
      .Key("time").Number(c.time)
      .Key("timeUtc").String(capsule::FormatUtc(c.time))
      .Key("sig").String(Hex(c.signature))
      .Key("text").String(c.Encode())
      .EndObject();
}

// A proof's path as the next value of `w`: an array of hex hashes.
void WritePathJson(capsule::JsonWriter* w, const std::vector<crypto::Sha256Digest>& path) {
  w->BeginArray();
  for (const crypto::Sha256Digest& h : path) w->String(Hex(h));
  w->EndArray();
}

void PrintPath(const std::vector<crypto::Sha256Digest>& path) {
  std::printf("path %zu\n", path.size());
  for (const crypto::Sha256Digest& h : path) std::printf("  %s\n", Hex(h).c_str());
}

void PrintCheckpoint(const Checkpoint& c) {
  std::fputs(TerminalSafe(c.Encode(), /*keep_newlines=*/true).c_str(), stdout);
}

// The checkpoint to prove against: --checkpoint FILE, or the log's latest.
absl::StatusOr<Checkpoint> TargetCheckpoint(const Context& ctx, const std::string& log) {
  if (ctx.args().Has("checkpoint")) {
    return LoadCheckpointFile("checkpoint", ctx.args().Get("checkpoint"));
  }
  return verifier::ReadLatestCheckpoint(log);
}

void WarnIfUnsigned(const std::string& log_path, uint64_t entries) {
  absl::StatusOr<verifier::Checkpoint> latest = verifier::ReadLatestCheckpoint(log_path);
  const uint64_t signed_entries = latest.ok() ? latest->size : 0;
  if (entries <= signed_entries) return;
  std::fprintf(stderr,
               "warning: audit log entries from %llu on are not covered by a signed checkpoint "
               "(an interrupted append, or added without the site's key)\n"
               "hint: run 'capsule audit verify'; the site completes an interrupted append "
               "when it next opens its state (e.g. capsuled at start)\n",
               static_cast<unsigned long long>(signed_entries));
}

}  // namespace bunker::cli::audit

// Checkpoints: their text form, parsing and signature (spec/AUDIT.md "Checkpoints").
#include <climits>

#include "absl/strings/str_cat.h"
#include "capsule/paths.h"
#include "verifier/audit_log_internal.h"

namespace bunker::verifier {
namespace audit_internal {

bool ValidSite(std::string_view site) {
  return !site.empty() && site.size() <= kMaxSiteSize && capsule::IsPlainText(site);
}

// Decimal without sign or leading zeros, so that each number has one spelling.
bool ParseCanonicalDecimal(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20 || (text.size() > 1 && text[0] == '0')) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

// Lowercase hex only, again for one spelling.
bool ParseLowerHex(std::string_view text, absl::Span<uint8_t> out) {
  if (text.size() != 2 * out.size()) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

absl::Span<const uint8_t> Bytes(std::string_view s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace audit_internal

using audit_internal::Bytes;
using audit_internal::kCheckpointMagic;
using audit_internal::kMaxCheckpointLine;
using audit_internal::ParseCanonicalDecimal;
using audit_internal::ParseLowerHex;
using audit_internal::ValidSite;

bool IsValidSiteName(std::string_view name) { return ValidSite(name); }

// --- Checkpoints ---------------------------------------------------------------------------

std::string Checkpoint::SignedText() const {
  return absl::StrCat(kCheckpointMagic, "\nsite ", site, "\nsize ", size, "\nroot ",
                      crypto::ToHex(root), "\ntime ", time, "\n");
}

std::string Checkpoint::Encode() const {
  return absl::StrCat(SignedText(), "sig ", crypto::ToHex(signature), "\n");
}

absl::StatusOr<Checkpoint> Checkpoint::Parse(std::string_view text) {
  if (text.size() > 6 * (kMaxCheckpointLine + 1)) {
    return absl::InvalidArgumentError("checkpoint is too long");
  }
  if (text.empty() || text.back() != '\n') {
    return absl::InvalidArgumentError("checkpoint does not end with a newline");
  }
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  if (lines.size() != 6) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint has ", lines.size(), " lines, not 6"));
  }
  auto field = [&lines](size_t i, std::string_view key, std::string_view* value) {
    if (lines[i].size() <= key.size() || lines[i].substr(0, key.size()) != key) return false;
    *value = lines[i].substr(key.size());
    return true;
  };
  if (lines[0] != kCheckpointMagic) {
    return absl::InvalidArgumentError("not a bunker audit checkpoint v1");
  }
  Checkpoint c;
  std::string_view v;
  if (!field(1, "site ", &v) || !ValidSite(v)) {
    return absl::InvalidArgumentError("checkpoint line 2 is not 'site NAME'");
  }
  c.site = std::string(v);
  if (!field(2, "size ", &v) || !ParseCanonicalDecimal(v, &c.size)) {
    return absl::InvalidArgumentError("checkpoint line 3 is not 'size DECIMAL'");
  }
  if (!field(3, "root ", &v) || !ParseLowerHex(v, absl::MakeSpan(c.root))) {
    return absl::InvalidArgumentError(
        "checkpoint line 4 is not 'root' and 64 lowercase hex digits");
  }
  uint64_t t = 0;
  if (!field(4, "time ", &v) || !ParseCanonicalDecimal(v, &t) ||
      t > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError("checkpoint line 5 is not 'time DECIMAL'");
  }
  c.time = static_cast<int64_t>(t);
  if (!field(5, "sig ", &v) || !ParseLowerHex(v, absl::MakeSpan(c.signature))) {
    return absl::InvalidArgumentError(
        "checkpoint line 6 is not 'sig' and 128 lowercase hex digits");
  }
  return c;
}

absl::Status Checkpoint::Verify(const crypto::PublicIdentity& key) const {
  const std::string text = SignedText();
  if (!crypto::VerifySignature(key.sign_key, Bytes(text), signature).ok()) {
    return absl::DataLossError("audit checkpoint signature does not verify under the site key");
  }
  return absl::OkStatus();
}

}  // namespace bunker::verifier

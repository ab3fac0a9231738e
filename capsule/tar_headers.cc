#include "capsule/tar_headers.h"

#include <algorithm>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace bunker::capsule {
namespace {

constexpr uint64_t kBlock = 512;
// ustar header fields (POSIX.1-1988 "ustar Interchange Format").
constexpr size_t kSizeAt = 124, kSizeLen = 12;
constexpr size_t kChecksumAt = 148, kChecksumLen = 8;
constexpr size_t kTypeflagAt = 156;
// The magic field (offset 257), spec/FORMAT.md "Entries": POSIX ustar and pax write "ustar\0"
// (then the version, "00", not checked), GNU tar "ustar  \0" over magic and version. A v7
// header (no magic) is refused: no Bunker writer emits one.
constexpr size_t kMagicAt = 257;
constexpr std::string_view kUstarMagic("ustar\0", 6);
constexpr std::string_view kGnuMagic("ustar  \0", 8);

absl::Status Malformed(const std::string& what) {
  return absl::DataLossError(absl::StrCat("malformed archive: ", what));
}

}  // namespace

bool IsAllowedEntryTypeflag(char t) {
  return t == '0' || t == '\0' || t == '1' || t == '2' || t == '5';
}

bool IsExtensionTypeflag(char t) { return t == 'x' || t == 'g' || t == 'L' || t == 'K'; }

absl::StatusOr<uint64_t> ParseTarNumber(absl::Span<const uint8_t> f) {
  if (f.empty()) return Malformed("empty numeric field");
  if (f[0] & 0x80) {
    // GNU base-256: big-endian, the first byte's high bit is the marker; 0xff is negative.
    if (f[0] == 0xff) return Malformed("negative numeric field");
    uint64_t v = f[0] & 0x7f;
    for (size_t i = 1; i < f.size(); ++i) {
      if (v >> 56) return Malformed("numeric field overflows");
      v = (v << 8) | f[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < f.size() && (f[i] == ' ' || f[i] == '\0')) ++i;
  uint64_t v = 0;
  for (; i < f.size() && f[i] >= '0' && f[i] <= '7'; ++i) {
    if (v >> 60) return Malformed("numeric field overflows");
    v = v * 8 + (f[i] - '0');
  }
  for (; i < f.size(); ++i) {
    if (f[i] != ' ' && f[i] != '\0') return Malformed("bad digit in a numeric field");
  }
  return v;
}

void TarHeaderTap::Feed(absl::Span<const uint8_t> bytes) {
  const uint64_t start = fed_;
  fed_ += bytes.size();
  // Keep only what lies outside [ignore_from_, ignore_to_).
  for (uint64_t at = start; at < fed_;) {
    if (at >= ignore_from_ && at < ignore_to_) {
      at = std::min(fed_, ignore_to_);
      continue;
    }
    const uint64_t end = at < ignore_from_ ? std::min(fed_, ignore_from_) : fed_;
    if (held_.empty() || held_from_ + held_.size() != at) {
      held_.clear();
      held_from_ = at;
    }
    held_.insert(held_.end(), bytes.begin() + (at - start), bytes.begin() + (end - start));
    at = end;
  }
}

void TarHeaderTap::Skip(uint64_t from, uint64_t bytes) {
  // Drop what is held before `from` and what is held of the skipped range.
  if (from > held_from_) {
    const uint64_t drop = std::min<uint64_t>(from - held_from_, held_.size());
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(drop));
    held_from_ += drop;
  }
  const uint64_t to = bytes > UINT64_MAX - from ? UINT64_MAX : from + bytes;
  if (held_from_ < to && !held_.empty()) {
    const uint64_t drop = std::min<uint64_t>(to - held_from_, held_.size());
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(drop));
    held_from_ += drop;
  }
  if (held_.empty()) held_from_ = std::max(held_from_, std::min(fed_, to));
  ignore_from_ = from;
  ignore_to_ = to;
}

absl::StatusOr<TarHeaderTap::Header> TarHeaderTap::Inspect(uint64_t position) const {
  uint64_t at = position;
  int pax_headers = 0;
  for (int n = 0; n < kMaxChain; ++n) {
    if (at < held_from_ || at > held_from_ + held_.size() ||
        held_from_ + held_.size() - at < kBlock) {
      return Malformed("entry headers are not where the archive's framing puts them");
    }
    const uint8_t* h = held_.data() + (at - held_from_);
    // The checksum, as libarchive checks it: the sum of the bytes with the checksum field read
    // as spaces, taken unsigned or (an old writers' bug) signed.
    absl::StatusOr<uint64_t> stored =
        ParseTarNumber(absl::MakeConstSpan(h + kChecksumAt, kChecksumLen));
    int64_t sum = 0, signed_sum = 0;
    for (size_t i = 0; i < kBlock; ++i) {
      const bool in_field = i >= kChecksumAt && i < kChecksumAt + kChecksumLen;
      sum += in_field ? ' ' : h[i];
      signed_sum += in_field ? ' ' : static_cast<int8_t>(h[i]);
    }
    if (!stored.ok() ||
        (static_cast<int64_t>(*stored) != sum && static_cast<int64_t>(*stored) != signed_sum)) {
      return Malformed("bad header checksum");
    }
    const std::string_view magic(reinterpret_cast<const char*>(h + kMagicAt), kGnuMagic.size());
    if (magic.substr(0, kUstarMagic.size()) != kUstarMagic && magic != kGnuMagic) {
      return Malformed("a tar header without the ustar or GNU magic (v7 tar is not accepted)");
    }
    absl::StatusOr<uint64_t> size = ParseTarNumber(absl::MakeConstSpan(h + kSizeAt, kSizeLen));
    if (!size.ok()) return size.status();
    const char type = static_cast<char>(h[kTypeflagAt]);
    if (!IsExtensionTypeflag(type)) {
      return Header{type, *size, at + kBlock};
    }
    // libarchive keeps only the last 'x' header's records (warning "Ignoring malformed pax
    // extended attribute"); a reader that merged them would see another entry.
    if (type == 'x' && ++pax_headers > 1) {
      return Malformed("more than one pax extended header before an entry");
    }
    if (*size > (uint64_t{1} << 40)) return Malformed("extension header too large");
    at += kBlock + (*size + kBlock - 1) / kBlock * kBlock;
  }
  return Malformed("too many extension headers before an entry");
}

}  // namespace bunker::capsule

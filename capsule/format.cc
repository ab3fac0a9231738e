#include "capsule/format.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace bunker::capsule {

void StoreBigEndian64(uint64_t v, uint8_t* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<uint8_t>(v & 0xff);
    v >>= 8;
  }
}

uint64_t LoadBigEndian64(const uint8_t* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | in[i];
  return v;
}

std::array<uint8_t, kHeaderSize> EncodeHeader() {
  std::array<uint8_t, kHeaderSize> h{};
  std::copy(kMagic.begin(), kMagic.end(), h.begin());
  h[8] = static_cast<uint8_t>(kFormatVersion >> 8);
  h[9] = static_cast<uint8_t>(kFormatVersion & 0xff);
  return h;
}

absl::Status CheckHeader(absl::Span<const uint8_t> header) {
  if (header.size() < kHeaderSize || !std::equal(kMagic.begin(), kMagic.end(), header.begin())) {
    return absl::DataLossError("not a capsule (bad magic)");
  }
  const uint16_t version = static_cast<uint16_t>(header[8] << 8 | header[9]);
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported capsule version ", version));
  }
  for (size_t i = 10; i < kHeaderSize; ++i) {
    if (header[i] != 0) return absl::DataLossError("corrupt capsule header (reserved bytes)");
  }
  return absl::OkStatus();
}

std::array<uint8_t, kFooterSize> EncodeFooter(uint64_t manifest_size) {
  std::array<uint8_t, kFooterSize> f{};
  StoreBigEndian64(manifest_size, f.data());
  std::copy(kEndMagic.begin(), kEndMagic.end(), f.begin() + 8);
  return f;
}

absl::StatusOr<uint64_t> DecodeFooter(absl::Span<const uint8_t> footer) {
  if (footer.size() != kFooterSize ||
      !std::equal(kEndMagic.begin(), kEndMagic.end(), footer.begin() + 8)) {
    return absl::DataLossError("capsule is truncated or has bytes appended (bad end marker)");
  }
  const uint64_t m = LoadBigEndian64(footer.data());
  if (m == 0 || m > kMaxManifestSize || m % 8 != 0) {
    return absl::DataLossError(absl::StrCat("corrupt capsule footer (manifest length ", m, ")"));
  }
  return m;
}

uint64_t ChunkCountFor(uint64_t payload_size, uint32_t chunk_size) {
  if (payload_size == 0) return 1;
  return (payload_size - 1) / chunk_size + 1;
}

absl::Status Geometry::Check() const {
  if (chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize) {
    return absl::DataLossError(absl::StrCat("chunk size ", chunk_size, " out of range"));
  }
  if (chunk_count == 0 || chunk_count > kMaxChunkCount ||
      chunk_count != ChunkCountFor(payload_size, chunk_size)) {
    return absl::DataLossError("chunk count does not match the payload size");
  }
  // payload <= 2^26 * 2^24 = 2^50 and the fixed parts are small, so FileSize() cannot overflow.
  if (manifest_size > kMaxManifestSize) {
    return absl::DataLossError("manifest too large");
  }
  return absl::OkStatus();
}

uint64_t Geometry::PlainSize(uint64_t i) const {
  if (i + 1 < chunk_count) return chunk_size;
  return payload_size - (chunk_count - 1) * uint64_t{chunk_size};
}

uint64_t Geometry::ChunkOffset(uint64_t i) const {
  // Every chunk before `i` is full, so this is exact for i <= chunk_count.
  if (i < chunk_count) return kHeaderSize + i * (uint64_t{chunk_size} + kTagSize);
  return kHeaderSize + payload_size + kTagSize * chunk_count;
}

std::array<uint8_t, 12> ChunkNonce(uint64_t index, bool last) {
  std::array<uint8_t, 12> n{};
  StoreBigEndian64(index, n.data() + 3);
  n[11] = last ? 1 : 0;
  return n;
}

}  // namespace bunker::capsule

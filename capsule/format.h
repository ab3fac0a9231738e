// Capsule format v1: constants, the fixed header and footer, and the size arithmetic that both
// the writer and every reader use. spec/FORMAT.md is normative; section names are cited below.
//
// File layout (FORMAT.md "Layout"):
//   header      16 bytes                     magic, version
//   chunks      payloadSize + 16*chunkCount  AEAD ciphertexts, in index order
//   chunk table 32*chunkCount                RFC 9162 leaf hash of each chunk ciphertext
//   manifest    m bytes (m % 8 == 0)         canonical Cap'n Proto Manifest
//   signature   64 bytes                     Ed25519 over the signature input
//   footer      16 bytes                     m (u64 big-endian), end magic
#ifndef BUNKER_CAPSULE_FORMAT_H_
#define BUNKER_CAPSULE_FORMAT_H_

#include <array>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bunker::capsule {

// FORMAT.md "Header": 8-byte magic (PNG-style: a high bit, a name, CR LF, ^Z, LF, so that
// text-mode transfers are detected), u16 big-endian version, 6 zero bytes.
inline constexpr std::array<uint8_t, 8> kMagic = {0x89, 'B', 'K', 'R', '\r', '\n', 0x1a, '\n'};
inline constexpr uint16_t kFormatVersion = 1;
inline constexpr size_t kHeaderSize = 16;

// FORMAT.md "Footer": u64 big-endian manifest length, then this end magic.
inline constexpr std::array<uint8_t, 8> kEndMagic = {0x89, 'B', 'K', 'R', 'E', 'N', 'D', '\n'};
inline constexpr size_t kFooterSize = 16;

inline constexpr size_t kSignatureSize = 64;
inline constexpr size_t kLeafHashSize = 32;
inline constexpr size_t kTagSize = 16;
inline constexpr size_t kCapsuleIdSize = 16;
inline constexpr size_t kDataKeySize = 32;

// FORMAT.md "Limits". Every length is checked against these before anything is allocated.
inline constexpr uint32_t kMinChunkSize = 4096;
inline constexpr uint32_t kMaxChunkSize = 16u << 20;
inline constexpr uint32_t kDefaultChunkSize = 1u << 20;
// 2^26 chunks: 64 TiB at the default chunk size, 1 PiB at the largest; a reader holds 32 bytes
// per chunk (at most 2 GiB, and only for a trusted issuer's capsule).
inline constexpr uint64_t kMaxChunkCount = uint64_t{1} << 26;
inline constexpr size_t kMaxManifestSize = 1u << 20;
inline constexpr size_t kMaxPolicySize = 256u << 10;
inline constexpr size_t kMaxRecipients = 1024;
inline constexpr size_t kMaxIndexRecordSize = 64u << 10;
inline constexpr size_t kMaxPathSize = 4096;

// FORMAT.md "Key schedule" and "Signature": domain-separation labels. Each is followed by a
// 0x00 byte wherever it is used.
inline constexpr std::string_view kPayloadKeyLabel = "bunker/v1 payload key";
inline constexpr std::string_view kCommitmentLabel = "bunker/v1 key commitment";
inline constexpr std::string_view kSignatureLabel = "bunker/v1 manifest signature";

// The 16-byte header of a v1 capsule.
std::array<uint8_t, kHeaderSize> EncodeHeader();
// kDataLoss "not a capsule" for a wrong magic, kInvalidArgument "unsupported capsule version N"
// for another version, kDataLoss for non-zero reserved bytes.
absl::Status CheckHeader(absl::Span<const uint8_t> header);

// The footer for a manifest of `manifest_size` bytes.
std::array<uint8_t, kFooterSize> EncodeFooter(uint64_t manifest_size);
// The manifest size from a footer; kDataLoss for a wrong end magic (truncated or appended
// file) or a size over kMaxManifestSize or not a multiple of 8.
absl::StatusOr<uint64_t> DecodeFooter(absl::Span<const uint8_t> footer);

// Number of chunks for a payload: max(1, ceil(payload_size / chunk_size)).
uint64_t ChunkCountFor(uint64_t payload_size, uint32_t chunk_size);

// Size arithmetic for a capsule whose manifest has these values. All functions assume the
// values passed CheckGeometry().
struct Geometry {
  uint32_t chunk_size = 0;
  uint64_t chunk_count = 0;
  uint64_t payload_size = 0;
  uint64_t manifest_size = 0;

  // kDataLoss unless chunk_size is within limits, chunk_count == ChunkCountFor(...) and within
  // kMaxChunkCount, and the file size does not overflow.
  absl::Status Check() const;
  // Plaintext bytes of chunk `i`.
  uint64_t PlainSize(uint64_t i) const;
  // Ciphertext bytes (plaintext + tag) of chunk `i`.
  uint64_t CipherSize(uint64_t i) const { return PlainSize(i) + kTagSize; }
  // File offset of chunk `i`'s ciphertext.
  uint64_t ChunkOffset(uint64_t i) const;
  // Payload offset of chunk `i`'s first plaintext byte.
  uint64_t PayloadOffset(uint64_t i) const { return i * uint64_t{chunk_size}; }
  uint64_t TableOffset() const { return ChunkOffset(chunk_count); }
  uint64_t ManifestOffset() const { return TableOffset() + kLeafHashSize * chunk_count; }
  uint64_t SignatureOffset() const { return ManifestOffset() + manifest_size; }
  uint64_t FileSize() const { return SignatureOffset() + kSignatureSize + kFooterSize; }
};

// FORMAT.md "Chunks": the 12-byte AEAD nonce of chunk `index`: three zero bytes, the index as
// u64 big-endian, then 0x01 for the last chunk and 0x00 otherwise.
std::array<uint8_t, 12> ChunkNonce(uint64_t index, bool last);

// Big-endian helpers for the fixed-width fields above.
void StoreBigEndian64(uint64_t v, uint8_t* out);
uint64_t LoadBigEndian64(const uint8_t* in);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_FORMAT_H_

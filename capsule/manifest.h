// The capsule manifest as a C++ value, and its canonical Cap'n Proto encoding
// (schema: spec/capsule.capnp, struct Manifest; FORMAT.md "Manifest").
#ifndef BUNKER_CAPSULE_MANIFEST_H_
#define BUNKER_CAPSULE_MANIFEST_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capsule/format.h"
#include "crypto/aead.h"
#include "crypto/keys.h"
#include "crypto/sha256.h"

namespace bunker::capsule {

using CapsuleId = std::array<uint8_t, kCapsuleIdSize>;

// The data key wrapped to one recipient.
struct RecipientEntry {
  crypto::Fingerprint fingerprint;
  crypto::WrappedKey wrapped;
};

struct Manifest {
  uint16_t format_version = kFormatVersion;
  CapsuleId capsule_id{};
  int64_t created_at = 0;
  crypto::PublicIdentity issuer;
  crypto::Suite suite = crypto::Suite::kAes256Gcm;
  uint32_t chunk_size = kDefaultChunkSize;
  uint64_t chunk_count = 0;
  uint64_t payload_size = 0;
  uint64_t archive_size = 0;
  uint64_t index_size = 0;
  uint64_t index_entries = 0;
  crypto::Sha256Digest merkle_root{};
  crypto::Sha256Digest key_commitment{};
  std::string policy;
  std::vector<RecipientEntry> recipients;

  // Lowercase hex of capsule_id (32 characters): how a capsule is named to people.
  std::string IdHex() const;
  // SHA-256 of the policy bytes.
  crypto::Sha256Digest PolicyHash() const;
  // The size arithmetic for this manifest encoded in `manifest_size` bytes.
  Geometry geometry(uint64_t manifest_size) const {
    return Geometry{chunk_size, chunk_count, payload_size, manifest_size};
  }
};

// Canonical Cap'n Proto bytes (single segment, no framing). kInvalidArgument for a policy over
// kMaxPolicySize, a recipient count outside 1..kMaxRecipients, or a result over
// kMaxManifestSize. (Chunk geometry is validated by CapsuleWriter::Create and Geometry::Check.)
absl::StatusOr<std::vector<uint8_t>> EncodeManifest(const Manifest& manifest);

// Strict decoding: EncodeManifest of the decoded value must reproduce the bytes exactly (so no
// unknown fields or alternative encodings), every Data field must have its fixed length, the
// suite must be known, the version 1, the sizes consistent (archive + index == payload) and
// within limits, and no recipient fingerprint may appear twice.
// kDataLoss otherwise, naming the field. Allocates at most bytes.size() plus small constants.
absl::StatusOr<Manifest> DecodeManifest(absl::Span<const uint8_t> bytes);

// The byte string the issuer signs (FORMAT.md "Signature"):
//   kSignatureLabel || 0x00 || header (16 bytes) || manifest bytes.
std::vector<uint8_t> SignatureInput(absl::Span<const uint8_t> header,
                                    absl::Span<const uint8_t> manifest_bytes);

// The context bound into each recipient's key wrap (FORMAT.md "Recipient key wrap"):
//   u16 big-endian format version || capsule id || SHA-256(policy) || issuer Ed25519 key.
std::vector<uint8_t> WrapContext(const Manifest& manifest);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_MANIFEST_H_

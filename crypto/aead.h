// Authenticated encryption with associated data, for bulk payload chunks.
//
// Both suites run through OpenSSL EVP (AES-256-GCM with AES-NI at ~3.9 GB/s per core here).
// Hazards, in plain words:
//  - A (key, nonce) pair must never encrypt two different messages. GCM and ChaCha20-Poly1305
//    both lose confidentiality AND integrity on nonce reuse. The caller owns nonce uniqueness;
//    capsule/ derives a fresh key per capsule and uses the chunk index as nonce.
//  - Neither suite commits to its key: a ciphertext can be crafted to decrypt under two keys.
//    Callers that need key commitment must add it (capsule/ checks a derived commitment value).
//  - Open() decrypts into `out` while it authenticates, and wipes `out` before returning when the
//    tag does not verify: callers never receive unverified plaintext, but must not read `out`
//    from another thread during the call.
#ifndef BUNKER_CRYPTO_AEAD_H_
#define BUNKER_CRYPTO_AEAD_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "crypto/secret.h"

namespace bunker::crypto {

// Wire values are fixed by spec/FORMAT.md ("Suites").
enum class Suite : uint16_t {
  kAes256Gcm = 1,
  kChaCha20Poly1305 = 2,
};

inline constexpr size_t kAeadKeySize = 32;
inline constexpr size_t kAeadNonceSize = 12;
inline constexpr size_t kAeadTagSize = 16;

// "aes-256-gcm" / "chacha20-poly1305".
std::string_view SuiteName(Suite suite);
// Parses the names above; kInvalidArgument otherwise.
absl::StatusOr<Suite> ParseSuite(std::string_view name);
// Whether `value` is a wire value of a known suite.
bool IsKnownSuite(uint16_t value);

// An AEAD key bound to one suite. Immutable after Create(); Seal() and Open() are const and
// safe to call from many threads at once (each call uses its own EVP context).
class Aead {
 public:
  // kInvalidArgument unless key.size() == kAeadKeySize. The key is copied into guarded memory.
  static absl::StatusOr<std::unique_ptr<Aead>> Create(Suite suite, absl::Span<const uint8_t> key);
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  Suite suite() const { return suite_; }

  // Encrypts `plaintext` into `out`, which must be exactly plaintext.size() + kAeadTagSize bytes:
  // ciphertext followed by the 16-byte tag. `nonce` must be kAeadNonceSize bytes.
  // `out` may not overlap `plaintext` except exactly (in-place is allowed when out.data() ==
  // plaintext.data()).
  absl::Status Seal(absl::Span<const uint8_t> nonce, absl::Span<const uint8_t> aad,
                    absl::Span<const uint8_t> plaintext, absl::Span<uint8_t> out) const;

  // Decrypts `ciphertext` (ciphertext || tag) into `out`, exactly ciphertext.size() - 16 bytes.
  // Returns kDataLoss ("authentication failed") when the tag does not verify; `out` is wiped
  // before returning then.
  // kInvalidArgument for bad sizes. In-place allowed as for Seal.
  absl::Status Open(absl::Span<const uint8_t> nonce, absl::Span<const uint8_t> aad,
                    absl::Span<const uint8_t> ciphertext, absl::Span<uint8_t> out) const;

 private:
  struct Impl;
  Aead(Suite suite, std::unique_ptr<Impl> impl);
  Suite suite_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bunker::crypto

#endif  // BUNKER_CRYPTO_AEAD_H_

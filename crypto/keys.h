// Identities: an Ed25519 signing key plus an X25519 encryption key, their PEM files and
// fingerprints, signatures, and key wrapping to a recipient.
//
// PEM encoding (so that `openssl pkey` accepts the files):
//  - private identity: two "PRIVATE KEY" blocks (PKCS#8), Ed25519 first, then X25519;
//  - public identity: two "PUBLIC KEY" blocks (SubjectPublicKeyInfo), same order.
// Text outside the blocks is ignored; any other count or type of block is kInvalidArgument.
// The exact layout ToPem writes is read without OpenSSL (crypto/raw_key_pem.h: OpenSSL's PEM
// decoders cost milliseconds to set up), everything else through OpenSSL; both give the same
// keys for the same text.
//
// Fingerprint: "bk1:" + RFC 4648 base32 (lowercase, no padding) of the first 16 bytes of
//   SHA-256("bunker/v1 fingerprint" || 0x00 || ed25519_public || x25519_public).
// It names an identity everywhere (inspect output, errors, policies).
#ifndef BUNKER_CRYPTO_KEYS_H_
#define BUNKER_CRYPTO_KEYS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "crypto/secret.h"

namespace bunker::crypto {

inline constexpr size_t kEd25519PublicKeySize = 32;
inline constexpr size_t kEd25519SeedSize = 32;
inline constexpr size_t kEd25519SignatureSize = 64;
inline constexpr size_t kX25519KeySize = 32;
inline constexpr size_t kFingerprintSize = 16;

using Ed25519PublicKey = std::array<uint8_t, kEd25519PublicKeySize>;
using X25519PublicKey = std::array<uint8_t, kX25519KeySize>;
using Ed25519Signature = std::array<uint8_t, kEd25519SignatureSize>;

// The short, printable name of an identity.
struct Fingerprint {
  std::array<uint8_t, kFingerprintSize> bytes{};
  // "bk1:" followed by 26 base32 characters.
  std::string ToString() const;
  // Parses ToString()'s output (case-insensitive); kInvalidArgument otherwise.
  static absl::StatusOr<Fingerprint> Parse(std::string_view text);
  bool operator==(const Fingerprint& o) const { return bytes == o.bytes; }
  bool operator!=(const Fingerprint& o) const { return bytes != o.bytes; }
};

// The public half of an identity. Plain value; freely copied.
struct PublicIdentity {
  Ed25519PublicKey sign_key{};
  X25519PublicKey box_key{};

  Fingerprint fingerprint() const;
  // Two PEM "PUBLIC KEY" blocks.
  std::string ToPem() const;
  // kInvalidArgument naming what is wrong (never echoing the input).
  static absl::StatusOr<PublicIdentity> FromPem(std::string_view pem);
  bool operator==(const PublicIdentity& o) const {
    return sign_key == o.sign_key && box_key == o.box_key;
  }
};

// A private identity. Move-only; key material in guarded memory.
class Identity {
 public:
  // Fresh keys from the system CSPRNG.
  static Identity Generate();
  // Parses the two-block private PEM. The returned error never contains key material.
  static absl::StatusOr<Identity> FromPem(std::string_view pem);
  // Rebuilds from raw secrets: a 32-byte Ed25519 seed and a 32-byte X25519 private scalar.
  static absl::StatusOr<Identity> FromSecrets(absl::Span<const uint8_t> ed25519_seed,
                                             absl::Span<const uint8_t> x25519_private);

  Identity(Identity&&) noexcept = default;
  Identity& operator=(Identity&&) noexcept = default;

  // Two PEM "PRIVATE KEY" blocks, in guarded memory.
  SecretBytes ToPem() const;
  const PublicIdentity& public_identity() const { return public_; }
  Fingerprint fingerprint() const { return public_.fingerprint(); }

  // Ed25519 signature over `message`.
  Ed25519Signature Sign(absl::Span<const uint8_t> message) const;

  // X25519(private, peer_public). kDataLoss if the result is all zeros (low-order peer key).
  absl::StatusOr<SecretBytes> Agree(const X25519PublicKey& peer_public) const;

 private:
  Identity() = default;
  SecretBytes sign_secret_;  // libsodium's 64-byte Ed25519 secret key (seed || public)
  SecretBytes box_secret_;   // 32-byte X25519 scalar
  PublicIdentity public_;
};

// Verifies an Ed25519 signature. OK, or kDataLoss("signature does not verify").
absl::Status VerifySignature(const Ed25519PublicKey& public_key,
                             absl::Span<const uint8_t> message,
                             absl::Span<const uint8_t> signature);

// A symmetric key sealed to one recipient's X25519 key (HPKE-style base mode, see
// spec/FORMAT.md "Recipient key wrap"):
//   (e, E) fresh X25519 pair; dh = X25519(e, R)
//   k = HKDF-SHA256(ikm = dh, salt = E || R, info = "bunker/v1 key wrap" || 0x00 || context)
//   wrapped = ChaCha20-Poly1305(key = k, nonce = 0^12, aad = context, plaintext = key)
// The nonce may be zero because k is used exactly once (fresh e per wrap).
struct WrappedKey {
  X25519PublicKey ephemeral{};
  std::vector<uint8_t> ciphertext;  // key.size() + 16 bytes
};

inline constexpr std::string_view kKeyWrapLabel = "bunker/v1 key wrap";

// Wraps `key` for `recipient`, binding `context` (the caller's capsule id, policy hash, ...).
absl::StatusOr<WrappedKey> WrapKey(const X25519PublicKey& recipient, const SecretBytes& key,
                                   absl::Span<const uint8_t> context);

// Unwraps with `identity`'s X25519 key. kDataLoss if the entry was not made for this identity
// and context (wrong key, moved from another capsule, or tampered).
absl::StatusOr<SecretBytes> UnwrapKey(const Identity& identity, const WrappedKey& wrapped,
                                      absl::Span<const uint8_t> context);

}  // namespace bunker::crypto

#endif  // BUNKER_CRYPTO_KEYS_H_

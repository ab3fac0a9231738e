// WrapKey and UnwrapKey: a data key sealed to one recipient (keys.h "WrappedKey").
#include <sodium.h>

#include <cstring>
#include <vector>

#include "crypto/hkdf.h"
#include "crypto/keys.h"
#include "crypto/keys_internal.h"
#include "crypto/status_macros.h"

namespace bunker::crypto {
namespace {

using keys_internal::NonNull;

// keys.h, "WrappedKey": the wrap key is used exactly once, so an all-zero nonce is safe.
constexpr uint8_t kWrapNonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES] = {};
constexpr size_t kWrapTagSize = crypto_aead_chacha20poly1305_ietf_ABYTES;

// The one message for every way an unwrap can fail on well-formed input. Callers try each
// recipient entry in turn (age's "not for you, try the next key"), so the reasons must not be
// distinguishable.
constexpr char kNotForThisIdentity[] = "wrapped key does not open with this identity and context";

// k = HKDF-SHA256(ikm = dh, salt = E || R, info = label || 0x00 || context), keys.h "WrappedKey".
absl::StatusOr<SecretBytes> DeriveWrapKey(const SecretBytes& dh, const X25519PublicKey& ephemeral,
                                          const X25519PublicKey& recipient,
                                          absl::Span<const uint8_t> context) {
  std::array<uint8_t, 2 * kX25519KeySize> salt;
  std::memcpy(salt.data(), ephemeral.data(), kX25519KeySize);
  std::memcpy(salt.data() + kX25519KeySize, recipient.data(), kX25519KeySize);
  std::vector<uint8_t> info;
  info.reserve(kKeyWrapLabel.size() + 1 + context.size());
  info.insert(info.end(), kKeyWrapLabel.begin(), kKeyWrapLabel.end());
  info.push_back(0x00);
  info.insert(info.end(), context.begin(), context.end());
  SecretBytes k(crypto_aead_chacha20poly1305_ietf_KEYBYTES);
  BUNKER_RETURN_IF_ERROR(HkdfSha256(dh.span(), salt, info, k.mutable_span()));
  return k;
}

}  // namespace

absl::StatusOr<WrappedKey> WrapKey(const X25519PublicKey& recipient, const SecretBytes& key,
                                   absl::Span<const uint8_t> context) {
  if (key.empty()) return absl::InvalidArgumentError("cannot wrap an empty key");
  EnsureInitialized();
  WrappedKey wrapped;
  const SecretBytes ephemeral_secret = SecretBytes::Random(kX25519KeySize);
  if (crypto_scalarmult_base(wrapped.ephemeral.data(), ephemeral_secret.data()) != 0) {
    return absl::InternalError("X25519 ephemeral key generation failed");
  }
  SecretBytes dh(kX25519KeySize);
  if (crypto_scalarmult(dh.data(), ephemeral_secret.data(), recipient.data()) != 0 ||
      sodium_is_zero(dh.data(), dh.size())) {
    return absl::InvalidArgumentError("recipient X25519 key is low-order");
  }
  BUNKER_ASSIGN_OR_RETURN(const SecretBytes k,
                          DeriveWrapKey(dh, wrapped.ephemeral, recipient, context));
  wrapped.ciphertext.resize(key.size() + kWrapTagSize);
  unsigned long long ciphertext_len = 0;
  if (crypto_aead_chacha20poly1305_ietf_encrypt(
          wrapped.ciphertext.data(), &ciphertext_len, key.data(), key.size(), NonNull(context),
          context.size(), nullptr, kWrapNonce, k.data()) != 0 ||
      ciphertext_len != wrapped.ciphertext.size()) {
    return absl::InternalError("key wrap encryption failed");
  }
  return wrapped;
}

absl::StatusOr<SecretBytes> UnwrapKey(const Identity& identity, const WrappedKey& wrapped,
                                      absl::Span<const uint8_t> context) {
  // WrapKey never produces fewer bytes than a tag plus one key byte.
  if (wrapped.ciphertext.size() <= kWrapTagSize) {
    return absl::InvalidArgumentError("wrapped key is too short");
  }
  absl::StatusOr<SecretBytes> dh = identity.Agree(wrapped.ephemeral);
  if (!dh.ok()) {
    // A low-order ephemeral key can only come from tampering: same answer as a bad tag.
    if (absl::IsDataLoss(dh.status())) return absl::DataLossError(kNotForThisIdentity);
    return dh.status();
  }
  BUNKER_ASSIGN_OR_RETURN(
      const SecretBytes k,
      DeriveWrapKey(*dh, wrapped.ephemeral, identity.public_identity().box_key, context));
  SecretBytes key(wrapped.ciphertext.size() - kWrapTagSize);
  unsigned long long key_len = 0;
  // libsodium checks the tag before it decrypts anything.
  if (crypto_aead_chacha20poly1305_ietf_decrypt(
          key.data(), &key_len, nullptr, wrapped.ciphertext.data(), wrapped.ciphertext.size(),
          NonNull(context), context.size(), kWrapNonce, k.data()) != 0 ||
      key_len != key.size()) {
    return absl::DataLossError(kNotForThisIdentity);
  }
  return key;
}

}  // namespace bunker::crypto


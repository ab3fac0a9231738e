#include "crypto/raw_key_pem.h"

#include <sodium.h>

#include <cstring>

namespace bunker::crypto::raw_key_pem {
namespace {

constexpr size_t kKeySize = 32;

// RFC 8410 section 7 (PKCS#8 v1, no attributes, no public key) and section 4 (SPKI): the DER
// bytes before the 32-byte key. The byte at kOidLastByte is the OID's last arc.
constexpr uint8_t kPrivatePrefix[] = {0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06,
                                      0x03, 0x2b, 0x65, 0x00, 0x04, 0x22, 0x04, 0x20};
constexpr uint8_t kPublicPrefix[] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                     0x2b, 0x65, 0x00, 0x03, 0x21, 0x00};
constexpr size_t kPrivateOidLastByte = 11;
constexpr size_t kPublicOidLastByte = 8;
constexpr uint8_t kIdEd25519 = 0x70;  // 1.3.101.112
constexpr uint8_t kIdX25519 = 0x6e;   // 1.3.101.110

constexpr size_t kPrivateDerSize = sizeof(kPrivatePrefix) + kKeySize;  // 48
constexpr size_t kPublicDerSize = sizeof(kPublicPrefix) + kKeySize;    // 44

// Standard base64 with padding of n bytes.
constexpr size_t Base64Size(size_t n) { return (n + 2) / 3 * 4; }
static_assert(Base64Size(kPrivateDerSize) == 64, "one PEM line of 64 characters");
static_assert(Base64Size(kPublicDerSize) == 60, "one PEM line, shorter than 64 characters");

// Consumes `literal` from the front of `*text`; false (leaving `*text` as it was) otherwise.
bool Consume(std::string_view* text, std::string_view literal) {
  if (text->substr(0, literal.size()) != literal) return false;
  text->remove_prefix(literal.size());
  return true;
}

// Decodes one block "-----BEGIN label-----\n" base64 "\n-----END label-----\n" from the front of
// `*text` into `der` (exactly der.size() bytes), and checks its DER prefix, with `oid_last`
// at `oid_at`. `der` is caller-owned so that it can be guarded memory. Both the decoded bytes
// and their re-encoding are compared (the re-encoding in constant time: it is key material),
// so that only the one canonical base64 spelling of the bytes is accepted.
bool DecodeBlock(std::string_view* text, std::string_view begin, std::string_view end,
                 const uint8_t* prefix, size_t prefix_size, size_t oid_at, uint8_t oid_last,
                 SecretBytes* der) {
  if (!Consume(text, begin)) return false;
  const size_t b64_size = Base64Size(der->size());
  if (text->size() < b64_size) return false;
  const std::string_view b64 = text->substr(0, b64_size);
  size_t bin_len = 0;
  const char* b64_end = nullptr;
  if (sodium_base642bin(der->data(), der->size(), b64.data(), b64.size(), /*ignore=*/nullptr,
                        &bin_len, &b64_end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      bin_len != der->size() || b64_end != b64.data() + b64.size()) {
    return false;
  }
  // The canonical re-encoding must be the text (no non-zero padding bits).
  SecretBytes again(b64_size + 1);  // sodium_bin2base64 writes a NUL
  sodium_bin2base64(reinterpret_cast<char*>(again.data()), again.size(), der->data(), der->size(),
                    sodium_base64_VARIANT_ORIGINAL);
  if (sodium_memcmp(again.data(), b64.data(), b64_size) != 0) return false;
  text->remove_prefix(b64_size);
  if (!Consume(text, end)) return false;
  // The prefix is public structure (a type tag, lengths, an OID): plain comparisons suffice.
  if (std::memcmp(der->data(), prefix, oid_at) != 0 || der->data()[oid_at] != oid_last ||
      std::memcmp(der->data() + oid_at + 1, prefix + oid_at + 1, prefix_size - oid_at - 1) != 0) {
    return false;
  }
  return true;
}

constexpr std::string_view kBeginPrivate = "-----BEGIN PRIVATE KEY-----\n";
constexpr std::string_view kEndPrivate = "\n-----END PRIVATE KEY-----\n";
constexpr std::string_view kBeginPublic = "-----BEGIN PUBLIC KEY-----\n";
constexpr std::string_view kEndPublic = "\n-----END PUBLIC KEY-----\n";

}  // namespace

std::optional<PrivateKeys> DecodePrivate(std::string_view pem) {
  SecretBytes ed(kPrivateDerSize);
  SecretBytes x(kPrivateDerSize);
  if (!DecodeBlock(&pem, kBeginPrivate, kEndPrivate, kPrivatePrefix, sizeof(kPrivatePrefix),
                   kPrivateOidLastByte, kIdEd25519, &ed) ||
      !DecodeBlock(&pem, kBeginPrivate, kEndPrivate, kPrivatePrefix, sizeof(kPrivatePrefix),
                   kPrivateOidLastByte, kIdX25519, &x) ||
      !pem.empty()) {
    return std::nullopt;  // `ed` and `x` wipe themselves
  }
  PrivateKeys keys;
  keys.ed25519_seed = SecretBytes::CopyOf(ed.span().subspan(sizeof(kPrivatePrefix)));
  keys.x25519_private = SecretBytes::CopyOf(x.span().subspan(sizeof(kPrivatePrefix)));
  return keys;
}

std::optional<PublicKeys> DecodePublic(std::string_view pem) {
  SecretBytes ed(kPublicDerSize);  // not secret; SecretBytes for one buffer type in DecodeBlock
  SecretBytes x(kPublicDerSize);
  if (!DecodeBlock(&pem, kBeginPublic, kEndPublic, kPublicPrefix, sizeof(kPublicPrefix),
                   kPublicOidLastByte, kIdEd25519, &ed) ||
      !DecodeBlock(&pem, kBeginPublic, kEndPublic, kPublicPrefix, sizeof(kPublicPrefix),
                   kPublicOidLastByte, kIdX25519, &x) ||
      !pem.empty()) {
    return std::nullopt;
  }
  PublicKeys keys;
  std::memcpy(keys.ed25519.data(), ed.data() + sizeof(kPublicPrefix), kKeySize);
  std::memcpy(keys.x25519.data(), x.data() + sizeof(kPublicPrefix), kKeySize);
  return keys;
}

}  // namespace bunker::crypto::raw_key_pem

// The one PEM layout Bunker writes for its identities, decoded without OpenSSL.
//
// `capsule keygen` (and `openssl pkey`) write every identity file in one fixed layout: two
// blocks, Ed25519 first, then X25519, each one line of standard base64 of a fixed DER structure
// (RFC 8410): for a private identity a PKCS#8 v1 "PRIVATE KEY" without attributes or public key
//   30 2e 02 01 00 30 05 06 03 2b 65 (70 | 6e) 04 22 04 20 || 32-byte key   (48 bytes)
// and for a public identity a SubjectPublicKeyInfo "PUBLIC KEY"
//   30 2a 30 05 06 03 2b 65 (70 | 6e) 03 21 00 || 32-byte key               (44 bytes)
// (OIDs 1.3.101.112 id-Ed25519 and 1.3.101.110 id-X25519). OpenSSL's PEM decoders take about
// 3 ms to set themselves up on each start, a seventh of a `capsule cat`; these functions read
// the fixed layout by string compare and hand the raw keys to libsodium instead.
//
// They are a fast path, not a parser of their own: they accept only a file that is byte for
// byte that layout (every "-----" line exact, "\n" line ends, nothing before, between or after
// the blocks, canonical base64), and answer nullopt for anything else, whatever it is. The
// caller then gives the text to OpenSSL (crypto/keys.cc), which accepts the other spellings
// PEM allows (CRLF, text around the blocks, other line widths) and names what is wrong. Every
// text accepted here decodes to the same keys through OpenSSL; keys_test.cc holds the two
// equal.
#ifndef BUNKER_CRYPTO_RAW_KEY_PEM_H_
#define BUNKER_CRYPTO_RAW_KEY_PEM_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "crypto/secret.h"

namespace bunker::crypto::raw_key_pem {

// The raw private keys of a private identity file in the layout above: the 32-byte Ed25519
// seed and the 32-byte X25519 scalar, in guarded memory. Every intermediate buffer that held
// key bytes is wiped before return.
struct PrivateKeys {
  SecretBytes ed25519_seed;
  SecretBytes x25519_private;
};
std::optional<PrivateKeys> DecodePrivate(std::string_view pem);

// The raw public keys of a public identity file in the layout above.
struct PublicKeys {
  std::array<uint8_t, 32> ed25519{};
  std::array<uint8_t, 32> x25519{};
};
std::optional<PublicKeys> DecodePublic(std::string_view pem);

}  // namespace bunker::crypto::raw_key_pem

#endif  // BUNKER_CRYPTO_RAW_KEY_PEM_H_

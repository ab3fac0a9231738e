// HKDF-SHA256 (RFC 5869) through OpenSSL's EVP_KDF.
#ifndef BUNKER_CRYPTO_HKDF_H_
#define BUNKER_CRYPTO_HKDF_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace bunker::crypto {

// Extract-then-expand: fills `out` (1..8160 bytes) with HKDF-SHA256(ikm, salt, info).
// Returns kInvalidArgument for an unsupported output length or an `info` over 32 KiB (OpenSSL 3's
// limit, which also bounds key-wrap contexts), kInternal if OpenSSL fails.
// Error texts never contain key material.
absl::Status HkdfSha256(absl::Span<const uint8_t> ikm, absl::Span<const uint8_t> salt,
                        absl::Span<const uint8_t> info, absl::Span<uint8_t> out);

}  // namespace bunker::crypto

#endif  // BUNKER_CRYPTO_HKDF_H_

#include "crypto/hkdf.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "crypto/openssl_handles.h"
#include "crypto/secret.h"

namespace bunker::crypto {
namespace {

// RFC 5869 section 2.3: L <= 255 * HashLen.
constexpr size_t kMaxOutput = 255 * 32;

// OpenSSL 3's HKDF provider refuses longer info (HKDF_MAXINFO in providers/.../kdfs/hkdf.c).
// RFC 5869 sets no bound; checking here turns that into a caller error rather than kInternal.
constexpr size_t kMaxInfo = 32 * 1024;

// OSSL_PARAM_get_octet_string() refuses a parameter whose data pointer is null even when its
// size is zero, and an empty absl::Span may well have data() == nullptr. Empty salt and info are
// legitimate (RFC 5869 test case 3), so point empty inputs at a harmless byte.
OSSL_PARAM OctetParam(const char* name, absl::Span<const uint8_t> bytes) {
  static const uint8_t kEmpty = 0;
  const uint8_t* p = bytes.empty() ? &kEmpty : bytes.data();
  // OSSL_PARAM has no const variant; OpenSSL only reads input parameters.
  return OSSL_PARAM_construct_octet_string(name, const_cast<uint8_t*>(p), bytes.size());
}

}  // namespace

absl::Status HkdfSha256(absl::Span<const uint8_t> ikm, absl::Span<const uint8_t> salt,
                        absl::Span<const uint8_t> info, absl::Span<uint8_t> out) {
  if (out.empty() || out.size() > kMaxOutput) {
    return absl::InvalidArgumentError("HKDF-SHA256 output length must be 1..8160 bytes");
  }
  if (info.size() > kMaxInfo) {
    return absl::InvalidArgumentError("HKDF-SHA256 info longer than 32 KiB is not supported");
  }
  openssl::ErrorQueueGuard error_guard;

  openssl::EvpKdfPtr kdf(EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr));
  if (kdf == nullptr) return absl::InternalError("OpenSSL has no HKDF implementation");
  openssl::EvpKdfCtxPtr ctx(EVP_KDF_CTX_new(kdf.get()));
  if (ctx == nullptr) return absl::InternalError("cannot create HKDF context");

  char digest[] = "SHA256";
  int mode = EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND;
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OctetParam(OSSL_KDF_PARAM_KEY, ikm),
      OctetParam(OSSL_KDF_PARAM_SALT, salt),
      OctetParam(OSSL_KDF_PARAM_INFO, info),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    // Don't leave a partial or stale key behind for a caller who ignores the status.
    Wipe(out);
    return absl::InternalError("HKDF-SHA256 derivation failed");
  }
  return absl::OkStatus();
}

}  // namespace bunker::crypto

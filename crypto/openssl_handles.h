// Owning smart pointers for the OpenSSL handles Bunker uses, and a guard that keeps OpenSSL's
// thread-local error queue as the caller left it. Shared by crypto/ and transfer/ (TLS
// certificates), the two places that call OpenSSL directly.
#ifndef BUNKER_CRYPTO_OPENSSL_HANDLES_H_
#define BUNKER_CRYPTO_OPENSSL_HANDLES_H_

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace bunker::crypto::openssl {

// Each deleter calls the matching OpenSSL free function; all of them accept nullptr.
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free_all(p); }
};
struct EvpCipherDeleter {
  void operator()(EVP_CIPHER* p) const { EVP_CIPHER_free(p); }
};
struct EvpCipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
struct EvpKdfDeleter {
  void operator()(EVP_KDF* p) const { EVP_KDF_free(p); }
};
struct EvpKdfCtxDeleter {
  void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); }
};
struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};

using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using EvpCipherPtr = std::unique_ptr<EVP_CIPHER, EvpCipherDeleter>;
using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, EvpCipherCtxDeleter>;
using EvpKdfPtr = std::unique_ptr<EVP_KDF, EvpKdfDeleter>;
using EvpKdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, EvpKdfCtxDeleter>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter>;
struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct X509NameDeleter {
  void operator()(X509_NAME* p) const { X509_NAME_free(p); }
};
struct BignumDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct NameConstraintsDeleter {
  void operator()(NAME_CONSTRAINTS* p) const { NAME_CONSTRAINTS_free(p); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using X509NamePtr = std::unique_ptr<X509_NAME, X509NameDeleter>;
using BignumPtr = std::unique_ptr<BIGNUM, BignumDeleter>;
using NameConstraintsPtr = std::unique_ptr<NAME_CONSTRAINTS, NameConstraintsDeleter>;

// Drops every error OpenSSL queued during the guard's lifetime, leaving entries queued before it
// untouched. crypto/ reports failures as absl::Status; stale queue entries would otherwise be
// misread by the next unrelated OpenSSL user on this thread (e.g. TLS code that calls
// ERR_get_error() after SSL_read).
class ErrorQueueGuard {
 public:
  ErrorQueueGuard() { ERR_set_mark(); }
  ~ErrorQueueGuard() { ERR_pop_to_mark(); }
  ErrorQueueGuard(const ErrorQueueGuard&) = delete;
  ErrorQueueGuard& operator=(const ErrorQueueGuard&) = delete;
};

}  // namespace bunker::crypto::openssl

#endif  // BUNKER_CRYPTO_OPENSSL_HANDLES_H_

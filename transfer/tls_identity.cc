#include "transfer/tls_identity.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <kj/exception.h>

#include <array>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <utility>

#include "crypto/openssl_handles.h"
#include "crypto/secret.h"

namespace bunker::transfer {
namespace {

using crypto::openssl::BignumPtr;
using crypto::openssl::BioPtr;
using crypto::openssl::ErrorQueueGuard;
using crypto::openssl::EvpPkeyPtr;
using crypto::openssl::NameConstraintsPtr;
using crypto::openssl::X509NamePtr;
using crypto::openssl::X509Ptr;

// The OU of a peer anchor's (and so of a site certificate's issuer's) name.
constexpr char kAnchorUnit[] = "bunker site key";
constexpr int kSerialBytes = 16;
constexpr absl::Duration kAnchorBackdate = absl::Hours(24);
constexpr absl::Duration kAnchorValidity = absl::Hours(24 * 365 * 100);

absl::Status OpenSslError(const char* what) {
  return absl::InternalError(std::string("OpenSSL failed: ") + what);
}

int RefusePassphrase(char*, int, int, void*) { return -1; }

// "CN=<fingerprint>" or "CN=<fingerprint>, OU=bunker site key".
X509NamePtr MakeName(const crypto::Fingerprint& fingerprint, bool anchor) {
  X509NamePtr name(X509_NAME_new());
  if (name == nullptr) return nullptr;
  const std::string cn = fingerprint.ToString();
  if (X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.data()),
                                 static_cast<int>(cn.size()), -1, 0) != 1) {
    return nullptr;
  }
  if (anchor && X509_NAME_add_entry_by_txt(name.get(), "OU", MBSTRING_UTF8,
                                           reinterpret_cast<const unsigned char*>(kAnchorUnit),
                                           -1, -1, 0) != 1) {
    return nullptr;
  }
  return name;
}

// Adds one extension written in OpenSSL's configuration syntax (no config sections needed).
absl::Status AddExtension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return OpenSslError("X509V3_EXT_conf_nid");
  const int added = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return added == 1 ? absl::OkStatus() : OpenSslError("X509_add_ext");
}

// Permitted subtrees: dirName `subject` and DNS `hostname` (RFC 5280 section 4.2.1.10).
absl::Status AddNameConstraints(X509* cert, const X509_NAME* subject,
                                const std::string& hostname) {
  NameConstraintsPtr nc(NAME_CONSTRAINTS_new());
  if (nc == nullptr) return OpenSslError("NAME_CONSTRAINTS_new");
  nc->permittedSubtrees = sk_GENERAL_SUBTREE_new_null();
  if (nc->permittedSubtrees == nullptr) return OpenSslError("sk_GENERAL_SUBTREE_new_null");

  auto add = [&](int type, void* value) -> bool {
    GENERAL_SUBTREE* subtree = GENERAL_SUBTREE_new();
    if (subtree == nullptr) return false;
    GENERAL_NAME_set0_value(subtree->base, type, value);
    if (sk_GENERAL_SUBTREE_push(nc->permittedSubtrees, subtree) == 0) {
      GENERAL_SUBTREE_free(subtree);
      return false;
    }
    return true;
  };

  X509_NAME* dir = X509_NAME_dup(subject);
  if (dir == nullptr || !add(GEN_DIRNAME, dir)) {
    X509_NAME_free(dir);
    return OpenSslError("name constraint dirName");
  }
  ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
  if (dns == nullptr || ASN1_STRING_set(dns, hostname.data(), static_cast<int>(hostname.size())) != 1 ||
      !add(GEN_DNS, dns)) {
    ASN1_IA5STRING_free(dns);
    return OpenSslError("name constraint DNS");
  }
  if (X509_add1_ext_i2d(cert, NID_name_constraints, nc.get(), /*crit=*/1, X509V3_ADD_DEFAULT) != 1) {
    return OpenSslError("X509_add1_ext_i2d(nameConstraints)");
  }
  return absl::OkStatus();
}

// Version, random positive serial, names, validity and public key.
absl::StatusOr<X509Ptr> NewCertificate(const X509_NAME* issuer, const X509_NAME* subject,
                                       EVP_PKEY* public_key, absl::Time not_before,
                                       absl::Time not_after) {
  X509Ptr cert(X509_new());
  if (cert == nullptr || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return OpenSslError("X509_new");
  }
  std::array<uint8_t, kSerialBytes> serial_bytes;
  crypto::RandomBytes(absl::MakeSpan(serial_bytes));
  serial_bytes[0] &= 0x7f;  // DER INTEGER: keep it positive.
  serial_bytes[0] |= 0x40;  // ... and of a fixed length.
  BignumPtr serial(BN_bin2bn(serial_bytes.data(), kSerialBytes, nullptr));
  if (serial == nullptr || BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) ==
                               nullptr) {
    return OpenSslError("serial number");
  }
  if (X509_set_issuer_name(cert.get(), issuer) != 1 ||
      X509_set_subject_name(cert.get(), subject) != 1) {
    return OpenSslError("X509_set_*_name");
  }
  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), absl::ToTimeT(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), absl::ToTimeT(not_after)) == nullptr) {
    return OpenSslError("ASN1_TIME_set");
  }
  if (X509_set_pubkey(cert.get(), public_key) != 1) return OpenSslError("X509_set_pubkey");
  return cert;
}

absl::StatusOr<std::string> SignAndEncode(X509* cert, EVP_PKEY* signing_key) {
  // Ed25519 signs the message itself: no digest (RFC 8410 section 6).
  if (X509_sign(cert, signing_key, nullptr) <= 0) return OpenSslError("X509_sign");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslError("PEM_write_bio_X509");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0 || data == nullptr) return OpenSslError("BIO_get_mem_data");
  return std::string(data, static_cast<size_t>(len));
}

// The identity's Ed25519 key as an OpenSSL key: the first PRIVATE KEY block of its PEM (see
// crypto/keys.h), checked against the identity's public key.
absl::StatusOr<EvpPkeyPtr> SigningKey(const crypto::Identity& identity) {
  const crypto::SecretBytes pem = identity.ToPem();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return OpenSslError("BIO_new_mem_buf");
  // OpenSSL 3 reads private-key PEM through its secure heap and cleanses it.
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, RefusePassphrase, nullptr));
  if (key == nullptr || EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519) {
    return absl::InternalError("identity PEM does not start with an Ed25519 private key");
  }
  crypto::Ed25519PublicKey raw{};
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), raw.data(), &len) != 1 || len != raw.size() ||
      raw != identity.public_identity().sign_key) {
    return absl::InternalError("identity PEM's Ed25519 key does not match its public key");
  }
  return key;
}

absl::StatusOr<std::string> SiteCertificatePem(const crypto::Identity& identity, EVP_PKEY* key,
                                               absl::Time now, absl::Duration validity) {
  if (validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("certificate validity must be positive");
  }
  const crypto::Fingerprint fingerprint = identity.fingerprint();
  X509NamePtr issuer = MakeName(fingerprint, /*anchor=*/true);
  X509NamePtr subject = MakeName(fingerprint, /*anchor=*/false);
  if (issuer == nullptr || subject == nullptr) return OpenSslError("X509_NAME");
  absl::StatusOr<X509Ptr> cert =
      NewCertificate(issuer.get(), subject.get(), key, now - kClockSkewAllowance, now + validity);
  if (!cert.ok()) return cert.status();
  X509* x = cert->get();
  for (auto [nid, value] : {
           std::pair<int, std::string>{NID_basic_constraints, "critical,CA:FALSE"},
           {NID_key_usage, "critical,digitalSignature"},
           {NID_ext_key_usage, "serverAuth,clientAuth"},
           {NID_subject_alt_name, "DNS:" + SiteHostname(fingerprint)},
       }) {
    if (absl::Status s = AddExtension(x, nid, value); !s.ok()) return s;
  }
  return SignAndEncode(x, key);
}

// Runs a kj constructor that reports OpenSSL failures by throwing.
template <typename T, typename F>
absl::StatusOr<T> CatchKj(const char* what, F&& make) {
  std::optional<T> out;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { out.emplace(make()); })) {
    (void)e;  // OpenSSL's text may describe the key; keep it out of the status.
    return absl::InternalError(std::string("kj-tls rejected the ") + what);
  }
  return std::move(*out);
}

}  // namespace

std::string SiteHostname(const crypto::Fingerprint& fingerprint) {
  std::string name = fingerprint.ToString();
  for (char& c : name) {
    if (c == ':') c = '-';
  }
  return name;
}

absl::StatusOr<std::string> MakeSiteCertificatePem(const crypto::Identity& identity,
                                                   absl::Time now, absl::Duration validity) {
  ErrorQueueGuard guard;
  absl::StatusOr<EvpPkeyPtr> key = SigningKey(identity);
  if (!key.ok()) return key.status();
  return SiteCertificatePem(identity, key->get(), now, validity);
}

absl::StatusOr<kj::TlsKeypair> MakeSiteKeypair(const crypto::Identity& identity, absl::Time now,
                                               absl::Duration validity) {
  ErrorQueueGuard guard;
  absl::StatusOr<EvpPkeyPtr> key = SigningKey(identity);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> cert_pem = SiteCertificatePem(identity, key->get(), now, validity);
  if (!cert_pem.ok()) return cert_pem.status();

  // PKCS#8 DER of the Ed25519 key, in guarded memory, for kj::TlsPrivateKey(asn1).
  const int der_len = i2d_PrivateKey(key->get(), nullptr);
  if (der_len <= 0) return OpenSslError("i2d_PrivateKey");
  crypto::SecretBytes der(static_cast<size_t>(der_len));
  unsigned char* out = der.data();
  if (i2d_PrivateKey(key->get(), &out) != der_len) return OpenSslError("i2d_PrivateKey");

  absl::StatusOr<kj::TlsPrivateKey> private_key = CatchKj<kj::TlsPrivateKey>(
      "private key", [&] { return kj::TlsPrivateKey(kj::arrayPtr(der.data(), der.size())); });
  if (!private_key.ok()) return private_key.status();
  absl::StatusOr<kj::TlsCertificate> certificate =
      CatchKj<kj::TlsCertificate>("site certificate", [&] {
        return kj::TlsCertificate(kj::StringPtr(cert_pem->c_str(), cert_pem->size()));
      });
  if (!certificate.ok()) return certificate.status();
  return kj::TlsKeypair{std::move(*private_key), std::move(*certificate)};
}

absl::StatusOr<std::string> MakePeerAnchorPem(const crypto::PublicIdentity& peer,
                                              absl::Time now) {
  ErrorQueueGuard guard;
  const crypto::Fingerprint fingerprint = peer.fingerprint();
  X509NamePtr name = MakeName(fingerprint, /*anchor=*/true);
  X509NamePtr leaf_name = MakeName(fingerprint, /*anchor=*/false);
  if (name == nullptr || leaf_name == nullptr) return OpenSslError("X509_NAME");
  EvpPkeyPtr peer_key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, peer.sign_key.data(),
                                                  peer.sign_key.size()));
  if (peer_key == nullptr) return OpenSslError("EVP_PKEY_new_raw_public_key");
  absl::StatusOr<X509Ptr> cert = NewCertificate(name.get(), name.get(), peer_key.get(),
                                                now - kAnchorBackdate, now + kAnchorValidity);
  if (!cert.ok()) return cert.status();
  X509* x = cert->get();
  for (auto [nid, value] : {
           std::pair<int, std::string>{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
           {NID_key_usage, "critical,keyCertSign"},
       }) {
    if (absl::Status s = AddExtension(x, nid, value); !s.ok()) return s;
  }
  if (absl::Status s = AddNameConstraints(x, leaf_name.get(), SiteHostname(fingerprint));
      !s.ok()) {
    return s;
  }
  // The signature is never checked (see tls_identity.h); a throwaway key fills the field.
  EvpPkeyPtr throwaway(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (throwaway == nullptr) return OpenSslError("EVP_PKEY_Q_keygen");
  return SignAndEncode(x, throwaway.get());
}

}  // namespace bunker::transfer

#include "transfer/tls_identity.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "crypto/keys.h"

namespace bunker::transfer {
namespace {

struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

X509Ptr ParseCert(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), pem.size()),
                                                &BIO_free);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

std::string EncodeCert(X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, len);
}

PkeyPtr SigningKey(const crypto::Identity& identity) {
  crypto::SecretBytes pem = identity.ToPem();
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), pem.size()),
                                                &BIO_free);
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

std::string CommonName(const X509_NAME* name) {
  char buf[256] = {};
  X509_NAME_get_text_by_NID(name, NID_commonName, buf, sizeof(buf));
  return buf;
}

// Runs OpenSSL's chain verification the way a TLS client does (purpose "ssl_server", optional
// hostname), trusting exactly `anchors`. Returns the X509_V_* result.
int VerifyChain(const std::string& leaf_pem, const std::vector<std::string>& anchor_pems,
                const std::string& hostname = "", absl::Time at = kNow) {
  X509Ptr leaf = ParseCert(leaf_pem);
  if (leaf == nullptr) return -1;
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(),
                                                                &X509_STORE_free);
  for (const std::string& pem : anchor_pems) {
    X509Ptr anchor = ParseCert(pem);
    if (anchor == nullptr || X509_STORE_add_cert(store.get(), anchor.get()) != 1) return -1;
  }
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(),
                                                                      &X509_STORE_CTX_free);
  if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr) != 1) return -1;
  X509_STORE_CTX_set_default(ctx.get(), "ssl_server");
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, absl::ToTimeT(at));
  if (!hostname.empty()) X509_VERIFY_PARAM_set1_host(param, hostname.c_str(), hostname.size());
  X509_verify_cert(ctx.get());
  return X509_STORE_CTX_get_error(ctx.get());
}

class TlsIdentityTest : public ::testing::Test {
 protected:
  std::string Leaf(const crypto::Identity& id) {
    absl::StatusOr<std::string> pem = MakeSiteCertificatePem(id, kNow, kSiteCertificateValidity);
    EXPECT_TRUE(pem.ok()) << pem.status();
    return pem.value_or("");
  }
  std::string Anchor(const crypto::Identity& id) {
    absl::StatusOr<std::string> pem = MakePeerAnchorPem(id.public_identity(), kNow);
    EXPECT_TRUE(pem.ok()) << pem.status();
    return pem.value_or("");
  }
  // Re-signs `leaf_pem` with `signer` after `edit` changed it: what a peer holding only its own
  // key could present.
  template <typename Edit>
  std::string Forge(const std::string& leaf_pem, const crypto::Identity& signer, Edit edit) {
    X509Ptr cert = ParseCert(leaf_pem);
    edit(cert.get());
    PkeyPtr key = SigningKey(signer);
    EXPECT_GT(X509_sign(cert.get(), key.get(), nullptr), 0);
    return EncodeCert(cert.get());
  }

  crypto::Identity a_ = crypto::Identity::Generate();
  crypto::Identity b_ = crypto::Identity::Generate();
};

TEST_F(TlsIdentityTest, HostnameIsTheFingerprintAsOneDnsLabel) {
  const std::string fp = a_.fingerprint().ToString();
  const std::string host = SiteHostname(a_.fingerprint());
  EXPECT_EQ(host.size(), fp.size());
  EXPECT_EQ(host.substr(0, 4), "bk1-");
  EXPECT_EQ(host.substr(4), fp.substr(4));
  EXPECT_LE(host.size(), 63u);
}

TEST_F(TlsIdentityTest, SiteCertificateCarriesTheIdentityKeyAndName) {
  X509Ptr cert = ParseCert(Leaf(a_));
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(CommonName(X509_get_subject_name(cert.get())), a_.fingerprint().ToString());
  EXPECT_EQ(CommonName(X509_get_issuer_name(cert.get())), a_.fingerprint().ToString());
  EXPECT_NE(X509_NAME_cmp(X509_get_subject_name(cert.get()), X509_get_issuer_name(cert.get())), 0)
      << "a self-issued leaf would need to equal a trust anchor";
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  ASSERT_EQ(EVP_PKEY_get_base_id(key), EVP_PKEY_ED25519);
  crypto::Ed25519PublicKey raw{};
  size_t len = raw.size();
  ASSERT_EQ(EVP_PKEY_get_raw_public_key(key, raw.data(), &len), 1);
  EXPECT_EQ(raw, a_.public_identity().sign_key);
  EXPECT_EQ(X509_verify(cert.get(), key), 1) << "signed by the identity key itself";
  EXPECT_EQ(X509_check_host(cert.get(), SiteHostname(a_.fingerprint()).c_str(), 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_EQ(ASN1_TIME_cmp_time_t(X509_get0_notAfter(cert.get()),
                                 absl::ToTimeT(kNow + kSiteCertificateValidity)),
            0);
}

TEST_F(TlsIdentityTest, AnchorCarriesThePinnedKeyAndConfinesItToThePeersNames) {
  X509Ptr anchor = ParseCert(Anchor(a_));
  ASSERT_NE(anchor, nullptr);
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(anchor.get()), X509_get_issuer_name(anchor.get())),
            0);
  EXPECT_EQ(CommonName(X509_get_subject_name(anchor.get())), a_.fingerprint().ToString());
  EVP_PKEY* key = X509_get0_pubkey(anchor.get());
  crypto::Ed25519PublicKey raw{};
  size_t len = raw.size();
  ASSERT_EQ(EVP_PKEY_get_raw_public_key(key, raw.data(), &len), 1);
  EXPECT_EQ(raw, a_.public_identity().sign_key);
  EXPECT_EQ(X509_check_ca(anchor.get()), 1);
  int critical = -1;
  auto* nc = static_cast<NAME_CONSTRAINTS*>(
      X509_get_ext_d2i(anchor.get(), NID_name_constraints, &critical, nullptr));
  ASSERT_NE(nc, nullptr);
  EXPECT_EQ(critical, 1);
  EXPECT_EQ(sk_GENERAL_SUBTREE_num(nc->permittedSubtrees), 2);
  EXPECT_EQ(nc->excludedSubtrees, nullptr);
  NAME_CONSTRAINTS_free(nc);
  // Made from the public key alone: its own signature is by a throwaway key and is never used.
  EXPECT_NE(X509_verify(anchor.get(), key), 1);
}

TEST_F(TlsIdentityTest, RejectsNonPositiveValidity) {
  EXPECT_EQ(MakeSiteCertificatePem(a_, kNow, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TlsIdentityTest, KeypairLoadsIntoKj) {
  EXPECT_TRUE(MakeSiteKeypair(a_, kNow).ok());
}

TEST_F(TlsIdentityTest, LeafVerifiesAgainstItsOwnAnchorOnly) {
  const std::string host_a = SiteHostname(a_.fingerprint());
  EXPECT_EQ(VerifyChain(Leaf(a_), {Anchor(a_)}, host_a), X509_V_OK);
  EXPECT_EQ(VerifyChain(Leaf(a_), {Anchor(b_), Anchor(a_)}, host_a), X509_V_OK);
  EXPECT_NE(VerifyChain(Leaf(a_), {Anchor(b_)}), X509_V_OK);
  EXPECT_NE(VerifyChain(Leaf(a_), {}), X509_V_OK);
  // Right key, wrong expected name.
  EXPECT_NE(VerifyChain(Leaf(a_), {Anchor(a_), Anchor(b_)}, SiteHostname(b_.fingerprint())),
            X509_V_OK);
}

TEST_F(TlsIdentityTest, LeafOutsideItsValidityIsRefused) {
  EXPECT_EQ(VerifyChain(Leaf(a_), {Anchor(a_)}, "",
                        kNow + kSiteCertificateValidity - absl::Hours(1)),
            X509_V_OK);
  EXPECT_EQ(VerifyChain(Leaf(a_), {Anchor(a_)}, "",
                        kNow + kSiteCertificateValidity + absl::Hours(1)),
            X509_V_ERR_CERT_HAS_EXPIRED);
  EXPECT_EQ(VerifyChain(Leaf(a_), {Anchor(a_)}, "", kNow - absl::Hours(1)),
            X509_V_ERR_CERT_NOT_YET_VALID);
}

// A pinned peer B must not be able to pass as pinned peer A with its own key.
TEST_F(TlsIdentityTest, PeerCannotClaimAnotherPeersSubject) {
  const std::string forged = Forge(Leaf(b_), b_, [&](X509* cert) {
    X509_NAME* name = X509_NAME_new();
    const std::string cn = a_.fingerprint().ToString();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.data()), cn.size(), -1, 0);
    X509_set_subject_name(cert, name);
    X509_NAME_free(name);
  });
  EXPECT_EQ(VerifyChain(forged, {Anchor(a_), Anchor(b_)}), X509_V_ERR_PERMITTED_VIOLATION);
}

TEST_F(TlsIdentityTest, PeerCannotClaimAnotherPeersHostname) {
  const std::string forged = Forge(Leaf(b_), b_, [&](X509* cert) {
    X509_EXTENSION_free(X509_delete_ext(cert, X509_get_ext_by_NID(cert, NID_subject_alt_name, -1)));
    const std::string san = "DNS:" + SiteHostname(a_.fingerprint());
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, san.c_str());
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  });
  EXPECT_EQ(VerifyChain(forged, {Anchor(a_), Anchor(b_)}, SiteHostname(a_.fingerprint())),
            X509_V_ERR_PERMITTED_VIOLATION);
}

TEST_F(TlsIdentityTest, PeerCannotClaimAnotherPeersIssuer) {
  // Issued "by A's key" but signed with B's: the signature check against A's anchor fails.
  const std::string a_leaf = Leaf(a_);
  const std::string forged = Forge(a_leaf, b_, [](X509*) {});
  EXPECT_EQ(VerifyChain(forged, {Anchor(a_), Anchor(b_)}),
            X509_V_ERR_CERT_SIGNATURE_FAILURE);
}

TEST_F(TlsIdentityTest, SelfSignedCertificateForAPinnedNameIsRefused) {
  // An attacker's own self-issued certificate with A's names and any key.
  crypto::Identity mallory = crypto::Identity::Generate();
  const std::string forged = Forge(Leaf(mallory), mallory, [&](X509* cert) {
    X509_set_issuer_name(cert, X509_get_issuer_name(ParseCert(Leaf(a_)).get()));
  });
  EXPECT_NE(VerifyChain(forged, {Anchor(a_)}), X509_V_OK);
}

}  // namespace
}  // namespace bunker::transfer

// The fast path of crypto/raw_key_pem.h: it accepts exactly the layout ToPem writes, gives the
// keys OpenSSL gives for the same text, and answers nullopt for every other text, which
// Identity::FromPem / PublicIdentity::FromPem then hand to OpenSSL as before.
#include "crypto/raw_key_pem.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <optional>
#include <string>
#include <vector>

#include "crypto/keys.h"
#include "crypto/openssl_handles.h"
#include "gtest/gtest.h"

namespace bunker::crypto {
namespace {

// keys_test.cc's fixture (RFC 8032 test 1 seed, RFC 7748 Alice's scalar), written by ToPem.
constexpr char kPrivatePem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
    "-----END PRIVATE KEY-----\n"
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VuBCIEIHcHbQpzGKV9PBbBclGyZkXfTC+H68CZKrF3+6UduSwq\n"
    "-----END PRIVATE KEY-----\n";
constexpr char kPublicPem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
    "-----END PUBLIC KEY-----\n"
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VuAyEAhSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
    "-----END PUBLIC KEY-----\n";
constexpr char kFingerprint[] = "bk1:a4o3l4zghgo7w22stxmedz2g3i";

std::string AsString(const SecretBytes& s) {
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

std::vector<uint8_t> Bytes(absl::Span<const uint8_t> s) { return {s.begin(), s.end()}; }

// What OpenSSL alone reads from `pem`: the raw keys of its first two blocks of `private_key`
// type (Ed25519 then X25519), or nullopt if it cannot.
struct OpenSslKeys {
  std::vector<uint8_t> ed25519, x25519;
};
std::optional<OpenSslKeys> ReadWithOpenSsl(const std::string& pem, bool private_key) {
  openssl::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  OpenSslKeys out;
  for (int type : {EVP_PKEY_ED25519, EVP_PKEY_X25519}) {
    openssl::EvpPkeyPtr pkey(private_key ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                                         : PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    if (pkey == nullptr || EVP_PKEY_get_base_id(pkey.get()) != type) {
      ERR_clear_error();
      return std::nullopt;
    }
    std::vector<uint8_t> raw(32);
    size_t len = raw.size();
    const int ok = private_key ? EVP_PKEY_get_raw_private_key(pkey.get(), raw.data(), &len)
                               : EVP_PKEY_get_raw_public_key(pkey.get(), raw.data(), &len);
    if (ok != 1 || len != 32) return std::nullopt;
    (type == EVP_PKEY_ED25519 ? out.ed25519 : out.x25519) = raw;
  }
  return out;
}

TEST(RawKeyPemTest, DecodesTheFixtureAsOpenSslDoes) {
  std::optional<raw_key_pem::PrivateKeys> priv = raw_key_pem::DecodePrivate(kPrivatePem);
  ASSERT_TRUE(priv.has_value());
  std::optional<OpenSslKeys> want = ReadWithOpenSsl(kPrivatePem, true);
  ASSERT_TRUE(want.has_value());
  EXPECT_EQ(Bytes(priv->ed25519_seed.span()), want->ed25519);
  EXPECT_EQ(Bytes(priv->x25519_private.span()), want->x25519);

  std::optional<raw_key_pem::PublicKeys> pub = raw_key_pem::DecodePublic(kPublicPem);
  ASSERT_TRUE(pub.has_value());
  want = ReadWithOpenSsl(kPublicPem, false);
  ASSERT_TRUE(want.has_value());
  EXPECT_EQ(Bytes(pub->ed25519), want->ed25519);
  EXPECT_EQ(Bytes(pub->x25519), want->x25519);
  EXPECT_EQ(Identity::FromPem(kPrivatePem)->fingerprint().ToString(), kFingerprint);
  EXPECT_EQ(PublicIdentity::FromPem(kPublicPem)->fingerprint().ToString(), kFingerprint);
}

TEST(RawKeyPemTest, EveryGeneratedIdentityTakesTheFastPath) {
  for (int i = 0; i < 50; ++i) {
    const Identity id = Identity::Generate();
    const std::string priv = AsString(id.ToPem());
    const std::string pub = id.public_identity().ToPem();
    std::optional<raw_key_pem::PrivateKeys> keys = raw_key_pem::DecodePrivate(priv);
    ASSERT_TRUE(keys.has_value()) << i;
    std::optional<OpenSslKeys> want = ReadWithOpenSsl(priv, true);
    ASSERT_TRUE(want.has_value());
    EXPECT_EQ(Bytes(keys->ed25519_seed.span()), want->ed25519);
    EXPECT_EQ(Bytes(keys->x25519_private.span()), want->x25519);
    std::optional<raw_key_pem::PublicKeys> pk = raw_key_pem::DecodePublic(pub);
    ASSERT_TRUE(pk.has_value()) << i;
    EXPECT_EQ(pk->ed25519, id.public_identity().sign_key);
    EXPECT_EQ(pk->x25519, id.public_identity().box_key);
    absl::StatusOr<Identity> back = Identity::FromPem(priv);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->public_identity(), id.public_identity());
    EXPECT_EQ(back->Sign({}), id.Sign({}));
  }
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? s : s.replace(at, from.size(), to);
}

std::string Crlf(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += '\r';
    out += c;
  }
  return out;
}

// Texts the fast path refuses. `openssl_same_keys`: OpenSSL (so FromPem) still reads them, and
// to the fixture's keys; otherwise FromPem fails with kInvalidArgument as before.
struct Variant {
  const char* name;
  std::string text;
  bool openssl_same_keys;
};

std::vector<Variant> PrivateVariants() {
  const std::string pem = kPrivatePem;
  const std::string second = pem.substr(pem.find("-----END") + 26);
  return {
      {"CRLF line ends", Crlf(pem), true},
      {"no final newline", pem.substr(0, pem.size() - 1), true},
      {"text before", "# comment\n" + pem, true},
      {"text after (trailing garbage)", pem + "garbage", true},
      {"text between", Replace(pem, "-----\n-----BEGIN", "-----\nnote\n-----BEGIN"), true},
      {"truncated in the base64", pem.substr(0, 60), false},
      {"truncated in the second block", pem.substr(0, pem.size() - 40), false},
      {"one block", pem.substr(0, pem.find("-----END") + 26), false},
      {"extra block", pem + second, false},
      // A byte after the key inside its OCTET STRING: OpenSSL's decoder ignores it (as it
      // did before the fast path); the fast path only takes the exact 48-byte structure.
      {"extra data inside the DER",
       Replace(pem, "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g",
               "MC8CAQAwBQYDK2VwBCMEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9gAA=="),
       true},
      {"wrong OID (X25519 first)",
       Replace(pem, "MC4CAQAwBQYDK2VwBCIE", "MC4CAQAwBQYDK2VuBCIE"), false},
      {"unknown OID", Replace(pem, "MC4CAQAwBQYDK2VwBCIE", "MC4CAQAwBQYDK2VxBCIE"), false},
      {"bad base64 character", Replace(pem, "9JLsLMRE", "9JLs*MRE"), false},
      // OpenSSL's base64 decoder would skip the space; the layout check refuses it
      // (spec/FORMAT.md 2: inside a block, base64 characters only).
      {"base64 with a space", Replace(pem, "9JLsLMRE", "9JLs LMRE"), false},
      {"lowercase label", Replace(pem, "BEGIN PRIVATE KEY", "BEGIN private KEY"), false},
      {"public blocks", kPublicPem, false},
      {"empty", "", false},
  };
}

TEST(RawKeyPemTest, MalformedPrivateVariantsFallBackToOpenSsl) {
  const Identity fixture = *Identity::FromPem(kPrivatePem);
  for (const Variant& v : PrivateVariants()) {
    SCOPED_TRACE(v.name);
    EXPECT_FALSE(raw_key_pem::DecodePrivate(v.text).has_value());
    absl::StatusOr<Identity> id = Identity::FromPem(v.text);
    if (v.openssl_same_keys) {
      ASSERT_TRUE(id.ok()) << id.status();
      EXPECT_EQ(id->public_identity(), fixture.public_identity());
    } else {
      ASSERT_FALSE(id.ok());
      EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(id.status().message().find("MC4CAQAw"), absl::string_view::npos);
    }
  }
}

TEST(RawKeyPemTest, MalformedPublicVariantsFallBackToOpenSsl) {
  const std::string pem = kPublicPem;
  const PublicIdentity fixture = *PublicIdentity::FromPem(pem);
  const std::vector<Variant> variants = {
      {"CRLF line ends", Crlf(pem), true},
      {"text after", pem + "x\n", true},
      {"truncated", pem.substr(0, pem.size() - 30), false},
      {"missing padding", Replace(pem, "URo=\n", "URo\n"), false},
      {"wrong OID (X25519 first)", Replace(pem, "MCowBQYDK2VwAyEA11qY", "MCowBQYDK2VuAyEA11qY"),
       false},
      {"private blocks", kPrivatePem, false},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    EXPECT_FALSE(raw_key_pem::DecodePublic(v.text).has_value());
    absl::StatusOr<PublicIdentity> id = PublicIdentity::FromPem(v.text);
    if (v.openssl_same_keys) {
      ASSERT_TRUE(id.ok()) << id.status();
      EXPECT_EQ(*id, fixture);
    } else {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

// The last base64 character before '=' carries 4 bits of data and 2 bits that must be zero:
// only the canonical spelling is taken here (OpenSSL ignores the two bits).
TEST(RawKeyPemTest, NonCanonicalBase64IsRefused) {
  const std::string pem = Replace(kPublicPem, "URo=\n", "URp=\n");
  EXPECT_FALSE(raw_key_pem::DecodePublic(pem).has_value());
}

// Every truncation and every single-bit flip: the fast path either refuses, or (a flip inside
// the key bytes' base64) reads exactly what OpenSSL reads from the same text.
TEST(RawKeyPemTest, TruncationsAndBitFlipsAgreeWithOpenSsl) {
  for (const bool private_key : {true, false}) {
    const std::string pem = private_key ? kPrivatePem : kPublicPem;
    for (size_t len = 0; len < pem.size(); ++len) {
      const std::string cut = pem.substr(0, len);
      EXPECT_FALSE(private_key ? raw_key_pem::DecodePrivate(cut).has_value()
                               : raw_key_pem::DecodePublic(cut).has_value())
          << len;
    }
    int accepted = 0;
    for (size_t i = 0; i < pem.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string bad = pem;
        bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
        std::optional<std::vector<uint8_t>> ed, x;
        if (private_key) {
          std::optional<raw_key_pem::PrivateKeys> k = raw_key_pem::DecodePrivate(bad);
          if (!k) continue;
          ed = Bytes(k->ed25519_seed.span());
          x = Bytes(k->x25519_private.span());
        } else {
          std::optional<raw_key_pem::PublicKeys> k = raw_key_pem::DecodePublic(bad);
          if (!k) continue;
          ed = Bytes(k->ed25519);
          x = Bytes(k->x25519);
        }
        ++accepted;
        std::optional<OpenSslKeys> want = ReadWithOpenSsl(bad, private_key);
        ASSERT_TRUE(want.has_value()) << i << " bit " << bit;
        EXPECT_EQ(*ed, want->ed25519) << i << " bit " << bit;
        EXPECT_EQ(*x, want->x25519) << i << " bit " << bit;
      }
    }
    EXPECT_GT(accepted, 0);
  }
}

}  // namespace
}  // namespace bunker::crypto

// Tests of crypto/keys.h. Over 500 lines on purpose: one file per unit under test; the PEM and
// key-file negative cases are a table that reads best whole.
#include "crypto/keys.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "crypto/aead.h"
#include "crypto/hkdf.h"
#include "crypto/openssl_handles.h"
#include "crypto/sha256.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace bunker::crypto {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Hex(std::string_view hex) {
  Bytes out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

template <size_t N>
std::array<uint8_t, N> HexArray(std::string_view hex) {
  const Bytes b = Hex(hex);
  std::array<uint8_t, N> a{};
  EXPECT_EQ(b.size(), N);
  std::copy_n(b.begin(), std::min(N, b.size()), a.begin());
  return a;
}

Bytes Str(std::string_view s) { return Bytes(s.begin(), s.end()); }

std::string AsString(const SecretBytes& s) {
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

// RFC 8032 section 7.1, TEST 1 (Ed25519) and RFC 7748 section 6.1 (X25519, Alice and Bob).
constexpr char kEdSeed[] = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
constexpr char kEdPublic[] = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
constexpr char kEdSigEmpty[] =
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b4"
    "6bd25bf5f0595bbe24655141438e7a100b";
constexpr char kAlicePrivate[] = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
constexpr char kAlicePublic[] = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
constexpr char kBobPrivate[] = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
constexpr char kBobPublic[] = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
constexpr char kSharedSecret[] = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

// The identity (RFC 8032 TEST 1 seed, RFC 7748 Alice) encoded by an independent implementation
// (Python "cryptography", PKCS#8 / SubjectPublicKeyInfo PEM).
constexpr char kFixturePrivatePem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
    "-----END PRIVATE KEY-----\n"
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VuBCIEIHcHbQpzGKV9PBbBclGyZkXfTC+H68CZKrF3+6UduSwq\n"
    "-----END PRIVATE KEY-----\n";
constexpr char kFixturePublicPem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
    "-----END PUBLIC KEY-----\n"
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VuAyEAhSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
    "-----END PUBLIC KEY-----\n";
// "bk1:" + base32(SHA-256("bunker/v1 fingerprint" || 0x00 || ed || x)[:16]), computed in Python.
constexpr char kFixtureFingerprint[] = "bk1:a4o3l4zghgo7w22stxmedz2g3i";

Identity FixtureIdentity() {
  absl::StatusOr<Identity> id = Identity::FromSecrets(Hex(kEdSeed), Hex(kAlicePrivate));
  EXPECT_TRUE(id.ok()) << id.status();
  return *std::move(id);
}

// Splits PEM text into its blocks, each "-----BEGIN ...-----\n...-----END ...-----\n".
std::vector<std::string> Blocks(std::string_view pem) {
  std::vector<std::string> blocks;
  size_t pos = 0;
  while ((pos = pem.find("-----BEGIN ", pos)) != std::string_view::npos) {
    const size_t end_marker = pem.find("-----END ", pos);
    const size_t eol = pem.find('\n', end_marker);
    blocks.emplace_back(pem.substr(pos, eol + 1 - pos));
    pos = eol + 1;
  }
  return blocks;
}

// The base64 body lines of PEM text: what an error message must never echo.
std::vector<std::string> BodyLines(std::string_view pem) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(absl::string_view(pem.data(), pem.size()), '\n')) {
    if (!line.empty() && !absl::StartsWith(line, "-----")) lines.emplace_back(line);
  }
  return lines;
}

void ExpectNoEcho(const absl::Status& status, std::string_view pem) {
  for (const std::string& line : BodyLines(pem)) {
    // Any 8-character run of a body line would be a leak.
    for (size_t i = 0; i + 8 <= line.size(); i += 4) {
      EXPECT_FALSE(absl::StrContains(status.message(), line.substr(i, 8)))
          << "error echoes PEM body: " << status;
    }
  }
}

// A path in a fresh temporary folder of its own, removed when the test ends.
std::string TempPath(const std::string& name) {
  return bunker::test_temp::MakeTempDir("keys") + "/" + name;
}

std::string WriteTempFile(const std::string& name, std::string_view contents) {
  const std::string path = TempPath(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  EXPECT_TRUE(out.good()) << path;
  return path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a shell command quietly; true on exit status 0.
bool RunQuietly(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

// A PEM produced by OpenSSL for a key type of our choosing, to feed wrong types to FromPem.
std::string OpenSslPem(const char* algorithm, const char* param, bool private_key) {
  openssl::EvpPkeyPtr pkey(param ? EVP_PKEY_Q_keygen(nullptr, nullptr, algorithm, param)
                                  : EVP_PKEY_Q_keygen(nullptr, nullptr, algorithm));
  EXPECT_NE(pkey, nullptr) << algorithm;
  openssl::BioPtr bio(BIO_new(BIO_s_mem()));
  const int ok = private_key ? PEM_write_bio_PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0,
                                                        nullptr, nullptr)
                             : PEM_write_bio_PUBKEY(bio.get(), pkey.get());
  EXPECT_EQ(ok, 1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

// ---- Fingerprint ----------------------------------------------------------------------------

TEST(FingerprintTest, KnownAnswer) {
  const Identity id = FixtureIdentity();
  EXPECT_EQ(id.fingerprint().ToString(), kFixtureFingerprint);
  EXPECT_EQ(id.public_identity().fingerprint(), id.fingerprint());
}

TEST(FingerprintTest, MatchesDefinition) {
  const Identity id = Identity::Generate();
  const PublicIdentity& pub = id.public_identity();
  Bytes input = Str("bunker/v1 fingerprint");
  input.push_back(0x00);
  input.insert(input.end(), pub.sign_key.begin(), pub.sign_key.end());
  input.insert(input.end(), pub.box_key.begin(), pub.box_key.end());
  const Sha256Digest digest = Sha256::Hash(input);
  const Fingerprint fp = id.fingerprint();
  EXPECT_TRUE(std::equal(fp.bytes.begin(), fp.bytes.end(), digest.begin()));
}

TEST(FingerprintTest, Base32Encoding) {
  Fingerprint fp;
  EXPECT_EQ(fp.ToString(), "bk1:" + std::string(26, 'a'));
  for (size_t i = 0; i < fp.bytes.size(); ++i) fp.bytes[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(fp.ToString(), "bk1:aaaqeayeaudaocajbifqydiob4");  // RFC 4648 base32, lowercased
  fp.bytes.fill(0xff);
  EXPECT_EQ(fp.ToString(), "bk1:" + std::string(25, '7') + "4");
}

TEST(FingerprintTest, FormatAndParseRoundTrip) {
  for (int i = 0; i < 20; ++i) {
    const Fingerprint fp = Identity::Generate().fingerprint();
    const std::string text = fp.ToString();
    ASSERT_EQ(text.size(), 30u);
    EXPECT_TRUE(absl::StartsWith(text, "bk1:"));
    for (char c : text.substr(4)) {
      EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')) << text;
    }
    absl::StatusOr<Fingerprint> parsed = Fingerprint::Parse(text);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, fp);
  }
}

TEST(FingerprintTest, ParseIsCaseInsensitive) {
  absl::StatusOr<Fingerprint> lower = Fingerprint::Parse(kFixtureFingerprint);
  absl::StatusOr<Fingerprint> upper = Fingerprint::Parse("BK1:A4O3L4ZGHGO7W22STXMEDZ2G3I");
  absl::StatusOr<Fingerprint> mixed = Fingerprint::Parse("Bk1:a4O3l4zGHGO7w22stxmedz2g3I");
  ASSERT_TRUE(lower.ok());
  ASSERT_TRUE(upper.ok());
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(*lower, *upper);
  EXPECT_EQ(*lower, *mixed);
  EXPECT_EQ(upper->ToString(), kFixtureFingerprint);
  EXPECT_EQ(*lower, FixtureIdentity().fingerprint());
}

TEST(FingerprintTest, ParseRejectsMalformed) {
  const std::string good = kFixtureFingerprint;
  for (const std::string& bad : {
           std::string(), std::string("bk1:"), good.substr(0, 29),  // too short
           good + "a",                                              // too long
           "bk2:" + good.substr(4),                                 // wrong version
           "bk1;" + good.substr(4),                                 // wrong separator
           good.substr(4) + "aaaa",                                 // no prefix
           "bk1:" + std::string(25, 'a') + "1",                     // '1' is not base32
           "bk1:" + std::string(25, 'a') + "8",                     // nor '8'
           "bk1:" + std::string(25, 'a') + "=",                     // no padding
           "bk1:" + std::string(24, 'a') + "a=",                    //
           "bk1:" + std::string(25, 'a') + "b",                     // non-zero trailing bits
           "bk1:" + std::string(25, '7') + "7",                     // non-zero trailing bits
           " " + good.substr(0, 29),                                // leading space
       }) {
    absl::StatusOr<Fingerprint> fp = Fingerprint::Parse(bad);
    EXPECT_FALSE(fp.ok()) << bad;
    EXPECT_EQ(fp.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(FingerprintTest, DependsOnBothKeys) {
  PublicIdentity a = FixtureIdentity().public_identity();
  PublicIdentity b = a, c = a;
  b.sign_key[31] ^= 1;
  c.box_key[0] ^= 1;
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  EXPECT_NE(a.fingerprint(), c.fingerprint());
  EXPECT_NE(b.fingerprint(), c.fingerprint());
}

// ---- Identity construction ------------------------------------------------------------------

TEST(IdentityTest, FromSecretsKnownAnswers) {
  const Identity id = FixtureIdentity();
  EXPECT_EQ(ToHex(id.public_identity().sign_key), kEdPublic);
  EXPECT_EQ(ToHex(id.public_identity().box_key), kAlicePublic);
}

TEST(IdentityTest, FromSecretsRejectsWrongSizes) {
  const Bytes k32(32, 1), k31(31, 1), k33(33, 1), k64(64, 1);
  for (const Bytes* bad : {&k31, &k33, &k64}) {
    EXPECT_EQ(Identity::FromSecrets(*bad, k32).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Identity::FromSecrets(k32, *bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(Identity::FromSecrets({}, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IdentityTest, GenerateGivesDistinctIdentities) {
  std::set<std::string> seen;
  for (int i = 0; i < 10; ++i) seen.insert(Identity::Generate().fingerprint().ToString());
  EXPECT_EQ(seen.size(), 10u);
}

TEST(IdentityTest, MoveKeepsKeys) {
  Identity a = Identity::Generate();
  const PublicIdentity pub = a.public_identity();
  Identity b = std::move(a);
  EXPECT_EQ(b.public_identity(), pub);
  const Bytes msg = Str("m");
  const Ed25519Signature sig = b.Sign(msg);
  EXPECT_TRUE(VerifySignature(pub.sign_key, msg, sig).ok());
}

// ---- Signatures -----------------------------------------------------------------------------

TEST(SignatureTest, Rfc8032Test1) {
  const Identity id = FixtureIdentity();
  const Ed25519Signature sig = id.Sign({});
  EXPECT_EQ(ToHex(sig), kEdSigEmpty);
  EXPECT_TRUE(VerifySignature(id.public_identity().sign_key, {}, sig).ok());
}

TEST(SignatureTest, Rfc8032Test2VerifiesExternalSignature) {
  // RFC 8032 section 7.1, TEST 2: one-byte message 0x72.
  const Ed25519PublicKey pub =
      HexArray<32>("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
  const Bytes sig =
      Hex("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
          "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
  EXPECT_TRUE(VerifySignature(pub, Bytes{0x72}, sig).ok());
  EXPECT_EQ(VerifySignature(pub, Bytes{0x73}, sig).code(), absl::StatusCode::kDataLoss);
}

TEST(SignatureTest, SignVerifyRoundTripAndTamperRejection) {
  const Identity id = Identity::Generate();
  const Ed25519PublicKey& pub = id.public_identity().sign_key;
  const Bytes msg = Str("manifest bytes to be signed");
  const Ed25519Signature sig = id.Sign(msg);
  ASSERT_TRUE(VerifySignature(pub, msg, sig).ok());

  for (size_t i = 0; i < sig.size(); ++i) {
    Ed25519Signature bad = sig;
    bad[i] ^= 0x01;
    const absl::Status st = VerifySignature(pub, msg, bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << "signature byte " << i;
  }
  for (size_t i = 0; i < msg.size(); ++i) {
    Bytes bad = msg;
    bad[i] ^= 0x01;
    EXPECT_EQ(VerifySignature(pub, bad, sig).code(), absl::StatusCode::kDataLoss) << i;
  }
  Bytes longer = msg;
  longer.push_back(0);
  EXPECT_EQ(VerifySignature(pub, longer, sig).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(VerifySignature(Identity::Generate().public_identity().sign_key, msg, sig).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(VerifySignature(pub, msg, sig).message(), "");
  EXPECT_EQ(VerifySignature(pub, longer, sig).message(), "signature does not verify");
}

TEST(SignatureTest, WrongLengthSignatureDoesNotVerify) {
  const Identity id = Identity::Generate();
  const Bytes msg = Str("m");
  const Ed25519Signature sig = id.Sign(msg);
  const Bytes short_sig(sig.begin(), sig.end() - 1);
  Bytes long_sig(sig.begin(), sig.end());
  long_sig.push_back(0);
  EXPECT_EQ(VerifySignature(id.public_identity().sign_key, msg, short_sig).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(VerifySignature(id.public_identity().sign_key, msg, long_sig).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(VerifySignature(id.public_identity().sign_key, msg, {}).code(),
            absl::StatusCode::kDataLoss);
}

TEST(SignatureTest, DeterministicAndMessageBound) {
  const Identity id = Identity::Generate();
  EXPECT_EQ(id.Sign(Str("a")), id.Sign(Str("a")));
  EXPECT_NE(id.Sign(Str("a")), id.Sign(Str("b")));
}

// ---- Key agreement --------------------------------------------------------------------------

TEST(AgreeTest, Rfc7748KnownAnswer) {
  absl::StatusOr<Identity> alice = Identity::FromSecrets(Bytes(32, 1), Hex(kAlicePrivate));
  absl::StatusOr<Identity> bob = Identity::FromSecrets(Bytes(32, 2), Hex(kBobPrivate));
  ASSERT_TRUE(alice.ok());
  ASSERT_TRUE(bob.ok());
  EXPECT_EQ(ToHex(bob->public_identity().box_key), kBobPublic);
  absl::StatusOr<SecretBytes> ab = alice->Agree(HexArray<32>(kBobPublic));
  absl::StatusOr<SecretBytes> ba = bob->Agree(HexArray<32>(kAlicePublic));
  ASSERT_TRUE(ab.ok());
  ASSERT_TRUE(ba.ok());
  EXPECT_EQ(ToHex(ab->span()), kSharedSecret);
  EXPECT_EQ(ToHex(ba->span()), kSharedSecret);
}

TEST(AgreeTest, LowOrderPeerKeysAreRejected) {
  const Identity id = Identity::Generate();
  for (const char* point : {
           "0000000000000000000000000000000000000000000000000000000000000000",
           "0100000000000000000000000000000000000000000000000000000000000000",
           "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
           "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
           "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
       }) {
    absl::StatusOr<SecretBytes> shared = id.Agree(HexArray<32>(point));
    ASSERT_FALSE(shared.ok()) << point;
    EXPECT_EQ(shared.status().code(), absl::StatusCode::kDataLoss) << point;
  }
}

// ---- PEM ------------------------------------------------------------------------------------

TEST(PemTest, PrivatePemMatchesIndependentEncoding) {
  const SecretBytes pem = FixtureIdentity().ToPem();
  EXPECT_EQ(AsString(pem), kFixturePrivatePem);
}

TEST(PemTest, PublicPemMatchesIndependentEncoding) {
  EXPECT_EQ(FixtureIdentity().public_identity().ToPem(), kFixturePublicPem);
}

TEST(PemTest, ParsesIndependentEncoding) {
  absl::StatusOr<Identity> id = Identity::FromPem(kFixturePrivatePem);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->fingerprint().ToString(), kFixtureFingerprint);
  absl::StatusOr<PublicIdentity> pub = PublicIdentity::FromPem(kFixturePublicPem);
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(*pub, id->public_identity());
}

TEST(PemTest, PrivateRoundTripIsByteExact) {
  const Identity id = Identity::Generate();
  const SecretBytes pem = id.ToPem();
  const std::string text = AsString(pem);
  EXPECT_EQ(Blocks(text).size(), 2u);
  for (const std::string& block : Blocks(text)) {
    EXPECT_TRUE(absl::StartsWith(block, "-----BEGIN PRIVATE KEY-----\n")) << "(block elided)";
  }
  absl::StatusOr<Identity> back = Identity::FromPem(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->public_identity(), id.public_identity());
  EXPECT_EQ(AsString(back->ToPem()), text);
  // Same secrets: same deterministic signatures, same shared secrets.
  EXPECT_EQ(back->Sign(Str("x")), id.Sign(Str("x")));
  const X25519PublicKey peer = Identity::Generate().public_identity().box_key;
  EXPECT_TRUE(ConstantTimeEquals(back->Agree(peer)->span(), id.Agree(peer)->span()));
}

TEST(PemTest, PublicRoundTripIsByteExact) {
  const PublicIdentity pub = Identity::Generate().public_identity();
  const std::string text = pub.ToPem();
  ASSERT_EQ(Blocks(text).size(), 2u);
  for (const std::string& block : Blocks(text)) {
    EXPECT_TRUE(absl::StartsWith(block, "-----BEGIN PUBLIC KEY-----\n")) << block;
  }
  absl::StatusOr<PublicIdentity> back = PublicIdentity::FromPem(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, pub);
  EXPECT_EQ(back->ToPem(), text);
}

TEST(PemTest, TextOutsideBlocksIsIgnored) {
  const std::string priv =
      "# my bunker identity\n\n" + std::string(kFixturePrivatePem) + "trailing notes\n";
  absl::StatusOr<Identity> id = Identity::FromPem(priv);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->fingerprint().ToString(), kFixtureFingerprint);

  const std::vector<std::string> blocks = Blocks(kFixturePublicPem);
  const std::string pub = "comment\r\n" + blocks[0] + "between\n" + blocks[1] + "after";
  absl::StatusOr<PublicIdentity> p = PublicIdentity::FromPem(pub);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->fingerprint().ToString(), kFixtureFingerprint);
}

TEST(PemTest, CrlfLineEndingsAreAccepted) {
  std::string crlf;
  for (char c : std::string(kFixturePrivatePem)) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  absl::StatusOr<Identity> id = Identity::FromPem(crlf);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->fingerprint().ToString(), kFixtureFingerprint);
}

// spec/FORMAT.md 2 "PEM files": inside a block, only lines of base64 characters, each perhaps
// followed by spaces, tabs or a CR. OpenSSL alone would take some of the refused spellings (a
// leading space, a blank line right after BEGIN) and not others (a blank line before END).
TEST(PemTest, LinesInsideABlockAreBase64Only) {
  const std::string pem = kFixturePrivatePem;
  const size_t first = pem.find('\n') + 1;                       // the first base64 line
  const size_t end = pem.find("-----END PRIVATE KEY-----");      // the first END line
  auto with = [&pem](size_t at, std::string_view text) {
    std::string out = pem;
    out.insert(at, text);
    return out;
  };
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"a leading space", with(first, " ")},
      {"a leading tab", with(first, "\t")},
      {"a blank line after BEGIN", with(first, "\n")},
      {"a blank line before END", with(end, "\n")},
      {"a line of spaces", with(end, "  \n")},
      {"a PEM header", with(first, "Proc-Type: 4,ENCRYPTED\n")},
      {"a character outside base64", with(first + 4, "*")},
  };
  for (const auto& [what, text] : refused) {
    absl::StatusOr<Identity> id = Identity::FromPem(text);
    ASSERT_FALSE(id.ok()) << what << " was accepted";
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_TRUE(absl::StrContains(id.status().message(), "not base64")) << what;
    ExpectNoEcho(id.status(), pem);
  }
  // Trailing spaces, tabs and CRs are allowed, as are blank lines outside the blocks.
  std::string trailing;
  for (char c : pem) {
    if (c == '\n') trailing += " \t\r";
    trailing += c;
  }
  absl::StatusOr<Identity> id = Identity::FromPem("\n\n" + trailing + "\n\n");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->fingerprint().ToString(), kFixtureFingerprint);
  // A public identity follows the same rule.
  std::string pub = kFixturePublicPem;
  pub.insert(pub.find('\n') + 1, "\n");
  EXPECT_EQ(PublicIdentity::FromPem(pub).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PemTest, OpenSslCliAcceptsFiles) {
  if (!RunQuietly("openssl version")) GTEST_SKIP() << "openssl CLI not installed";
  const Identity id = Identity::Generate();
  const SecretBytes priv = id.ToPem();
  const std::string pub = id.public_identity().ToPem();
  const std::vector<std::string> priv_blocks = Blocks(AsString(priv));
  const std::vector<std::string> pub_blocks = Blocks(pub);
  ASSERT_EQ(priv_blocks.size(), 2u);
  ASSERT_EQ(pub_blocks.size(), 2u);

  const std::string priv_path = WriteTempFile("priv.pem", AsString(priv));
  const std::string pub_path = WriteTempFile("pub.pem", pub);
  EXPECT_TRUE(RunQuietly("openssl pkey -in '" + priv_path + "' -noout"));
  EXPECT_TRUE(RunQuietly("openssl pkey -pubin -in '" + pub_path + "' -noout"));

  // `openssl pkey` reads only the first block; check each block on its own too, and that
  // OpenSSL derives from each private block exactly the public block we wrote.
  for (int i = 0; i < 2; ++i) {
    const std::string n = std::to_string(i);
    const std::string pb = WriteTempFile("priv" + n + ".pem", priv_blocks[i]);
    const std::string ub = WriteTempFile("pub" + n + ".pem", pub_blocks[i]);
    const std::string derived = TempPath("derived" + n + ".pem");
    EXPECT_TRUE(RunQuietly("openssl pkey -in '" + pb + "' -noout")) << i;
    EXPECT_TRUE(RunQuietly("openssl pkey -pubin -in '" + ub + "' -noout")) << i;
    EXPECT_TRUE(RunQuietly("openssl pkey -in '" + pb + "' -pubout -out '" + derived + "'")) << i;
    EXPECT_EQ(ReadFile(derived), pub_blocks[i]) << i;
    const char* type = i == 0 ? "ED25519" : "X25519";
    EXPECT_TRUE(RunQuietly("openssl pkey -in '" + pb + "' -noout -text | grep -q " + type)) << i;
    std::remove(pb.c_str());
    std::remove(ub.c_str());
    std::remove(derived.c_str());
  }
  std::remove(priv_path.c_str());
  std::remove(pub_path.c_str());
}

TEST(PemTest, ParsesKeysWrittenByOpenSslCli) {
  if (!RunQuietly("openssl version")) GTEST_SKIP() << "openssl CLI not installed";
  const std::string ed = TempPath("cli_ed.pem");
  const std::string x = TempPath("cli_x.pem");
  ASSERT_TRUE(RunQuietly("openssl genpkey -algorithm ED25519 -out '" + ed + "'"));
  ASSERT_TRUE(RunQuietly("openssl genpkey -algorithm X25519 -out '" + x + "'"));
  const std::string priv = ReadFile(ed) + ReadFile(x);
  std::remove(ed.c_str());
  std::remove(x.c_str());
  absl::StatusOr<Identity> id = Identity::FromPem(priv);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(AsString(id->ToPem()), priv);
}

TEST(PemTest, RejectsGarbage) {
  for (std::string_view bad : {
           std::string_view(""),
           std::string_view("hello"),
           std::string_view("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n"
                            "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n"),
           std::string_view("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"
                            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"),
           std::string_view("-----BEGIN PRIVATE KEY-----\n"),
           std::string_view("-----BEGIN PRIVATE KEY----\nAAAA\n-----END PRIVATE KEY-----\n"),
       }) {
    absl::StatusOr<Identity> id = Identity::FromPem(bad);
    ASSERT_FALSE(id.ok());
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << id.status();
    absl::StatusOr<PublicIdentity> pub = PublicIdentity::FromPem(bad);
    ASSERT_FALSE(pub.ok());
    EXPECT_EQ(pub.status().code(), absl::StatusCode::kInvalidArgument) << pub.status();
  }
}

TEST(PemTest, RejectsWrongBlockCounts) {
  const std::vector<std::string> priv = Blocks(kFixturePrivatePem);
  const std::vector<std::string> pub = Blocks(kFixturePublicPem);
  for (const std::string& bad :
       {priv[0], priv[1], priv[0] + priv[1] + priv[1], priv[0] + priv[1] + priv[0]}) {
    absl::StatusOr<Identity> id = Identity::FromPem(bad);
    ASSERT_FALSE(id.ok());
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  }
  for (const std::string& bad : {pub[0], pub[1], pub[0] + pub[1] + pub[1]}) {
    absl::StatusOr<PublicIdentity> p = PublicIdentity::FromPem(bad);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // A block of another type mixed in, even when two of the right type are present.
  const std::string mixed_priv = pub[0] + priv[0] + priv[1];
  EXPECT_EQ(Identity::FromPem(mixed_priv).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string mixed_pub = pub[0] + pub[1] + priv[0];
  EXPECT_EQ(PublicIdentity::FromPem(mixed_pub).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PemTest, RejectsWrongKeyTypesAndOrder) {
  const std::vector<std::string> priv = Blocks(kFixturePrivatePem);
  const std::vector<std::string> pub = Blocks(kFixturePublicPem);
  const std::string ec_priv = OpenSslPem("EC", "P-256", true);
  const std::string ec_pub = OpenSslPem("EC", "P-256", false);
  const std::string ed448_priv = OpenSslPem("ED448", nullptr, true);
  const std::string x448_pub = OpenSslPem("X448", nullptr, false);
  for (const std::string& bad : {priv[1] + priv[0], priv[0] + priv[0], priv[1] + priv[1],
                                 ec_priv + priv[1], priv[0] + ec_priv, ed448_priv + priv[1]}) {
    absl::StatusOr<Identity> id = Identity::FromPem(bad);
    ASSERT_FALSE(id.ok());
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << id.status();
  }
  for (const std::string& bad :
       {pub[1] + pub[0], pub[0] + pub[0], ec_pub + pub[1], pub[0] + x448_pub}) {
    absl::StatusOr<PublicIdentity> p = PublicIdentity::FromPem(bad);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  }
  // Swapped halves of the API.
  EXPECT_EQ(Identity::FromPem(kFixturePublicPem).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PublicIdentity::FromPem(kFixturePrivatePem).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PemTest, RejectsEncryptedPrivateKeysWithoutPrompting) {
  const std::string encrypted =
      "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
  absl::StatusOr<Identity> id = Identity::FromPem(encrypted + encrypted);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(id.status().message(), "encrypted")) << id.status();
}

TEST(PemTest, RejectsMismatchedBeginEnd) {
  std::string pem = kFixturePrivatePem;
  const size_t end = pem.find("-----END PRIVATE KEY-----");
  pem.replace(end, 25, "-----END PUBLIC KEY-----");
  EXPECT_EQ(Identity::FromPem(pem).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PemTest, EveryTruncationIsRejected) {
  const std::string pem = kFixturePrivatePem;
  for (size_t len = 0; len + 1 < pem.size(); ++len) {
    absl::StatusOr<Identity> id = Identity::FromPem(pem.substr(0, len));
    ASSERT_FALSE(id.ok()) << "prefix of " << len << " bytes was accepted";
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
    ExpectNoEcho(id.status(), pem);
  }
  EXPECT_TRUE(Identity::FromPem(pem.substr(0, pem.size() - 1)).ok());  // only the final '\n'
  const std::string pub = kFixturePublicPem;
  for (size_t len = 0; len + 1 < pub.size(); ++len) {
    EXPECT_FALSE(PublicIdentity::FromPem(pub.substr(0, len)).ok()) << len;
  }
}

// Flipping any bit either still parses (the base64 carried a different, valid key) or fails
// with kInvalidArgument; it never crashes and never echoes the file.
TEST(PemTest, ByteFlipsNeverCrashOrLeak) {
  const std::string pem = kFixturePrivatePem;
  int rejected = 0;
  for (size_t i = 0; i < pem.size(); ++i) {
    for (char mask : {'\x01', '\x20', '\x80'}) {
      std::string bad = pem;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      absl::StatusOr<Identity> id = Identity::FromPem(bad);
      if (id.ok()) continue;
      ++rejected;
      EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << i;
      ExpectNoEcho(id.status(), pem);
    }
  }
  EXPECT_GT(rejected, 0);
  const std::string pub = kFixturePublicPem;
  for (size_t i = 0; i < pub.size(); ++i) {
    std::string bad = pub;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    absl::StatusOr<PublicIdentity> p = PublicIdentity::FromPem(bad);
    if (!p.ok()) {
      EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << i;
    }
  }
}

TEST(PemTest, FailuresLeaveOpenSslErrorQueueClean) {
  // Other modules (TLS) read OpenSSL's thread-local error queue; stale entries from our parse
  // failures would be misattributed to them.
  const std::string priv = kFixturePrivatePem;
  const std::string pub = kFixturePublicPem;
  std::string bad_priv = priv, bad_pub = pub;
  bad_priv[priv.rfind("-----END") - 10] = '*';  // second block does not decode
  bad_pub[pub.rfind("-----END") - 10] = '*';
  ERR_clear_error();
  EXPECT_FALSE(Identity::FromPem(bad_priv).ok());
  EXPECT_EQ(ERR_peek_error(), 0u);
  EXPECT_FALSE(PublicIdentity::FromPem(bad_pub).ok());
  EXPECT_EQ(ERR_peek_error(), 0u);
  // Errors queued before the call are not ours to drop.
  ERR_raise(ERR_LIB_USER, 42);
  const unsigned long before = ERR_peek_error();
  EXPECT_FALSE(Identity::FromPem(bad_priv).ok());
  EXPECT_EQ(ERR_peek_last_error(), before);
  ERR_clear_error();
}

// OpenSSL's reader moves past a block it cannot decode; the error must still name the block
// that is broken, and the key from the next block must not be taken in its place.
TEST(PemTest, UndecodableFirstBlockIsReportedAsSuch) {
  // '=' inside the base64 passes the layout check (a base64 character) but does not decode.
  std::string priv = kFixturePrivatePem;
  priv[30] = '=';
  absl::Status st = Identity::FromPem(priv).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(st.message(), "first block")) << st;
  EXPECT_FALSE(absl::StrContains(st.message(), "Ed25519")) << st;

  std::string pub = kFixturePublicPem;
  pub[29] = '=';
  st = PublicIdentity::FromPem(pub).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(st.message(), "first block")) << st;
}

TEST(PemTest, PrivateParseErrorsDoNotContainPemText) {
  const Identity id = Identity::Generate();
  const std::string good = AsString(id.ToPem());
  const std::vector<std::string> blocks = Blocks(good);
  std::string corrupt_second = good;
  corrupt_second[corrupt_second.rfind("-----END") - 10] = '!';
  std::string corrupt_first = good;
  corrupt_first[40] = '*';
  for (const std::string& bad :
       {blocks[0], blocks[1] + blocks[0], blocks[0] + blocks[0], good + blocks[0], corrupt_first,
        corrupt_second, good.substr(0, good.size() / 2)}) {
    absl::StatusOr<Identity> parsed = Identity::FromPem(bad);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    ExpectNoEcho(parsed.status(), good);
    EXPECT_FALSE(absl::StrContains(parsed.status().ToString(), "MC4CAQAw")) << parsed.status();
  }
}

// ---- Key wrap -------------------------------------------------------------------------------

class KeyWrapTest : public ::testing::Test {
 protected:
  const Identity recipient_ = Identity::Generate();
  const SecretBytes key_ = SecretBytes::Random(32);
  const Bytes context_ = Str("capsule 0123 policy-hash abcd");
};

TEST_F(KeyWrapTest, RoundTrip) {
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok()) << wrapped.status();
  EXPECT_EQ(wrapped->ciphertext.size(), key_.size() + 16);
  absl::StatusOr<SecretBytes> key = UnwrapKey(recipient_, *wrapped, context_);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_TRUE(ConstantTimeEquals(key->span(), key_.span()));
}

TEST_F(KeyWrapTest, RoundTripOtherSizesAndEmptyContext) {
  for (size_t n : {1, 16, 32, 64, 100}) {
    const SecretBytes key = SecretBytes::Random(n);
    absl::StatusOr<WrappedKey> wrapped = WrapKey(recipient_.public_identity().box_key, key, {});
    ASSERT_TRUE(wrapped.ok()) << n;
    EXPECT_EQ(wrapped->ciphertext.size(), n + 16);
    absl::StatusOr<SecretBytes> back = UnwrapKey(recipient_, *wrapped, {});
    ASSERT_TRUE(back.ok()) << n;
    EXPECT_TRUE(ConstantTimeEquals(back->span(), key.span()));
  }
}

TEST_F(KeyWrapTest, FreshEphemeralEachTime) {
  absl::StatusOr<WrappedKey> a = WrapKey(recipient_.public_identity().box_key, key_, context_);
  absl::StatusOr<WrappedKey> b = WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_NE(a->ephemeral, b->ephemeral);
  EXPECT_NE(a->ciphertext, b->ciphertext);
}

// Rebuilds the construction documented in keys.h from other primitives (OpenSSL's
// ChaCha20-Poly1305 instead of libsodium's) to pin the format.
TEST_F(KeyWrapTest, MatchesDocumentedConstruction) {
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok());
  absl::StatusOr<SecretBytes> dh = recipient_.Agree(wrapped->ephemeral);
  ASSERT_TRUE(dh.ok());
  Bytes salt(wrapped->ephemeral.begin(), wrapped->ephemeral.end());
  salt.insert(salt.end(), recipient_.public_identity().box_key.begin(),
              recipient_.public_identity().box_key.end());
  Bytes info = Str("bunker/v1 key wrap");
  info.push_back(0);
  info.insert(info.end(), context_.begin(), context_.end());
  Bytes k(32);
  ASSERT_TRUE(HkdfSha256(dh->span(), salt, info, absl::MakeSpan(k)).ok());
  absl::StatusOr<std::unique_ptr<Aead>> aead = Aead::Create(Suite::kChaCha20Poly1305, k);
  ASSERT_TRUE(aead.ok());
  Bytes plain(key_.size());
  ASSERT_TRUE(
      (*aead)->Open(Bytes(12, 0), context_, wrapped->ciphertext, absl::MakeSpan(plain)).ok());
  EXPECT_TRUE(ConstantTimeEquals(plain, key_.span()));
}

TEST_F(KeyWrapTest, WrongIdentityIsDataLoss) {
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok());
  const Identity other = Identity::Generate();
  absl::StatusOr<SecretBytes> key = UnwrapKey(other, *wrapped, context_);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(KeyWrapTest, WrongContextIsDataLoss) {
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok());
  ASSERT_FALSE(context_.empty());
  Bytes other = context_;
  other.at(other.size() - 1) ^= 1;  // at(): GCC 12 -O2 misreads back() on a copy as overflow
  Bytes longer = context_;
  longer.push_back(0);
  for (const Bytes& ctx : {other, longer, Bytes(), Bytes(context_.begin(), context_.end() - 1)}) {
    EXPECT_EQ(UnwrapKey(recipient_, *wrapped, ctx).status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST_F(KeyWrapTest, TamperedCiphertextIsDataLoss) {
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok());
  for (size_t i = 0; i < wrapped->ciphertext.size(); ++i) {
    WrappedKey bad = *wrapped;
    bad.ciphertext[i] ^= 0x01;
    EXPECT_EQ(UnwrapKey(recipient_, bad, context_).status().code(), absl::StatusCode::kDataLoss)
        << i;
  }
  WrappedKey shorter = *wrapped;
  shorter.ciphertext.pop_back();
  EXPECT_EQ(UnwrapKey(recipient_, shorter, context_).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(KeyWrapTest, TamperedEphemeralIsDataLoss) {
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok());
  for (size_t i = 0; i < wrapped->ephemeral.size(); ++i) {
    WrappedKey bad = *wrapped;
    bad.ephemeral[i] ^= 0x01;
    EXPECT_EQ(UnwrapKey(recipient_, bad, context_).status().code(), absl::StatusCode::kDataLoss)
        << i;
  }
  WrappedKey zero = *wrapped;
  zero.ephemeral.fill(0);  // low-order: the shared secret would be zero
  EXPECT_EQ(UnwrapKey(recipient_, zero, context_).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(KeyWrapTest, FailuresAreIndistinguishable) {
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok());
  WrappedKey bad_tag = *wrapped;
  bad_tag.ciphertext.back() ^= 1;
  WrappedKey zero_eph = *wrapped;
  zero_eph.ephemeral.fill(0);
  const absl::Status a = UnwrapKey(Identity::Generate(), *wrapped, context_).status();
  const absl::Status b = UnwrapKey(recipient_, bad_tag, context_).status();
  const absl::Status c = UnwrapKey(recipient_, zero_eph, context_).status();
  const absl::Status d = UnwrapKey(recipient_, *wrapped, Str("other")).status();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  EXPECT_EQ(a, d);
}

TEST_F(KeyWrapTest, RejectsMalformedInputs) {
  EXPECT_EQ(WrapKey(recipient_.public_identity().box_key, SecretBytes(), context_).status().code(),
            absl::StatusCode::kInvalidArgument);
  X25519PublicKey low_order{};
  EXPECT_EQ(WrapKey(low_order, key_, context_).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok());
  for (size_t n : {0, 1, 16}) {
    WrappedKey bad = *wrapped;
    bad.ciphertext.resize(n);
    EXPECT_EQ(UnwrapKey(recipient_, bad, context_).status().code(),
              absl::StatusCode::kInvalidArgument)
        << n;
  }
}

TEST_F(KeyWrapTest, SurvivesPemRoundTripOfRecipient) {
  absl::StatusOr<WrappedKey> wrapped =
      WrapKey(recipient_.public_identity().box_key, key_, context_);
  ASSERT_TRUE(wrapped.ok());
  absl::StatusOr<Identity> reloaded = Identity::FromPem(AsString(recipient_.ToPem()));
  ASSERT_TRUE(reloaded.ok());
  absl::StatusOr<SecretBytes> key = UnwrapKey(*reloaded, *wrapped, context_);
  ASSERT_TRUE(key.ok());
  EXPECT_TRUE(ConstantTimeEquals(key->span(), key_.span()));
}

}  // namespace
}  // namespace bunker::crypto

#include "crypto/aead.h"

#include <openssl/err.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "crypto/sha256.h"
#include "gtest/gtest.h"

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

Bytes Str(std::string_view s) { return Bytes(s.begin(), s.end()); }

bool AllZero(absl::Span<const uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

std::unique_ptr<Aead> MustCreate(Suite suite, absl::Span<const uint8_t> key) {
  absl::StatusOr<std::unique_ptr<Aead>> aead = Aead::Create(suite, key);
  EXPECT_TRUE(aead.ok()) << aead.status();
  return aead.ok() ? *std::move(aead) : nullptr;
}

// ---- Suite names ----------------------------------------------------------------------------

TEST(SuiteTest, NamesRoundTrip) {
  EXPECT_EQ(SuiteName(Suite::kAes256Gcm), "aes-256-gcm");
  EXPECT_EQ(SuiteName(Suite::kChaCha20Poly1305), "chacha20-poly1305");
  for (Suite s : {Suite::kAes256Gcm, Suite::kChaCha20Poly1305}) {
    absl::StatusOr<Suite> parsed = ParseSuite(SuiteName(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
}

TEST(SuiteTest, ParseRejectsOtherNamesWithoutEchoingThem) {
  for (std::string_view name : {"", "aes-128-gcm", "AES-256-GCM", "chacha20", "xyzzy-secret"}) {
    absl::StatusOr<Suite> parsed = ParseSuite(name);
    ASSERT_FALSE(parsed.ok()) << name;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(ParseSuite("xyzzy-secret").status().message().find("xyzzy"), std::string::npos);
}

TEST(SuiteTest, WireValuesAreFixed) {
  EXPECT_EQ(static_cast<uint16_t>(Suite::kAes256Gcm), 1);
  EXPECT_EQ(static_cast<uint16_t>(Suite::kChaCha20Poly1305), 2);
  EXPECT_FALSE(IsKnownSuite(0));
  EXPECT_TRUE(IsKnownSuite(1));
  EXPECT_TRUE(IsKnownSuite(2));
  EXPECT_FALSE(IsKnownSuite(3));
  EXPECT_FALSE(IsKnownSuite(0xffff));
}

// ---- Known answers --------------------------------------------------------------------------

struct Vector {
  const char* name;
  Suite suite;
  Bytes key, nonce, aad, plaintext, ciphertext_and_tag;
};

std::vector<Vector> KnownAnswers() {
  return {
      // McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16 (256-bit key).
      {"gcm_spec_test_case_16", Suite::kAes256Gcm,
       Hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"),
       Hex("cafebabefacedbaddecaf888"), Hex("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
       Hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
           "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"),
       Hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
           "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
           "76fc6ece0f4e1768cddf8853bb2d551b")},
      // Same document, test case 13: all-zero key and nonce, empty plaintext and AAD.
      {"gcm_spec_test_case_13",
       Suite::kAes256Gcm,
       Bytes(32, 0),
       Bytes(12, 0),
       {},
       {},
       Hex("530f8afbc74536b9a963b4f1c4cb738b")},
      // Test case 14: one zero block.
      {"gcm_spec_test_case_14",
       Suite::kAes256Gcm,
       Bytes(32, 0),
       Bytes(12, 0),
       {},
       Bytes(16, 0),
       Hex("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")},
      // RFC 8439 section 2.8.2.
      {"rfc8439_2_8_2", Suite::kChaCha20Poly1305,
       Hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"),
       Hex("070000004041424344454647"), Hex("50515253c0c1c2c3c4c5c6c7"),
       Str("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
           "the future, sunscreen would be it."),
       Hex("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
           "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
           "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
           "3ff4def08e4b7a9de576d26586cec64b6116"
           "1ae10b594f09e26a7e902ecbd0600691")},
  };
}

TEST(AeadKnownAnswerTest, SealProducesVector) {
  for (const Vector& v : KnownAnswers()) {
    SCOPED_TRACE(v.name);
    auto aead = MustCreate(v.suite, v.key);
    ASSERT_NE(aead, nullptr);
    EXPECT_EQ(aead->suite(), v.suite);
    Bytes out(v.plaintext.size() + kAeadTagSize);
    ASSERT_TRUE(aead->Seal(v.nonce, v.aad, v.plaintext, absl::MakeSpan(out)).ok());
    EXPECT_EQ(ToHex(out), ToHex(v.ciphertext_and_tag));
  }
}

TEST(AeadKnownAnswerTest, OpenRecoversVector) {
  for (const Vector& v : KnownAnswers()) {
    SCOPED_TRACE(v.name);
    auto aead = MustCreate(v.suite, v.key);
    ASSERT_NE(aead, nullptr);
    Bytes out(v.plaintext.size());
    ASSERT_TRUE(aead->Open(v.nonce, v.aad, v.ciphertext_and_tag, absl::MakeSpan(out)).ok());
    EXPECT_EQ(out, v.plaintext);
  }
}

// ---- Create ---------------------------------------------------------------------------------

TEST(AeadCreateTest, RejectsWrongKeySizes) {
  for (size_t n : {0, 16, 31, 33, 64}) {
    const Bytes key(n, 1);
    for (Suite s : {Suite::kAes256Gcm, Suite::kChaCha20Poly1305}) {
      EXPECT_EQ(Aead::Create(s, key).status().code(), absl::StatusCode::kInvalidArgument) << n;
    }
  }
}

TEST(AeadCreateTest, RejectsUnknownSuite) {
  const Bytes key(32, 1);
  EXPECT_EQ(Aead::Create(static_cast<Suite>(0), key).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Aead::Create(static_cast<Suite>(3), key).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AeadCreateTest, CopiesKey) {
  Bytes key(32, 9);
  auto aead = MustCreate(Suite::kAes256Gcm, key);
  const Bytes nonce(12, 0), pt = Str("hello");
  Bytes a(pt.size() + 16), b(pt.size() + 16);
  ASSERT_TRUE(aead->Seal(nonce, {}, pt, absl::MakeSpan(a)).ok());
  std::fill(key.begin(), key.end(), 0);  // the caller's buffer no longer matters
  ASSERT_TRUE(aead->Seal(nonce, {}, pt, absl::MakeSpan(b)).ok());
  EXPECT_EQ(a, b);
}

// ---- Behaviour common to both suites --------------------------------------------------------

class AeadSuiteTest : public ::testing::TestWithParam<Suite> {
 protected:
  void SetUp() override {
    key_ = Bytes(32);
    for (size_t i = 0; i < key_.size(); ++i) key_[i] = static_cast<uint8_t>(i * 7 + 3);
    aead_ = MustCreate(GetParam(), key_);
    ASSERT_NE(aead_, nullptr);
  }

  Bytes Seal(const Bytes& nonce, const Bytes& aad, const Bytes& pt) {
    Bytes out(pt.size() + kAeadTagSize);
    EXPECT_TRUE(aead_->Seal(nonce, aad, pt, absl::MakeSpan(out)).ok());
    return out;
  }

  Bytes key_;
  std::unique_ptr<Aead> aead_;
  const Bytes nonce_ = Hex("000102030405060708090a0b");
  const Bytes aad_ = Str("capsule header");
  const Bytes plaintext_ = Str("attack at dawn; bring the 33 keys");
};

INSTANTIATE_TEST_SUITE_P(BothSuites, AeadSuiteTest,
                         ::testing::Values(Suite::kAes256Gcm, Suite::kChaCha20Poly1305),
                         [](const ::testing::TestParamInfo<Suite>& info) {
                           return info.param == Suite::kAes256Gcm ? std::string("Aes256Gcm")
                                                                  : std::string("ChaCha20");
                         });

TEST_P(AeadSuiteTest, RoundTripsManySizes) {
  for (size_t n : {0, 1, 15, 16, 17, 63, 64, 65, 1000, 65536 + 3}) {
    Bytes pt(n);
    for (size_t i = 0; i < n; ++i) pt[i] = static_cast<uint8_t>(i * 31 + n);
    const Bytes ct = Seal(nonce_, aad_, pt);
    ASSERT_EQ(ct.size(), n + kAeadTagSize);
    if (n >= 16) {
      EXPECT_NE(Bytes(ct.begin(), ct.begin() + 16), Bytes(pt.begin(), pt.begin() + 16));
    }
    Bytes out(n, 0xee);
    ASSERT_TRUE(aead_->Open(nonce_, aad_, ct, absl::MakeSpan(out)).ok()) << n;
    EXPECT_EQ(out, pt) << n;
  }
}

TEST_P(AeadSuiteTest, EmptyAadAndEmptyPlaintext) {
  const Bytes ct = Seal(nonce_, {}, {});
  ASSERT_EQ(ct.size(), kAeadTagSize);
  EXPECT_TRUE(aead_->Open(nonce_, {}, ct, {}).ok());
  // The tag still authenticates nonce and (empty) AAD.
  EXPECT_EQ(aead_->Open(nonce_, Str("x"), ct, {}).code(), absl::StatusCode::kDataLoss);
}

TEST_P(AeadSuiteTest, SealIsDeterministicPerNonce) {
  EXPECT_EQ(Seal(nonce_, aad_, plaintext_), Seal(nonce_, aad_, plaintext_));
  Bytes other_nonce = nonce_;
  other_nonce[11] ^= 1;
  EXPECT_NE(Seal(nonce_, aad_, plaintext_), Seal(other_nonce, aad_, plaintext_));
}

TEST_P(AeadSuiteTest, SealInPlace) {
  const Bytes expected = Seal(nonce_, aad_, plaintext_);
  Bytes buf = plaintext_;
  buf.resize(plaintext_.size() + kAeadTagSize);
  const absl::Span<const uint8_t> pt(buf.data(), plaintext_.size());
  ASSERT_TRUE(aead_->Seal(nonce_, aad_, pt, absl::MakeSpan(buf)).ok());
  EXPECT_EQ(buf, expected);
}

TEST_P(AeadSuiteTest, OpenInPlace) {
  Bytes buf = Seal(nonce_, aad_, plaintext_);
  const absl::Span<uint8_t> out(buf.data(), plaintext_.size());
  ASSERT_TRUE(aead_->Open(nonce_, aad_, buf, out).ok());
  EXPECT_EQ(Bytes(out.begin(), out.end()), plaintext_);
}

TEST_P(AeadSuiteTest, OpenInPlaceFailureWipes) {
  Bytes buf = Seal(nonce_, aad_, plaintext_);
  buf.back() ^= 0x01;
  const absl::Span<uint8_t> out(buf.data(), plaintext_.size());
  EXPECT_EQ(aead_->Open(nonce_, aad_, buf, out).code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(AllZero(out));
}

// Every byte of ciphertext and tag, every nonce byte and every AAD byte is authenticated; a
// failure reports kDataLoss "authentication failed" and leaves no plaintext behind.
TEST_P(AeadSuiteTest, EveryTamperedByteIsDetected) {
  const Bytes ct = Seal(nonce_, aad_, plaintext_);
  auto expect_rejected = [&](const Bytes& nonce, const Bytes& aad, const Bytes& c,
                             const std::string& what) {
    Bytes out(c.size() - kAeadTagSize, 0xaa);
    const absl::Status st = aead_->Open(nonce, aad, c, absl::MakeSpan(out));
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << what;
    EXPECT_EQ(st.message(), "authentication failed") << what;
    EXPECT_TRUE(AllZero(out)) << what;
  };
  for (size_t i = 0; i < ct.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80}) {
      Bytes c = ct;
      c[i] ^= mask;
      expect_rejected(
          nonce_, aad_, c,
          (i < plaintext_.size() ? "ciphertext byte " : "tag byte ") + std::to_string(i));
    }
  }
  for (size_t i = 0; i < nonce_.size(); ++i) {
    Bytes n = nonce_;
    n[i] ^= 0x01;
    expect_rejected(n, aad_, ct, "nonce byte " + std::to_string(i));
  }
  for (size_t i = 0; i < aad_.size(); ++i) {
    Bytes a = aad_;
    a[i] ^= 0x01;
    expect_rejected(nonce_, a, ct, "aad byte " + std::to_string(i));
  }
  Bytes longer_aad = aad_;
  longer_aad.push_back(0);
  expect_rejected(nonce_, longer_aad, ct, "aad extended");
  expect_rejected(nonce_, Bytes(aad_.begin(), aad_.end() - 1), ct, "aad truncated");
}

TEST_P(AeadSuiteTest, FailureLeavesOpenSslErrorQueueClean) {
  ERR_clear_error();
  Bytes ct = Seal(nonce_, aad_, plaintext_);
  ct[0] ^= 1;
  Bytes out(plaintext_.size());
  EXPECT_EQ(aead_->Open(nonce_, aad_, ct, absl::MakeSpan(out)).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_P(AeadSuiteTest, TruncatedOrExtendedCiphertextIsDetected) {
  const Bytes ct = Seal(nonce_, aad_, plaintext_);
  for (size_t len = kAeadTagSize; len < ct.size(); ++len) {
    Bytes c(ct.begin(), ct.begin() + len);
    Bytes out(len - kAeadTagSize);
    EXPECT_EQ(aead_->Open(nonce_, aad_, c, absl::MakeSpan(out)).code(), absl::StatusCode::kDataLoss)
        << len;
  }
  Bytes c = ct;
  c.push_back(0);
  Bytes out(c.size() - kAeadTagSize);
  EXPECT_EQ(aead_->Open(nonce_, aad_, c, absl::MakeSpan(out)).code(), absl::StatusCode::kDataLoss);
}

TEST_P(AeadSuiteTest, WrongKeyOrSuiteIsDetected) {
  const Bytes ct = Seal(nonce_, aad_, plaintext_);
  Bytes other_key = key_;
  other_key[0] ^= 1;
  auto wrong_key = MustCreate(GetParam(), other_key);
  Bytes out(plaintext_.size());
  EXPECT_EQ(wrong_key->Open(nonce_, aad_, ct, absl::MakeSpan(out)).code(),
            absl::StatusCode::kDataLoss);
  const Suite other_suite =
      GetParam() == Suite::kAes256Gcm ? Suite::kChaCha20Poly1305 : Suite::kAes256Gcm;
  auto wrong_suite = MustCreate(other_suite, key_);
  EXPECT_EQ(wrong_suite->Open(nonce_, aad_, ct, absl::MakeSpan(out)).code(),
            absl::StatusCode::kDataLoss);
}

TEST_P(AeadSuiteTest, RejectsBadSizes) {
  const Bytes ct = Seal(nonce_, aad_, plaintext_);
  Bytes out_ok(plaintext_.size() + kAeadTagSize);
  for (size_t n : {0, 8, 11, 13, 16, 24}) {
    const Bytes nonce(n, 0);
    EXPECT_EQ(aead_->Seal(nonce, aad_, plaintext_, absl::MakeSpan(out_ok)).code(),
              absl::StatusCode::kInvalidArgument)
        << n;
    Bytes out(plaintext_.size());
    EXPECT_EQ(aead_->Open(nonce, aad_, ct, absl::MakeSpan(out)).code(),
              absl::StatusCode::kInvalidArgument)
        << n;
  }
  for (size_t n : {plaintext_.size(), plaintext_.size() + kAeadTagSize - 1,
                   plaintext_.size() + kAeadTagSize + 1}) {
    Bytes out(n);
    EXPECT_EQ(aead_->Seal(nonce_, aad_, plaintext_, absl::MakeSpan(out)).code(),
              absl::StatusCode::kInvalidArgument)
        << n;
  }
  Bytes small(kAeadTagSize - 1);
  EXPECT_EQ(aead_->Seal(nonce_, aad_, {}, absl::MakeSpan(small)).code(),
            absl::StatusCode::kInvalidArgument);
  for (size_t n : {plaintext_.size() - 1, plaintext_.size() + 1, ct.size()}) {
    Bytes out(n);
    EXPECT_EQ(aead_->Open(nonce_, aad_, ct, absl::MakeSpan(out)).code(),
              absl::StatusCode::kInvalidArgument)
        << n;
  }
  for (size_t n : {0, 1, 15}) {
    const Bytes short_ct(n, 0);
    EXPECT_EQ(aead_->Open(nonce_, aad_, short_ct, {}).code(), absl::StatusCode::kInvalidArgument)
        << n;
  }
}

TEST_P(AeadSuiteTest, RejectsPartiallyOverlappingBuffers) {
  Bytes buf(plaintext_.size() + kAeadTagSize + 8);
  std::copy(plaintext_.begin(), plaintext_.end(), buf.begin());
  const absl::Span<const uint8_t> pt(buf.data(), plaintext_.size());
  const absl::Span<uint8_t> shifted(buf.data() + 1, plaintext_.size() + kAeadTagSize);
  EXPECT_EQ(aead_->Seal(nonce_, aad_, pt, shifted).code(), absl::StatusCode::kInvalidArgument);

  Bytes sealed = Seal(nonce_, aad_, plaintext_);
  Bytes big(sealed.size() + 8);
  std::copy(sealed.begin(), sealed.end(), big.begin() + 4);
  const absl::Span<const uint8_t> ct(big.data() + 4, sealed.size());
  const absl::Span<uint8_t> behind(big.data(), plaintext_.size());
  EXPECT_EQ(aead_->Open(nonce_, aad_, ct, behind).code(), absl::StatusCode::kInvalidArgument);
}

// Many threads share one Aead; each must get exactly the single-threaded answer.
TEST_P(AeadSuiteTest, ConcurrentSealAndOpenOnOneInstance) {
  constexpr int kThreads = 6;
  constexpr int kPerThread = 150;
  auto nonce_for = [](int t, int i) {
    Bytes n(kAeadNonceSize, 0);
    n[0] = static_cast<uint8_t>(t);
    n[8] = static_cast<uint8_t>(i >> 8);
    n[9] = static_cast<uint8_t>(i);
    return n;
  };
  auto plaintext_for = [](int t, int i) {
    return Bytes(static_cast<size_t>(100 + i % 50), static_cast<uint8_t>(t * 17 + i));
  };
  std::vector<std::vector<Bytes>> expected(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      expected[t].push_back(Seal(nonce_for(t, i), aad_, plaintext_for(t, i)));
    }
  }
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  const Aead& shared = *aead_;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const Bytes pt = plaintext_for(t, i);
        Bytes ct(pt.size() + kAeadTagSize);
        if (!shared.Seal(nonce_for(t, i), aad_, pt, absl::MakeSpan(ct)).ok() ||
            ct != expected[t][i]) {
          ++failures[t];
          continue;
        }
        Bytes back(pt.size());
        if (!shared.Open(nonce_for(t, i), aad_, ct, absl::MakeSpan(back)).ok() || back != pt) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace bunker::crypto

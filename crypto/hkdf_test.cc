#include "crypto/hkdf.h"

#include <cstdint>
#include <string>
#include <vector>

#include "crypto/sha256.h"
#include "gtest/gtest.h"

namespace bunker::crypto {
namespace {

std::vector<uint8_t> Hex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::vector<uint8_t> Range(int first, int count) {
  std::vector<uint8_t> v;
  for (int i = 0; i < count; ++i) v.push_back(static_cast<uint8_t>(first + i));
  return v;
}

// RFC 5869 appendix A.1: basic test case with SHA-256.
TEST(HkdfSha256Test, Rfc5869TestCase1) {
  const std::vector<uint8_t> ikm(22, 0x0b);
  const std::vector<uint8_t> salt = Range(0x00, 13);
  const std::vector<uint8_t> info = Range(0xf0, 10);
  std::vector<uint8_t> okm(42);
  ASSERT_TRUE(HkdfSha256(ikm, salt, info, absl::MakeSpan(okm)).ok());
  EXPECT_EQ(ToHex(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

// RFC 5869 appendix A.2: longer inputs and outputs.
TEST(HkdfSha256Test, Rfc5869TestCase2) {
  const std::vector<uint8_t> ikm = Range(0x00, 80);
  const std::vector<uint8_t> salt = Range(0x60, 80);
  const std::vector<uint8_t> info = Range(0xb0, 80);
  std::vector<uint8_t> okm(82);
  ASSERT_TRUE(HkdfSha256(ikm, salt, info, absl::MakeSpan(okm)).ok());
  EXPECT_EQ(okm, Hex("b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
                     "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
                     "cc30c58179ec3e87c14c01d5c1f3434f1d87"));
}

// RFC 5869 appendix A.3: zero-length salt and info.
TEST(HkdfSha256Test, Rfc5869TestCase3EmptySaltAndInfo) {
  const std::vector<uint8_t> ikm(22, 0x0b);
  std::vector<uint8_t> okm(42);
  ASSERT_TRUE(HkdfSha256(ikm, {}, {}, absl::MakeSpan(okm)).ok());
  EXPECT_EQ(ToHex(okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

TEST(HkdfSha256Test, ShorterOutputIsPrefixOfLonger) {
  const std::vector<uint8_t> ikm(22, 0x0b);
  std::vector<uint8_t> long_okm(64), short_okm(1);
  ASSERT_TRUE(HkdfSha256(ikm, {}, {}, absl::MakeSpan(long_okm)).ok());
  ASSERT_TRUE(HkdfSha256(ikm, {}, {}, absl::MakeSpan(short_okm)).ok());
  EXPECT_EQ(short_okm[0], long_okm[0]);
}

TEST(HkdfSha256Test, OutputLengthLimits) {
  const std::vector<uint8_t> ikm(32, 1);
  std::vector<uint8_t> max(255 * 32);
  EXPECT_TRUE(HkdfSha256(ikm, {}, {}, absl::MakeSpan(max)).ok());

  std::vector<uint8_t> too_long(255 * 32 + 1);
  EXPECT_EQ(HkdfSha256(ikm, {}, {}, absl::MakeSpan(too_long)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HkdfSha256(ikm, {}, {}, {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(HkdfSha256Test, EveryInputMatters) {
  const std::vector<uint8_t> a = {1, 2, 3}, b = {1, 2, 4};
  auto derive = [](absl::Span<const uint8_t> ikm, absl::Span<const uint8_t> salt,
                   absl::Span<const uint8_t> info) {
    std::vector<uint8_t> out(32);
    EXPECT_TRUE(HkdfSha256(ikm, salt, info, absl::MakeSpan(out)).ok());
    return out;
  };
  const std::vector<uint8_t> base = derive(a, a, a);
  EXPECT_NE(base, derive(b, a, a));
  EXPECT_NE(base, derive(a, b, a));
  EXPECT_NE(base, derive(a, a, b));
  EXPECT_EQ(base, derive(a, a, a));
}

TEST(HkdfSha256Test, EmptyIkmIsAccepted) {
  // RFC 5869 puts no lower bound on IKM. Expected value from the definition (Python hmac):
  // PRK = HMAC(0^32, ""), OKM = HMAC(PRK, 0x01).
  std::vector<uint8_t> out(32);
  ASSERT_TRUE(HkdfSha256({}, {}, {}, absl::MakeSpan(out)).ok());
  EXPECT_EQ(ToHex(out), "eb70f01dede9afafa449eee1b1286504e1f62388b3f7dd4f956697b0e828fe18");
}

TEST(HkdfSha256Test, InfoUpTo32KiB) {
  // Key-wrap info carries caller context. OpenSSL 3 caps info at 32 KiB; beyond that the caller
  // gets kInvalidArgument, not an internal error.
  const std::vector<uint8_t> ikm(32, 7);
  std::vector<uint8_t> out(32);
  const std::vector<uint8_t> max_info(32 * 1024, 0x55);
  EXPECT_TRUE(HkdfSha256(ikm, {}, max_info, absl::MakeSpan(out)).ok());
  const std::vector<uint8_t> long_info(32 * 1024 + 1, 0x55);
  EXPECT_EQ(HkdfSha256(ikm, {}, long_info, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bunker::crypto

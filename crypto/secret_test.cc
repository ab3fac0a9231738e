#include "crypto/secret.h"

#include <algorithm>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace bunker::crypto {
namespace {

bool AllZero(absl::Span<const uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

TEST(SecretBytesTest, IsMoveOnly) {
  static_assert(!std::is_copy_constructible_v<SecretBytes>);
  static_assert(!std::is_copy_assignable_v<SecretBytes>);
  static_assert(std::is_nothrow_move_constructible_v<SecretBytes>);
  static_assert(std::is_nothrow_move_assignable_v<SecretBytes>);
}

TEST(SecretBytesTest, DefaultIsEmpty) {
  SecretBytes s;
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.size(), 0u);
  EXPECT_EQ(s.data(), nullptr);
}

TEST(SecretBytesTest, ZeroSizeAllocatesNothing) {
  SecretBytes s(0);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.data(), nullptr);
  EXPECT_TRUE(SecretBytes::Random(0).empty());
  EXPECT_TRUE(SecretBytes::CopyOf(std::string_view()).empty());
}

TEST(SecretBytesTest, SizedConstructorGivesZeroBytes) {
  // sodium_malloc pre-fills with 0xdb; the contract says zeros.
  SecretBytes s(100);
  ASSERT_EQ(s.size(), 100u);
  ASSERT_NE(s.data(), nullptr);
  EXPECT_TRUE(AllZero(s.span()));
}

TEST(SecretBytesTest, CopyOfCopiesBytes) {
  const std::vector<uint8_t> src = {1, 2, 3, 4, 5};
  SecretBytes a = SecretBytes::CopyOf(src);
  EXPECT_EQ(std::vector<uint8_t>(a.span().begin(), a.span().end()), src);
  EXPECT_NE(a.data(), src.data());

  SecretBytes b = SecretBytes::CopyOf(std::string_view("hi\0there", 8));
  ASSERT_EQ(b.size(), 8u);
  EXPECT_EQ(b.data()[0], 'h');
  EXPECT_EQ(b.data()[2], 0);
  EXPECT_EQ(b.data()[7], 'e');
}

TEST(SecretBytesTest, RandomIsFreshEachTime) {
  SecretBytes a = SecretBytes::Random(32);
  SecretBytes b = SecretBytes::Random(32);
  ASSERT_EQ(a.size(), 32u);
  ASSERT_EQ(b.size(), 32u);
  EXPECT_FALSE(AllZero(a.span()));  // 2^-256
  EXPECT_FALSE(ConstantTimeEquals(a.span(), b.span()));
}

TEST(SecretBytesTest, MoveConstructionTransfersOwnership) {
  SecretBytes a = SecretBytes::Random(16);
  const uint8_t* p = a.data();
  SecretBytes b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size(), 16u);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_EQ(a.data(), nullptr);
}

TEST(SecretBytesTest, MoveAssignmentReplacesAndEmptiesSource) {
  SecretBytes a = SecretBytes::CopyOf(std::string_view("aaaa"));
  SecretBytes b = SecretBytes::CopyOf(std::string_view("bbbbbbbb"));
  const uint8_t* pb = b.data();
  a = std::move(b);
  EXPECT_EQ(a.data(), pb);
  EXPECT_EQ(a.size(), 8u);
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)

  SecretBytes& alias = a;
  a = std::move(alias);  // self-move keeps the value
  EXPECT_EQ(a.size(), 8u);
  EXPECT_EQ(a.data()[0], 'b');
}

TEST(SecretBytesTest, CloneIsDeepCopy) {
  SecretBytes a = SecretBytes::Random(24);
  SecretBytes c = a.Clone();
  EXPECT_NE(c.data(), a.data());
  EXPECT_TRUE(ConstantTimeEquals(a.span(), c.span()));
  c.data()[0] ^= 1;
  EXPECT_FALSE(ConstantTimeEquals(a.span(), c.span()));
  EXPECT_TRUE(SecretBytes().Clone().empty());
}

TEST(SecretBytesTest, MutableSpanWritesThrough) {
  SecretBytes s(4);
  s.mutable_span()[3] = 7;
  EXPECT_EQ(s.data()[3], 7);
  EXPECT_EQ(s.span()[3], 7);
}

TEST(ConstantTimeEqualsTest, ComparesContentAndLength) {
  const std::vector<uint8_t> a = {1, 2, 3};
  const std::vector<uint8_t> b = {1, 2, 3};
  const std::vector<uint8_t> c = {1, 2, 4};
  const std::vector<uint8_t> prefix = {1, 2};
  EXPECT_TRUE(ConstantTimeEquals(a, b));
  EXPECT_FALSE(ConstantTimeEquals(a, c));
  EXPECT_FALSE(ConstantTimeEquals(a, prefix));
  EXPECT_FALSE(ConstantTimeEquals(prefix, a));
  EXPECT_TRUE(ConstantTimeEquals({}, {}));
  EXPECT_FALSE(ConstantTimeEquals(a, {}));
}

TEST(RandomBytesTest, FillsWholeBuffer) {
  std::vector<uint8_t> buf(64, 0);
  RandomBytes(absl::MakeSpan(buf));
  EXPECT_FALSE(AllZero(buf));
  // The last bytes are written too (a short fill would leave zeros with probability ~1).
  EXPECT_FALSE(AllZero(absl::MakeConstSpan(buf).subspan(48)));
  RandomBytes({});  // no-op, must not crash
}

TEST(WipeTest, ZeroesBytes) {
  std::vector<uint8_t> buf = {9, 9, 9, 9};
  Wipe(absl::MakeSpan(buf));
  EXPECT_TRUE(AllZero(buf));
  Wipe({});  // no-op
}

TEST(EnsureInitializedTest, IdempotentAndThreadSafe) {
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([] {
      EnsureInitialized();
      SecretBytes s = SecretBytes::Random(8);
      EXPECT_EQ(s.size(), 8u);
    });
  }
  for (auto& t : threads) t.join();
  EnsureInitialized();
}

}  // namespace
}  // namespace bunker::crypto

#include "capsule/format.h"

#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

TEST(FormatTest, HeaderRoundTripAndRejections) {
  auto h = EncodeHeader();
  EXPECT_TRUE(CheckHeader(h).ok());
  auto bad = h;
  bad[1] = 'X';
  EXPECT_TRUE(absl::IsDataLoss(CheckHeader(bad)));
  bad = h;
  bad[9] = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(CheckHeader(bad)));
  bad = h;
  bad[15] = 1;
  EXPECT_TRUE(absl::IsDataLoss(CheckHeader(bad)));
}

TEST(FormatTest, FooterRoundTripAndLimits) {
  auto f = EncodeFooter(4096);
  auto m = DecodeFooter(f);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, 4096u);
  EXPECT_TRUE(absl::IsDataLoss(DecodeFooter(EncodeFooter(0)).status()));
  EXPECT_TRUE(absl::IsDataLoss(DecodeFooter(EncodeFooter(12)).status()));
  EXPECT_TRUE(absl::IsDataLoss(DecodeFooter(EncodeFooter(kMaxManifestSize + 8)).status()));
  f[15] ^= 1;
  EXPECT_TRUE(absl::IsDataLoss(DecodeFooter(f).status()));
}

TEST(FormatTest, GeometryArithmetic) {
  EXPECT_EQ(ChunkCountFor(0, 4096), 1u);
  EXPECT_EQ(ChunkCountFor(1, 4096), 1u);
  EXPECT_EQ(ChunkCountFor(4096, 4096), 1u);
  EXPECT_EQ(ChunkCountFor(4097, 4096), 2u);
  Geometry g{4096, 3, 2 * 4096 + 10, 64};
  ASSERT_TRUE(g.Check().ok());
  EXPECT_EQ(g.PlainSize(0), 4096u);
  EXPECT_EQ(g.PlainSize(2), 10u);
  EXPECT_EQ(g.ChunkOffset(1), kHeaderSize + 4096 + kTagSize);
  EXPECT_EQ(g.TableOffset(), kHeaderSize + 2 * 4096 + 10 + 3 * kTagSize);
  EXPECT_EQ(g.FileSize(), g.TableOffset() + 3 * 32 + 64 + 64 + 16);
  EXPECT_TRUE(absl::IsDataLoss(Geometry({4096, 4, 2 * 4096 + 10, 64}).Check()));
  EXPECT_TRUE(absl::IsDataLoss(Geometry({100, 1, 10, 64}).Check()));
  EXPECT_TRUE(absl::IsDataLoss(Geometry({4096, 0, 0, 64}).Check()));
}

TEST(FormatTest, NonceLayout) {
  auto n = ChunkNonce(0x0102030405060708ull, true);
  const std::array<uint8_t, 12> expected = {0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1};
  EXPECT_EQ(n, expected);
  EXPECT_EQ(ChunkNonce(5, false)[11], 0);
}

}  // namespace
}  // namespace bunker::capsule

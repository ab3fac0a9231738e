#include "capsule/s3_store.h"

#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

Geometry Chunks(uint32_t chunk_size, uint64_t count) {
  Geometry g;
  g.chunk_size = chunk_size;
  g.chunk_count = count;
  return g;
}

TEST(S3StoreTest, PartsAreWholeChunksOfAtLeastTheLeastPartSize) {
  EXPECT_EQ(ChunksPerPart(Chunks(1 << 20, 1024), 8 << 20), 8u);
  EXPECT_EQ(ChunksPerPart(Chunks(64 << 10, 184), 5 << 20), 80u);
  // A chunk larger than the least part size: one chunk per part.
  EXPECT_EQ(ChunksPerPart(Chunks(16 << 20, 10), 8 << 20), 1u);
  // A size that does not divide: rounded up, so every part but the last is large enough.
  EXPECT_EQ(ChunksPerPart(Chunks(3 << 20, 100), 8 << 20), 3u);
}

TEST(S3StoreTest, NeverMoreThanTheMostParts) {
  const Geometry g = Chunks(64 << 10, 2000000);
  const uint64_t per = ChunksPerPart(g, 5 << 20);
  EXPECT_EQ(per, 200u);
  EXPECT_LE((g.chunk_count + per - 1) / per, kMaxParts);
}

TEST(S3StoreTest, RefusesAStoreWithoutAClient) {
  S3StoreOptions o;
  o.spool = "/nonexistent";
  o.daemon_id = "abc";
  o.bucket = "b";
  EXPECT_TRUE(absl::IsInvalidArgument(MakeS3Store(o).status()));  // no client
}

}  // namespace
}  // namespace bunker::capsule

#include "capsule/s3_store.h"

#include <atomic>
#include <string>

#include "capsule/s3_store_internal.h"
#include "capsule/s3_test_server.h"
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

// A prefix so long that the store's longest key (a marker) would pass S3's 1024 bytes is refused
// when the store is made, not at the first marker of the first receive.
TEST(S3StoreTest, APrefixLeavingNoRoomForItsKeysIsRefused) {
  auto client = s3::Client::Create(s3::FakeConfig("http://127.0.0.1:9"));
  ASSERT_TRUE(client.ok()) << client.status();
  std::shared_ptr<s3::Client> shared = std::move(*client);
  for (size_t size : {kMaxPrefixSize, kMaxPrefixSize + 1}) {
    S3StoreOptions o;
    o.client = shared;
    o.bucket = "bucket";
    o.prefix = std::string(size - 1, 'p') + "/";
    o.spool = "/nonexistent";
    o.daemon_id = std::string(64, 'd');
    auto store = MakeS3Store(std::move(o));
    EXPECT_EQ(store.ok(), size <= kMaxPrefixSize) << size << ": " << store.status();
  }
  // The longest key of a store at the limit is one S3 (and the client) accepts.
  const std::string longest = std::string(kMaxPrefixSize - 1, 'p') + "/.incoming/" +
                              std::string(64, 'd') + "/" + std::string(32, 'a') + ".upload";
  EXPECT_LE(longest.size(), 1024u);
  EXPECT_TRUE(s3::ParseUrl("s3://bucket/" + longest).ok());
}

// Regression (#12): another daemon's marker rewritten between the HEAD and the pinned GET (it
// moves from "pending" to its upload id) made recovery fail, so a daemon did not start while
// another received the same capsule. The marker is read again.
TEST(S3StoreTest, AMarkerRewrittenWhileReadIsReadAgain) {
  std::atomic<int> heads{0}, gets{0};
  s3::FakeServer server([&](const std::string& request) -> std::string {
    if (request.rfind("HEAD ", 0) == 0) {
      const int n = ++heads;
      const std::string size = n == 1 ? "24" : "22";
      return "HTTP/1.1 200 OK\r\nContent-Length: " + size + "\r\nETag: \"v" +
             std::to_string(n) + "\"\r\nConnection: close\r\n\r\n";
    }
    if (++gets == 1) {
      // Rewritten since the HEAD: the If-Match fails.
      return "HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
    return "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-21/22\r\n"
           "Content-Length: 22\r\nETag: \"v2\"\r\nConnection: close\r\n\r\n"
           "upload-7 0123456789abc";
  });
  auto client = s3::Client::Create(s3::FakeConfig(server.endpoint()));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::string> body =
      internal_s3_store::GetSmall(**client, {"bucket", "p/.incoming/d/x.upload"});
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "upload-7 0123456789abc");
  EXPECT_EQ(heads.load(), 2);
  EXPECT_EQ(gets.load(), 2);
}

// A server that gives no ETag cannot pin the read: a marker that grew meanwhile ("pending
// <boot>" rewritten to "<upload id> <boot>") was read in part, and is read again.
TEST(S3StoreTest, AnUnpinnedMarkerThatChangedSizeIsReadAgain) {
  const std::string pending = "pending 0123456789abcdef";              // 24 bytes
  const std::string named = "upload-7-long-id 0123456789abcdef";       // 33 bytes
  std::atomic<int> heads{0}, gets{0};
  s3::FakeServer server([&](const std::string& request) -> std::string {
    if (request.rfind("HEAD ", 0) == 0) {
      const size_t size = ++heads == 1 ? pending.size() : named.size();
      return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) +
             "\r\nConnection: close\r\n\r\n";
    }
    // The object is the named marker from the first GET on; the first read asked for 24 bytes.
    const std::string body = ++gets == 1 ? named.substr(0, pending.size()) : named;
    return "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-" +
           std::to_string(body.size() - 1) + "/" + std::to_string(named.size()) +
           "\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
  });
  auto client = s3::Client::Create(s3::FakeConfig(server.endpoint()));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::string> body =
      internal_s3_store::GetSmall(**client, {"bucket", "p/.incoming/d/x.upload"});
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, named);
  EXPECT_EQ(gets.load(), 2);
}

}  // namespace
}  // namespace bunker::capsule

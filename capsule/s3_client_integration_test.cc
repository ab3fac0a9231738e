// The S3 client against a real S3 server: Swift's s3api started by tests/tools/swift_s3.sh
// (run through tests/tools/with_swift_s3.sh, which exports AWS_ENDPOINT_URL and the keys).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "capsule/s3_client.h"
#include "gtest/gtest.h"

namespace bunker::capsule::s3 {
namespace {

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return v;
}

class S3ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("AWS_ENDPOINT_URL") == nullptr) {
      GTEST_SKIP() << "AWS_ENDPOINT_URL not set (run through tests/tools/with_swift_s3.sh)";
    }
    auto config = ConfigFromEnvironment("");
    ASSERT_TRUE(config.ok()) << config.status();
    config->max_attempts = 2;
    config->base_backoff_ms = 10;
    auto client = Client::Create(std::move(*config));
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    absl::Status created = client_->CreateBucket(kBucket);
    ASSERT_TRUE(created.ok()) << created;
    ASSERT_TRUE(client_->CreateBucket(kBucket).ok()) << "creating it again is fine";
  }

  Config ConfigWith(const std::string& endpoint, const std::string& secret) {
    Config c = ConfigFromEnvironment("").value();
    if (!endpoint.empty()) c.endpoint = endpoint;
    if (!secret.empty()) c.secret_access_key = crypto::SecretBytes::CopyOf(secret);
    c.max_attempts = 3;
    c.base_backoff_ms = 10;
    c.connect_timeout_ms = 1000;
    return c;
  }

  static constexpr char kBucket[] = "bunker-client-test";
  std::shared_ptr<Client> client_;
};

TEST_F(S3ClientTest, PutHeadRangedGetListDelete) {
  const Location at{kBucket, "dir/with space/d\xc3\xa9j\xc3\xa0+&=?.bin"};
  const std::vector<uint8_t> body = Pattern(300000, 1);
  ASSERT_TRUE(client_->Put(at, body, {{"bunker-capsule-id", "abc123"}}).ok());
  auto info = client_->Head(at);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, body.size());
  EXPECT_FALSE(info->etag.empty());
  EXPECT_EQ(info->metadata["bunker-capsule-id"], "abc123");

  std::vector<uint8_t> part(1000);
  ASSERT_TRUE(client_->GetRange(at, 123456, absl::MakeSpan(part)).ok());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), body.begin() + 123456));
  std::vector<uint8_t> tail(10);
  ASSERT_TRUE(client_->GetRange(at, body.size() - 10, absl::MakeSpan(tail), info->etag).ok());
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), body.end() - 10));
  std::vector<uint8_t> past(11);
  EXPECT_EQ(client_->GetRange(at, body.size() - 10, absl::MakeSpan(past)).code(),
            absl::StatusCode::kOutOfRange);

  ASSERT_TRUE(client_->Put(Location{kBucket, "dir/other"}, Pattern(5, 2)).ok());
  ASSERT_TRUE(client_->Put(Location{kBucket, "elsewhere"}, Pattern(5, 3)).ok());
  auto listed = client_->List(kBucket, "dir/");
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].key, "dir/other");
  EXPECT_EQ((*listed)[1].key, at.key);
  EXPECT_EQ((*listed)[1].size, body.size());

  auto object = OpenObject(client_, at);
  ASSERT_TRUE(object.ok()) << object.status();
  EXPECT_EQ((*object)->size(), body.size());
  std::vector<uint8_t> all(body.size());
  ASSERT_TRUE((*object)->ReadAt(0, absl::MakeSpan(all)).ok());
  EXPECT_EQ(all, body);
  std::vector<uint8_t> small(7);
  ASSERT_TRUE((*object)->ReadAt(262140, absl::MakeSpan(small)).ok()) << "across a cache block";
  EXPECT_TRUE(std::equal(small.begin(), small.end(), body.begin() + 262140));
  EXPECT_EQ((*object)->ReadAt(body.size() - 3, absl::MakeSpan(small)).code(),
            absl::StatusCode::kOutOfRange);

  ASSERT_TRUE(client_->Delete(at).ok());
  EXPECT_EQ(client_->Head(at).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(client_->Delete(at).ok()) << "deleting an absent key is not an error";
  EXPECT_EQ(OpenObject(client_, at).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(S3ClientTest, MultipartUploadListPartsCompleteAndAbort) {
  const Location at{kBucket, "mpu/object"};
  ASSERT_TRUE(client_->Delete(at).ok());
  auto id = client_->CreateMultipartUpload(at, {{"bunker-state", "partial"}});
  ASSERT_TRUE(id.ok()) << id.status();
  const std::vector<uint8_t> p1 = Pattern(5 << 20, 4);
  const std::vector<uint8_t> p2 = Pattern(12345, 5);
  auto e2 = client_->UploadPart(at, *id, 2, p2);
  ASSERT_TRUE(e2.ok()) << e2.status();
  auto e1 = client_->UploadPart(at, *id, 1, p1);
  ASSERT_TRUE(e1.ok()) << e1.status();
  auto uploads = client_->ListMultipartUploads(kBucket, "mpu/");
  ASSERT_TRUE(uploads.ok()) << uploads.status();
  ASSERT_EQ(uploads->size(), 1u);
  EXPECT_EQ((*uploads)[0].key, at.key);
  EXPECT_EQ((*uploads)[0].upload_id, *id);
  auto parts = client_->ListParts(at, *id);
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].number, 1);
  EXPECT_EQ((*parts)[0].etag, *e1);
  EXPECT_EQ((*parts)[0].size, p1.size());
  EXPECT_EQ((*parts)[1].number, 2);
  EXPECT_EQ(client_->Head(at).status().code(), absl::StatusCode::kNotFound)
      << "nothing under the final key before Complete";
  auto completed = client_->CompleteMultipartUpload(at, *id, *parts);
  ASSERT_TRUE(completed.ok()) << completed.status();
  auto info = client_->Head(at);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, p1.size() + p2.size());
  EXPECT_EQ(*completed, info->etag) << "the reply names the object HEAD sees";
  EXPECT_EQ(info->metadata["bunker-state"], "partial");
  // A read pinned to a multipart object's ETag, across the part boundary.
  auto object = OpenObject(client_, at);
  ASSERT_TRUE(object.ok()) << object.status();
  ASSERT_EQ((*object)->size(), p1.size() + p2.size());
  std::vector<uint8_t> across(50000 + p2.size());
  absl::Status read = (*object)->ReadAt(p1.size() - 50000, absl::MakeSpan(across));
  ASSERT_TRUE(read.ok()) << read;
  EXPECT_TRUE(std::equal(across.begin(), across.begin() + 50000, p1.end() - 50000));
  EXPECT_TRUE(std::equal(across.begin() + 50000, across.end(), p2.begin()));

  const Location other{kBucket, "mpu/abandoned"};
  auto id2 = client_->CreateMultipartUpload(other);
  ASSERT_TRUE(id2.ok());
  ASSERT_TRUE(client_->UploadPart(other, *id2, 1, p2).ok());
  ASSERT_TRUE(client_->AbortMultipartUpload(other, *id2).ok());
  EXPECT_EQ(client_->ListParts(other, *id2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->AbortMultipartUpload(other, *id2).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Head(other).status().code(), absl::StatusCode::kNotFound);
  uploads = client_->ListMultipartUploads(kBucket, "mpu/");
  ASSERT_TRUE(uploads.ok());
  EXPECT_TRUE(uploads->empty());
}

TEST_F(S3ClientTest, ObjectRewrittenWhileReadFails) {
  const Location at{kBucket, "pinned"};
  ASSERT_TRUE(client_->Put(at, Pattern(200000, 6)).ok());
  auto object = OpenObject(client_, at);
  ASSERT_TRUE(object.ok()) << object.status();
  std::vector<uint8_t> buf(100000);
  ASSERT_TRUE((*object)->ReadAt(0, absl::MakeSpan(buf)).ok());
  ASSERT_TRUE(client_->Put(at, Pattern(200000, 7)).ok());
  absl::Status s = (*object)->ReadAt(100000, absl::MakeSpan(buf));
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_NE(s.message().find("changed while reading"), std::string::npos) << s;
}

// A reader that announces its range (WillRead) and then streams it in chunk-sized reads from
// several threads is served by a few large ranged GETs, and no byte outside the range is fetched.
TEST_F(S3ClientTest, AnnouncedSequentialReadsUseLargeGets) {
  const Location at{kBucket, "readahead"};
  const std::vector<uint8_t> body = Pattern((size_t{20} << 20) + 12345, 8);
  ASSERT_TRUE(client_->Put(at, body).ok());
  auto object = OpenObject(client_, at);
  ASSERT_TRUE(object.ok()) << object.status();
  const uint64_t begin = 1000, end = body.size() - 777;
  const size_t piece = (size_t{1} << 20) + 16;  // a chunk and its tag
  const Stats before = client_->stats();
  (*object)->WillRead(begin, end);
  const uint64_t pieces = (end - begin + piece - 1) / piece;
  std::vector<uint8_t> got(end - begin);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = t; i < pieces; i += 4) {
        const uint64_t off = begin + i * piece;
        const size_t n = static_cast<size_t>(std::min<uint64_t>(piece, end - off));
        if (!(*object)->ReadAt(off, absl::MakeSpan(got.data() + (off - begin), n)).ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), body.begin() + begin));
  const Stats after = client_->stats();
  // 8 MiB windows: three of them (the last clipped), not one GET per piece.
  EXPECT_LE(after.get_requests - before.get_requests, 4u);
  EXPECT_EQ(after.bytes_received - before.bytes_received, end - begin);
}

// Without an announced range (the mount, one small file) a large read fetches exactly its bytes.
TEST_F(S3ClientTest, RandomReadsFetchOnlyWhatTheyAsk) {
  const Location at{kBucket, "random"};
  const std::vector<uint8_t> body = Pattern(size_t{12} << 20, 9);
  ASSERT_TRUE(client_->Put(at, body).ok());
  auto object = OpenObject(client_, at);
  ASSERT_TRUE(object.ok()) << object.status();
  const Stats before = client_->stats();
  std::vector<uint8_t> buf(size_t{100} << 10);
  for (uint64_t off : {uint64_t{5} << 20, uint64_t{1} << 20, uint64_t{11} << 20}) {
    ASSERT_TRUE((*object)->ReadAt(off, absl::MakeSpan(buf)).ok());
    EXPECT_TRUE(std::equal(buf.begin(), buf.end(), body.begin() + off));
  }
  const Stats after = client_->stats();
  EXPECT_EQ(after.get_requests - before.get_requests, 3u);
  EXPECT_EQ(after.bytes_received - before.bytes_received, 3 * buf.size());
}

// An object rewritten between windows fails the read (the windows are pinned like every GET).
TEST_F(S3ClientTest, ObjectRewrittenDuringReadAheadFails) {
  const Location at{kBucket, "pinned-windows"};
  ASSERT_TRUE(client_->Put(at, Pattern(size_t{40} << 20, 10)).ok());
  auto object = OpenObject(client_, at);
  ASSERT_TRUE(object.ok()) << object.status();
  (*object)->WillRead(0, size_t{40} << 20);
  std::vector<uint8_t> buf(size_t{1} << 20);
  ASSERT_TRUE((*object)->ReadAt(0, absl::MakeSpan(buf)).ok());
  ASSERT_TRUE(client_->Put(at, Pattern(size_t{40} << 20, 11)).ok());
  // Windows 0..2 were started by the first read and may hold the old bytes (the reader's
  // table check would refuse them); window 4 is fetched after the rewrite, pinned, and fails.
  absl::Status s = (*object)->ReadAt(uint64_t{36} << 20, absl::MakeSpan(buf));
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
}

TEST_F(S3ClientTest, WrongSecretIsPermissionDenied) {
  auto bad = Client::Create(ConfigWith("", "not-the-secret-xyzzy"));
  ASSERT_TRUE(bad.ok());
  const Location at{kBucket, "never"};
  absl::Status s = (*bad)->Put(at, Pattern(10, 8));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("access denied by"), std::string::npos) << s;
  EXPECT_NE(s.message().find("wrong key or secret"), std::string::npos) << s;
  EXPECT_EQ(s.message().find("xyzzy"), std::string::npos) << "the secret leaked: " << s;
  EXPECT_EQ((*bad)->Head(at).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(client_->Head(at).status().code(), absl::StatusCode::kNotFound) << "stored nothing";
  EXPECT_EQ((*bad)->stats().requests, 2u) << "a refusal is not retried";
}

TEST_F(S3ClientTest, UnknownBucketIsNotFound) {
  const Location at{"no-such-bucket-here", "key"};
  absl::Status s = client_->Head(at).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  auto listed = client_->List("no-such-bucket-here", "");
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kNotFound) << listed.status();
  EXPECT_NE(listed.status().message().find("no bucket no-such-bucket-here"), std::string::npos)
      << listed.status();
  s = client_->Put(at, Pattern(3, 9));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

TEST_F(S3ClientTest, EndpointDownIsUnavailableAfterRetries) {
  // A port nobody listens on: bind one, note it, close it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  auto down = Client::Create(
      ConfigWith("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), ""));
  ASSERT_TRUE(down.ok());
  absl::Status s = (*down)->Head(Location{kBucket, "x"}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("gave up after 3 attempts"), std::string::npos) << s;
  EXPECT_EQ((*down)->stats().requests, 3u);
}

}  // namespace
}  // namespace bunker::capsule::s3

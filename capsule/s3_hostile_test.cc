// The S3 client against a hostile endpoint: replies that lie about ranges and lengths, endless
// bodies and headers, a server that never answers or trickles, redirects to another host,
// tokens that would break the journals. Each test names the attack; every one must end with one
// clear error, nothing of the lying reply accepted, and no secret in the error's text.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "capsule/raw_http_server_for_testing.h"
#include "capsule/s3_client.h"
#include "capsule/s3_test_server.h"
#include "crypto/status_hint.h"
#include "gtest/gtest.h"

namespace bunker::capsule::s3 {
namespace {

using testing::RawServer;

constexpr char kSecret[] = "SECRETxSECRETxSECRET";
constexpr char kToken[] = "TOKENxTOKENxTOKEN";

Config HostileConfig(const std::string& endpoint) {
  Config c = FakeConfig(endpoint);
  c.secret_access_key = crypto::SecretBytes::CopyOf(std::string_view(kSecret));
  c.session_token = crypto::SecretBytes::CopyOf(std::string_view(kToken));
  c.stall_timeout_s = 1;
  c.attempt_timeout_s = 2;
  return c;
}

std::unique_ptr<Client> MakeClient(const std::string& endpoint) {
  auto c = Client::Create(HostileConfig(endpoint));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

// The error carries neither the secret nor the session token.
void ExpectNoSecret(const absl::Status& s) {
  const std::string text = s.ToString();
  EXPECT_EQ(text.find(kSecret), std::string::npos) << text;
  EXPECT_EQ(text.find(kToken), std::string::npos) << text;
}

const Location kObject{"bucket", "obj.capsule"};

std::string Head(int code, const std::string& headers) {
  return "HTTP/1.1 " + std::to_string(code) + " X\r\n" + headers + "Connection: close\r\n\r\n";
}

// GetRange(offset, n) against a server that always sends `reply`: the status, and whether the
// caller's buffer still holds only its sentinel bytes past what a status could vouch for.
absl::Status RangeAgainst(const std::string& reply, uint64_t offset, size_t n,
                          const std::string& pin = "") {
  FakeServer server(reply);
  auto client = MakeClient(server.endpoint());
  if (client == nullptr) return absl::InternalError("no client");
  std::vector<uint8_t> out(n, 0xEE);
  absl::Status s = client->GetRange(kObject, offset, absl::MakeSpan(out), pin);
  ExpectNoSecret(s);
  return s;
}

TEST(S3HostileTest, A200ToARangeNotAtTheStartIsRefused) {
  const absl::Status s = RangeAgainst(
      Head(200, "Content-Length: 10\r\nETag: \"v\"\r\n") + "0123456789", 5, 5, "\"v\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("malformed response"), std::string::npos) << s;
}

TEST(S3HostileTest, TheWholeObjectInsteadOfItsFirstBytesIsRefused) {
  // 200 (the whole object, 64 KiB) to a GET of its first 10 bytes: never more than asked.
  const absl::Status s = RangeAgainst(
      Head(200, "Content-Length: 65536\r\nETag: \"v\"\r\n") + std::string(65536, 'x'), 0, 10,
      "\"v\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST(S3HostileTest, AContentRangeOtherThanAskedIsRefused) {
  for (const char* range : {"bytes 1-10/100", "bytes 0-9/abc", "bytes 0-9/5", "bytes */100",
                            "bytes 0-9", "items 0-9/100", ""}) {
    const absl::Status s = RangeAgainst(
        Head(206, std::string("Content-Range: ") + range +
                      "\r\nContent-Length: 10\r\nETag: \"v\"\r\n") +
            "0123456789",
        0, 10, "\"v\"");
    EXPECT_FALSE(s.ok()) << range;
    EXPECT_TRUE(s.code() == absl::StatusCode::kUnavailable ||
                s.code() == absl::StatusCode::kOutOfRange)
        << range << ": " << s;
  }
}

TEST(S3HostileTest, ABodyShorterOrLongerThanTheRangeIsRefused) {
  // Content-Length agrees with the body but not with the range asked for.
  absl::Status s = RangeAgainst(
      Head(206, "Content-Range: bytes 0-9/100\r\nContent-Length: 5\r\nETag: \"v\"\r\n") + "01234",
      0, 10, "\"v\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  s = RangeAgainst(
      Head(206, "Content-Range: bytes 0-9/100\r\nContent-Length: 20\r\nETag: \"v\"\r\n") +
          "0123456789abcdefghij",
      0, 10, "\"v\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  // The connection cut before Content-Length bytes came.
  s = RangeAgainst(
      Head(206, "Content-Range: bytes 0-9/100\r\nContent-Length: 10\r\nETag: \"v\"\r\n") +
          "01234",
      0, 10, "\"v\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST(S3HostileTest, AnotherVersionIsNeverMixedIn) {
  const absl::Status s = RangeAgainst(
      Head(206, "Content-Range: bytes 0-9/100\r\nContent-Length: 10\r\nETag: \"w\"\r\n") +
          "0123456789",
      0, 10, "\"v\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
}

// An endless body (an error body of gigabytes, an endless chunked range, a listing of hundreds
// of megabytes): the client stops reading at its bound and fails; the server sees the
// connection closed long before it is done.
TEST(S3HostileTest, EndlessBodiesAreCutAtTheirBound) {
  struct Case {
    const char* what;
    std::string head;
    std::function<absl::Status(Client&)> call;
  };
  const std::vector<Case> cases = {
      {"a 10 GiB error body", Head(500, "Content-Length: 10737418240\r\n"),
       [](Client& c) { return c.Head(kObject).status(); }},
      {"an endless chunked error body", Head(503, "Transfer-Encoding: chunked\r\n"),
       [](Client& c) { return c.Delete(kObject); }},
      {"an endless range", Head(206, "Content-Range: bytes 0-9/100\r\nETag: \"v\"\r\n"
                                     "Transfer-Encoding: chunked\r\n"),
       [](Client& c) {
         std::vector<uint8_t> out(10);
         return c.GetRange(kObject, 0, absl::MakeSpan(out), "\"v\"");
       }},
      {"a listing of gigabytes", Head(200, "Transfer-Encoding: chunked\r\n"),
       [](Client& c) { return c.ListParts(kObject, "up").status(); }},
  };
  for (const Case& test : cases) {
    std::atomic<uint64_t> sent{0};
    const bool chunked = test.head.find("chunked") != std::string::npos;
    RawServer server([&](int fd, const std::string&, RawServer& self) {
      if (!self.Send(fd, test.head)) return;
      const std::string piece(64 << 10, 'x');
      char size_line[32];
      std::snprintf(size_line, sizeof(size_line), "%zx\r\n", piece.size());
      const std::string chunk = chunked ? size_line + piece + "\r\n" : piece;
      while (sent < (uint64_t{1} << 30) && self.Send(fd, chunk)) sent += piece.size();
    });
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    const absl::Status s = test.call(*client);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << test.what << ": " << s;
    ExpectNoSecret(s);
    EXPECT_LT(sent.load(), uint64_t{64} << 20) << test.what << ": the client kept reading";
  }
}

// Headers of megabytes: many distinct ones, one huge one, the same one repeated.
TEST(S3HostileTest, HeadersOfMegabytesAreRefused) {
  const std::vector<std::function<std::string(int)>> lines = {
      [](int i) { return "X-Junk-" + std::to_string(i) + ": " + std::string(1000, 'j') + "\r\n"; },
      [](int) { return "X-Junk: " + std::string(1000, 'j') + "\r\n"; },
      [](int i) { return i == 0 ? "X-Huge: " : std::string(1000, 'h'); },
  };
  for (size_t k = 0; k < lines.size(); ++k) {
    std::atomic<uint64_t> sent{0};
    RawServer server([&](int fd, const std::string&, RawServer& self) {
      if (!self.Send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n")) return;
      for (int i = 0; sent < (uint64_t{64} << 20); ++i) {
        const std::string line = lines[k](i);
        if (!self.Send(fd, line)) return;
        sent += line.size();
      }
    });
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    const absl::Status s = client->Head(kObject).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << k << ": " << s;
    EXPECT_LT(sent.load(), uint64_t{8} << 20) << k << ": the client kept reading headers";
    ExpectNoSecret(s);
  }
}

// A server that accepts and never answers, or trickles: every call ends (the stall limit, or the
// attempt's deadline for a trickle just fast enough to pass the stall limit).
TEST(S3HostileTest, ASilentOrTricklingEndpointEnds) {
  {
    RawServer server([](int fd, const std::string&, RawServer& self) { self.Hold(fd); });
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    const absl::Status s = client->Head(kObject).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    ExpectNoSecret(s);
  }
  {
    // 1 byte every 100 ms of an endless header (10 B/s).
    RawServer server([](int fd, const std::string&, RawServer& self) {
      if (!self.Send(fd, "HTTP/1.1 200 OK\r\nX-Slow: ")) return;
      while (self.Send(fd, "s")) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    });
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    std::vector<uint8_t> out(10);
    const absl::Status s = client->GetRange(kObject, 0, absl::MakeSpan(out), "\"v\"");
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  }
  {
    // 4 KiB every 100 ms (40 KiB/s: above the stall limit) of an endless listing: it would
    // take 100 s to reach the 4 MiB bound of a reply; the attempt's deadline (2 s here) ends it.
    RawServer server([](int fd, const std::string&, RawServer& self) {
      if (!self.Send(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")) return;
      const std::string chunk = "1000\r\n" + std::string(4096, ' ') + "\r\n";
      while (self.Send(fd, chunk)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    });
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    const absl::Status s = client->List("bucket", "").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_NE(s.message().find("Timeout"), std::string::npos) << s;
  }
}

// A part upload the endpoint holds ends soon once it is cancelled from another thread (a
// daemon dropping the capsule, or stopping), instead of after its stall timeout and retries:
// the connection is given up, and no other attempt is made.
TEST(S3HostileTest, ACancelledUploadEndsWithoutWaitingForTheEndpoint) {
  std::atomic<bool> held{false};
  std::atomic<bool> dropped{false};
  RawServer server([&](int fd, const std::string&, RawServer& self) {
    held = true;
    self.Hold(fd);
    if (!self.stopping()) dropped = true;
  });
  Config c = FakeConfig(server.endpoint());
  c.max_attempts = 5;  // a stall (30 s) and four retries, were it not cancelled
  auto client = Client::Create(std::move(c));
  ASSERT_TRUE(client.ok()) << client.status();
  Cancellation cancel;
  std::thread canceller([&] {
    while (!held) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    cancel.Cancel();
  });
  const std::vector<uint8_t> part(64 << 10, 7);
  absl::StatusOr<std::string> etag =
      (*client)->UploadPart(kObject, "upload-1", 1, part, &cancel);
  canceller.join();
  EXPECT_EQ(etag.status().code(), absl::StatusCode::kCancelled) << etag.status();
  for (int i = 0; i < 10000 && !dropped; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(dropped) << "the client kept the held connection";
  EXPECT_EQ(server.connections(), 1);
  // Once cancelled, a call fails at once, sending nothing.
  EXPECT_EQ((*client)->UploadPart(kObject, "upload-1", 2, part, &cancel).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(server.connections(), 1);
}

// A cancellation also cuts the backoff between attempts short (a Retry-After of minutes).
TEST(S3HostileTest, ACancelledBackoffEndsWithoutAnotherAttempt) {
  std::atomic<bool> answered{false};
  RawServer server([&](int fd, const std::string&, RawServer& self) {
    self.Send(fd, Head(503, "Retry-After: 600\r\nContent-Length: 0\r\n"));
    answered = true;
  });
  Config c = FakeConfig(server.endpoint());
  c.max_attempts = 3;
  c.max_retry_after_ms = 600000;
  auto client = Client::Create(std::move(c));
  ASSERT_TRUE(client.ok()) << client.status();
  Cancellation cancel;
  std::thread canceller([&] {
    while (!answered) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    cancel.Cancel();
  });
  const std::vector<uint8_t> part(16, 7);
  absl::StatusOr<std::string> etag =
      (*client)->UploadPart(kObject, "upload-1", 1, part, &cancel);
  canceller.join();
  EXPECT_EQ(etag.status().code(), absl::StatusCode::kCancelled) << etag.status();
  EXPECT_EQ(server.connections(), 1);
}

// Regression: an interrupt (Ctrl-C, SIGTERM) or a daemon's stopping did nothing while a read of
// an object waited on a server trickling its bytes (10 B/s here: under the stall limit, so the
// read would end only after the 30 s stall timeout, as kUnavailable). With a cancellation, the
// read ends soon with kCancelled: a read from a read-ahead window (the reader waits for the
// window) and a read straight from one GET.
TEST(S3HostileTest, AnInterruptEndsATricklingRead) {
  constexpr uint64_t kSize = uint64_t{4} << 20;
  std::atomic<bool> trickling{false};
  RawServer server([&](int fd, const std::string& request, RawServer& self) {
    if (request.rfind("HEAD ", 0) == 0) {
      self.Send(fd, Head(200, "Content-Length: " + std::to_string(kSize) + "\r\nETag: \"v\"\r\n"));
      return;
    }
    uint64_t first = 0, last = 0;
    const size_t at = request.find("Range: bytes=");
    if (at == std::string::npos ||
        std::sscanf(request.c_str() + at, "Range: bytes=%" SCNu64 "-%" SCNu64, &first, &last) != 2) {
      return;
    }
    if (!self.Send(fd, Head(206, "Content-Range: bytes " + std::to_string(first) + "-" +
                                     std::to_string(last) + "/" + std::to_string(kSize) +
                                     "\r\nContent-Length: " + std::to_string(last - first + 1) +
                                     "\r\nETag: \"v\"\r\n"))) {
      return;
    }
    trickling = true;
    while (self.Send(fd, "x")) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  });
  for (bool announced : {true, false}) {
    SCOPED_TRACE(announced ? "from a read-ahead window" : "straight from one GET");
    trickling = false;
    auto client = Client::Create(FakeConfig(server.endpoint()));  // one attempt, 30 s stall limit
    ASSERT_TRUE(client.ok()) << client.status();
    std::atomic<bool> interrupted{false};
    auto file = OpenObject(std::shared_ptr<Client>(std::move(*client)), kObject,
                           [&] { return interrupted.load(); });
    ASSERT_TRUE(file.ok()) << file.status();
    if (announced) (*file)->WillRead(0, kSize);
    std::thread interrupter([&] {
      while (!trickling) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      interrupted = true;
    });
    std::vector<uint8_t> out(size_t{1} << 20);
    const absl::Status s = (*file)->ReadAt(0, absl::MakeSpan(out));
    interrupter.join();
    EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
    ExpectNoSecret(s);
  }
}

// Redirects are never followed: nothing reaches the other host (so no signed request, no key id
// or token), whatever the Location's scheme; the error says what happened.
TEST(S3HostileTest, RedirectsAreNotFollowed) {
  RawServer other([](int fd, const std::string&, RawServer& self) {
    self.Send(fd, Head(200, "Content-Length: 0\r\nETag: \"v\"\r\n"));
  });
  for (const std::string& location :
       {"http://127.0.0.1:" + std::to_string(other.port()) + "/bucket/obj.capsule",
        std::string("file:///etc/passwd"), std::string("/elsewhere/obj.capsule")}) {
    for (int code : {301, 302, 307, 308}) {
      FakeServer server(Head(code, "Location: " + location + "\r\nContent-Length: 0\r\n"));
      auto client = MakeClient(server.endpoint());
      ASSERT_NE(client, nullptr);
      const absl::Status s = client->Head(kObject).status();
      EXPECT_FALSE(s.ok()) << code << " " << location;
      EXPECT_NE(s.message().find("redirect"), std::string::npos) << s;
      EXPECT_EQ(s.message().find("passwd"), std::string::npos) << "the Location is not quoted";
      ExpectNoSecret(s);
    }
  }
  EXPECT_EQ(other.connections(), 0) << "a redirect was followed";
}

// A key that is not one the client would accept in an s3:// URL (dot segments, which a URL
// library would resolve into another bucket's path; control characters; over 1024 bytes) never
// reaches the wire, whoever built it (a listing, a prefix): kInvalidArgument, no request.
TEST(S3HostileTest, KeysThatWouldEscapeTheirBucketNeverLeave) {
  RawServer server([](int fd, const std::string&, RawServer& self) {
    self.Send(fd, Head(200, "Content-Length: 0\r\nETag: \"v\"\r\n"));
  });
  auto client = MakeClient(server.endpoint());
  ASSERT_NE(client, nullptr);
  for (const std::string& key :
       {std::string("a/../../other-bucket/x"), std::string("../x"), std::string("a/./b"),
        std::string("a\r\nX-Injected: 1"), std::string("a//b"), std::string(1100, 'k')}) {
    EXPECT_EQ(client->Head(Location{"bucket", key}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << key;
    EXPECT_EQ(client->Delete(Location{"bucket", key}).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(client->Head(Location{"Bad_Bucket", "x"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server.connections(), 0);
  // "%2F" is a key character like any other: sent encoded, never decoded into a '/'.
  FakeServer echo(Head(200, "Content-Length: 0\r\nETag: \"v\"\r\n"));
  auto plain = MakeClient(echo.endpoint());
  ASSERT_NE(plain, nullptr);
  ASSERT_TRUE(plain->Head(Location{"bucket", "a%2F..%2Fb"}).ok());
  EXPECT_NE(echo.last_request().find("HEAD /bucket/a%252F..%252Fb HTTP/1.1"), std::string::npos)
      << echo.last_request();
}

// Tokens the server hands back and the store writes into its journals, markers and requests
// (ETags, upload ids) are printable and without spaces: a newline would forge journal lines.
TEST(S3HostileTest, TokensThatWouldBreakTheJournalsAreRefused) {
  {
    FakeServer server(Head(200, "Content-Length: 0\r\nETag: \"a b\"\r\n"));
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    std::vector<uint8_t> body(10);
    EXPECT_EQ(client->UploadPart(kObject, "up", 1, body).status().code(),
              absl::StatusCode::kUnavailable);
    EXPECT_EQ(client->Head(kObject).status().code(), absl::StatusCode::kUnavailable);
  }
  {
    FakeServer server(Head(200, "Content-Length: 92\r\n") +
                      "<InitiateMultipartUploadResult><UploadId>x 1\npart 1 \"e\""
                      "</UploadId></InitiateMultipartUploadResult>");
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    EXPECT_EQ(client->CreateMultipartUpload(kObject).status().code(),
              absl::StatusCode::kUnavailable);
  }
  {
    const std::string xml =
        "<ListPartsResult><Part><PartNumber>1</PartNumber><ETag>\"e\nf\"</ETag><Size>5</Size>"
        "</Part></ListPartsResult>";
    FakeServer server(Head(200, "Content-Length: " + std::to_string(xml.size()) + "\r\n") + xml);
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    EXPECT_EQ(client->ListParts(kObject, "up").status().code(), absl::StatusCode::kUnavailable);
  }
  {
    const std::string xml =
        "<CompleteMultipartUploadResult><ETag>\"e\tf\"</ETag></CompleteMultipartUploadResult>";
    FakeServer server(Head(200, "Content-Length: " + std::to_string(xml.size()) + "\r\n") + xml);
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    EXPECT_EQ(client->CompleteMultipartUpload(kObject, "up", {{1, "\"e\"", 5}}).status().code(),
              absl::StatusCode::kUnavailable);
  }
}

// A session token or key id with a line break would add headers of its own to every request.
TEST(S3HostileTest, CredentialsThatWouldInjectHeadersAreRefused) {
  Config token = HostileConfig("http://127.0.0.1:9");
  token.session_token = crypto::SecretBytes::CopyOf(std::string_view("tokQQ\r\nX-Evil: 1"));
  auto c = Client::Create(std::move(token));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message().find("QQ"), std::string::npos) << c.status();
  Config id = HostileConfig("http://127.0.0.1:9");
  id.access_key_id = "AKID\r\nX-Evil: 1";
  EXPECT_EQ(Client::Create(std::move(id)).status().code(), absl::StatusCode::kInvalidArgument);
}

// A listing that pages forever, each page advancing: cut at kMaxListEntries entries instead of
// growing until memory runs out.
TEST(S3HostileTest, AListingThatNeverEndsIsCut) {
  std::atomic<int> pages{0};
  RawServer server([&](int fd, const std::string&, RawServer& self) {
    const int page = pages++;
    std::string xml = "<ListBucketResult><IsTruncated>true</IsTruncated>";
    char key[32];
    for (int i = 0; i < 30000; ++i) {
      std::snprintf(key, sizeof(key), "k%06d%06d", page, i);
      xml += std::string("<Contents><Key>") + key + "</Key><Size>1</Size></Contents>";
    }
    xml += "</ListBucketResult>";
    self.Send(fd, Head(200, "Content-Length: " + std::to_string(xml.size()) + "\r\n") + xml);
  });
  auto client = MakeClient(server.endpoint());
  ASSERT_NE(client, nullptr);
  const absl::Status s = client->List("bucket", "").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("1,000,000"), std::string::npos) << s;
  EXPECT_LE(pages.load(), 35);
}

// The server's error code reaches the error line only if it is letters and digits: no terminal
// escapes, no text of the server's choosing in logs.
TEST(S3HostileTest, AnErrorCodeWithEscapesIsNotQuoted) {
  const std::string xml = "<Error><Code>\x1b[2J\x1b]0;pwned\x07Evil</Code></Error>";
  FakeServer server(Head(400, "Content-Length: " + std::to_string(xml.size()) + "\r\n") + xml);
  auto client = MakeClient(server.endpoint());
  ASSERT_NE(client, nullptr);
  const absl::Status s = client->Delete(kObject);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message().find('\x1b'), std::string::npos) << s;
  EXPECT_EQ(s.message().find("pwned"), std::string::npos) << s;
  EXPECT_NE(s.message().find("HTTP 400"), std::string::npos) << s;
}

// 501 or a NotImplemented code (a feature the store lacks) is named as such, asked once: it is
// not "unavailable", and retrying cannot help. Before: a 501 was reported as "unavailable"
// (exit 9), and a NotImplemented code under another 5xx was retried, then reported so too.
TEST(S3HostileTest, NotImplementedIsNamedAndNotRetried) {
  const std::string xml = "<Error><Code>NotImplemented</Code></Error>";
  for (int code : {501, 500, 503}) {
    RawServer server([&xml, code](int fd, const std::string&, RawServer& self) {
      self.Send(fd, Head(code, "Content-Length: " + std::to_string(xml.size()) + "\r\n") + xml);
    });
    auto client = MakeClient(server.endpoint());
    ASSERT_NE(client, nullptr);
    const absl::Status s = client->Delete(kObject);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << code << ": " << s;
    EXPECT_NE(s.message().find("does not implement"), std::string::npos) << s;
    EXPECT_NE(s.message().find("HTTP " + std::to_string(code)), std::string::npos) << s;
    EXPECT_EQ(server.connections(), 1) << code << " was retried";
    ExpectNoSecret(s);
  }
}

// An explicit AccessDenied for one object is that object's refusal: it does not suggest a wrong
// key or secret (which are SignatureDoesNotMatch or InvalidAccessKeyId), and it names the object.
TEST(S3HostileTest, AnObjectsAccessDeniedIsNotBlamedOnTheCredentials) {
  const std::string xml = "<Error><Code>AccessDenied</Code></Error>";
  const absl::Status s = RangeAgainst(
      Head(403, "Content-Length: " + std::to_string(xml.size()) + "\r\n") + xml, 0, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("access to s3://bucket/obj.capsule denied"), std::string::npos) << s;
  EXPECT_EQ(s.message().find("wrong key or secret"), std::string::npos) << s;
  const std::string bad = "<Error><Code>SignatureDoesNotMatch</Code></Error>";
  const absl::Status t = RangeAgainst(
      Head(403, "Content-Length: " + std::to_string(bad.size()) + "\r\n") + bad, 0, 4);
  EXPECT_NE(t.message().find("wrong key or secret"), std::string::npos) << t;
}

// A request signed for another region than the server's (AuthorizationHeaderMalformed, as
// Swift and AWS answer) says where to look; the refusal alone named no region.
TEST(S3HostileTest, ARegionMismatchPointsAtTheRegion) {
  const std::string xml =
      "<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'eu-west-1' is "
      "wrong</Message></Error>";
  RawServer server([&xml](int fd, const std::string&, RawServer& self) {
    self.Send(fd, Head(400, "Content-Length: " + std::to_string(xml.size()) + "\r\n") + xml);
  });
  auto client = MakeClient(server.endpoint());
  ASSERT_NE(client, nullptr);
  const absl::Status s = client->Delete(kObject);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("(AuthorizationHeaderMalformed)"), std::string::npos) << s;
  EXPECT_NE(bunker::HintOf(s).find("AWS_REGION"), std::string::npos) << bunker::HintOf(s);
  ExpectNoSecret(s);
}

// A profile missing from a credentials file: kNotFound naming the profile and the file, never
// any of its secrets.
TEST(S3HostileTest, AMissingProfileIsNamedWithoutItsNeighboursSecrets) {
  char dir_template[] = "/tmp/s3-hostile-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string path = std::string(dir_template) + "/credentials";
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fprintf(f, "[default]\naws_access_key_id = AKID\naws_secret_access_key = %s\n", kSecret);
  std::fclose(f);
  ::chmod(path.c_str(), 0600);
  ::setenv("AWS_PROFILE", "absent", 1);
  absl::StatusOr<Config> c = ConfigFromEnvironment(path);
  ::unsetenv("AWS_PROFILE");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound) << c.status();
  EXPECT_NE(c.status().message().find("[absent]"), std::string::npos) << c.status();
  ExpectNoSecret(c.status());
  ::chmod(path.c_str(), 0640);
  c = ConfigFromEnvironment(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied) << c.status();
  ExpectNoSecret(c.status());
  ::unlink(path.c_str());
  ::rmdir(dir_template);
}

}  // namespace
}  // namespace bunker::capsule::s3

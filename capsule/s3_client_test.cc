// Unit tests of the S3 client's parsers: URLs, credentials files, hostile XML. The client against
// a real server is s3_client_integration_test.cc.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "capsule/capsule_test_util.h"
#include "capsule/s3_client.h"
#include "capsule/s3_test_server.h"
#include "capsule/s3_xml.h"
#include "gtest/gtest.h"

namespace bunker::capsule::s3 {
namespace {

TEST(S3UrlTest, ParsesBucketAndKey) {
  auto at = ParseUrl("s3://my-bucket/a/b/c.capsule");
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(at->bucket, "my-bucket");
  EXPECT_EQ(at->key, "a/b/c.capsule");
  auto prefix = ParseUrl("s3://my-bucket/site/");
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  EXPECT_EQ(prefix->key, "site/");
  auto bare = ParseUrl("s3://my-bucket");
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->key, "");
  auto unicode = ParseUrl("s3://my-bucket/d\xc3\xa9j\xc3\xa0 vu.capsule");
  ASSERT_TRUE(unicode.ok()) << unicode.status();
  EXPECT_EQ(ToUrl(*at), "s3://my-bucket/a/b/c.capsule");
  EXPECT_TRUE(IsS3Url("s3://x"));
  EXPECT_FALSE(IsS3Url("./s3://x"));
  EXPECT_FALSE(IsS3Url("S3://x"));
}

TEST(S3UrlTest, RefusesBadBucketsAndKeys) {
  for (const char* bad : {"s3://", "s3:///key", "s3://ab/key", "s3://Upper/key",
                          "s3://under_score/key", "s3://-start/key", "s3://end-/key",
                          "s3://a..b/key", "s3://192.168.1.1/key", "s3://bucket/../x",
                          "s3://bucket/a/../x", "s3://bucket/./x", "s3://bucket/a//b",
                          "s3://bucket//a", "s3://bucket/a\nb", "s3://bucket/a\x7f",
                          "s3://bucket/\xff\xfe", "http://bucket/key", "s3://bu cket/k"}) {
    EXPECT_FALSE(ParseUrl(bad).ok()) << bad;
    EXPECT_EQ(ParseUrl(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseUrl("s3://bucket/" + std::string(1025, 'k')).ok());
  EXPECT_TRUE(ParseUrl("s3://bucket/" + std::string(1024, 'k')).ok());
  EXPECT_FALSE(ParseUrl("s3://" + std::string(64, 'b') + "/k").ok());
}

class CredentialsFileTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text, int mode = 0600) {
    const std::string path = dir_ + "/credentials";
    ::unlink(path.c_str());
    testing::WriteFile(path, text, mode);
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string dir_ = testing::MakeTempDir();
};

TEST_F(CredentialsFileTest, ReadsTheProfile) {
  const std::string path = Write(
      "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n"
      "[other]\n aws_access_key_id=AKIDOTHER \naws_secret_access_key= s2/x+y \n"
      "aws_session_token = tok\n");
  Config c;
  ASSERT_TRUE(LoadCredentialsFile(path, "default", c).ok());
  EXPECT_EQ(c.access_key_id, "AKIDDEFAULT");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(c.secret_access_key.data()),
                        c.secret_access_key.size()),
            "s1");
  Config o;
  ASSERT_TRUE(LoadCredentialsFile(path, "other", o).ok());
  EXPECT_EQ(o.access_key_id, "AKIDOTHER");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(o.secret_access_key.data()),
                        o.secret_access_key.size()),
            "s2/x+y");
  EXPECT_EQ(o.session_token.size(), 3u);
}

TEST_F(CredentialsFileTest, RefusesAFileOthersCanRead) {
  const std::string path =
      Write("[default]\naws_access_key_id = A\naws_secret_access_key = hunter2\n", 0640);
  Config c;
  absl::Status s = LoadCredentialsFile(path, "default", c);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("0640"), std::string::npos) << s;
  EXPECT_EQ(s.message().find("hunter2"), std::string::npos);
}

TEST_F(CredentialsFileTest, RefusesAFileOfAnotherOwner) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown to another uid needs root (CAP_CHOWN)";
  const std::string path = Write("[default]\naws_access_key_id = A\naws_secret_access_key = s\n");
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  Config c;
  absl::Status s = LoadCredentialsFile(path, "default", c);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("owned by uid 65534"), std::string::npos) << s;
}

TEST_F(CredentialsFileTest, RefusesASymlink) {
  const std::string path = Write("[default]\naws_access_key_id = A\naws_secret_access_key = s\n");
  const std::string link = dir_ + "/link";
  ASSERT_EQ(::symlink(path.c_str(), link.c_str()), 0);
  Config c;
  EXPECT_EQ(LoadCredentialsFile(link, "default", c).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(CredentialsFileTest, MalformedFilesNeverQuoteTheSecret) {
  Config c;
  absl::Status s = LoadCredentialsFile(Write("[default]\nsupersecretvalue\n"), "default", c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().find("supersecretvalue"), std::string::npos) << s;
  s = LoadCredentialsFile(Write("[default]\naws_access_key_id = A\n"), "default", c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = LoadCredentialsFile(Write("[other]\naws_access_key_id = A\naws_secret_access_key = s\n"),
                          "default", c);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = LoadCredentialsFile(dir_ + "/absent", "default", c);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = LoadCredentialsFile(dir_, "default", c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(S3ConfigTest, FromEnvironment) {
  ::setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9/", 1);
  ::setenv("AWS_REGION", "eu-west-3", 1);
  ::setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "secret", 1);
  ::setenv("AWS_MAX_ATTEMPTS", "2", 1);
  auto c = ConfigFromEnvironment("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->endpoint, "http://127.0.0.1:9");
  EXPECT_EQ(c->region, "eu-west-3");
  EXPECT_EQ(c->access_key_id, "AKID");
  EXPECT_EQ(c->max_attempts, 2);
  ::setenv("AWS_ENDPOINT_URL", "ftp://x", 1);
  EXPECT_EQ(ConfigFromEnvironment("").status().code(), absl::StatusCode::kInvalidArgument);
  ::setenv("AWS_ENDPOINT_URL", "http://host/path", 1);
  EXPECT_EQ(ConfigFromEnvironment("").status().code(), absl::StatusCode::kInvalidArgument);
  ::setenv("AWS_ENDPOINT_URL", "http://host:1", 1);
  ::setenv("AWS_MAX_ATTEMPTS", "0", 1);
  EXPECT_EQ(ConfigFromEnvironment("").status().code(), absl::StatusCode::kInvalidArgument);
  ::unsetenv("AWS_MAX_ATTEMPTS");
  ::unsetenv("AWS_ACCESS_KEY_ID");
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  ::setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
  EXPECT_EQ(ConfigFromEnvironment("").status().code(), absl::StatusCode::kNotFound);
  ::unsetenv("AWS_SHARED_CREDENTIALS_FILE");
  ::unsetenv("AWS_ENDPOINT_URL");
  ::unsetenv("AWS_REGION");
}


// Review finding 13: a server (or a proxy in front of it) that ignores If-Match and answers
// with another version of the object is caught by the reply's ETag.
TEST(S3ClientFakeServerTest, PinnedRangeWithAnotherETagIsAborted) {
  FakeServer server(
      "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n"
      "Content-Length: 10\r\nETag: \"other\"\r\nConnection: close\r\n\r\n0123456789");
  auto client = Client::Create(FakeConfig(server.endpoint()));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<uint8_t> out(10);
  absl::Status s = (*client)->GetRange(Location{"bucket", "key"}, 0, absl::MakeSpan(out),
                                       "\"pinned\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_NE(server.last_request().find("If-Match: \"pinned\""), std::string::npos)
      << "the pin is sent too";
  // Unpinned, the same reply is fine.
  EXPECT_TRUE((*client)->GetRange(Location{"bucket", "key"}, 0, absl::MakeSpan(out)).ok());
}

TEST(S3ClientFakeServerTest, PinnedRangeWithoutAnETagIsRefused) {
  FakeServer server(
      "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n"
      "Content-Length: 10\r\nConnection: close\r\n\r\n0123456789");
  auto client = Client::Create(FakeConfig(server.endpoint()));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<uint8_t> out(10);
  absl::Status s = (*client)->GetRange(Location{"bucket", "key"}, 0, absl::MakeSpan(out),
                                       "\"pinned\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

// An object of `size` bytes behind a FakeServer: HEAD and ranged GETs, ETag "v1"; the next
// `fail` GETs are answered 503.
struct FlakyObject {
  explicit FlakyObject(size_t size) : bytes(size) {
    for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + i / 4096);
  }
  std::string Answer(const std::string& request) {
    const std::string n = std::to_string(bytes.size());
    if (request.rfind("HEAD ", 0) == 0) {
      return "HTTP/1.1 200 OK\r\nContent-Length: " + n +
             "\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n";
    }
    ++gets;
    if (fail > 0) {
      --fail;
      return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
    const size_t at = request.find("Range: bytes=");
    size_t first = 0, last = 0;
    if (at == std::string::npos ||
        std::sscanf(request.c_str() + at, "Range: bytes=%zu-%zu", &first, &last) != 2 ||
        first > last || last >= bytes.size()) {
      return "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
    const size_t len = last - first + 1;
    return "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes " + std::to_string(first) + "-" +
           std::to_string(last) + "/" + n + "\r\nContent-Length: " + std::to_string(len) +
           "\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n" +
           std::string(reinterpret_cast<const char*>(bytes.data()) + first, len);
  }
  std::vector<uint8_t> bytes;
  std::atomic<int> gets{0};
  std::atomic<int> fail{0};
};

// Review LOW (#12): a read-ahead window whose GET failed kept its error until it was evicted,
// so reads of its bytes failed without asking the server again. A failed window is dropped, and
// a transient failure is retried (as a new window, with the client's retries and backoff).
TEST(S3ClientFakeServerTest, AFailedReadAheadWindowIsFetchedAgain) {
  FlakyObject object(size_t{1} << 20);
  FakeServer server([&object](const std::string& r) { return object.Answer(r); });
  auto made = Client::Create(FakeConfig(server.endpoint()));
  ASSERT_TRUE(made.ok()) << made.status();
  std::shared_ptr<Client> client = std::move(*made);
  const Location at{"bucket", "obj.capsule"};
  const size_t piece = size_t{256} << 10;
  const std::vector<uint8_t> want(object.bytes.begin(), object.bytes.begin() + piece);
  {
    auto file = OpenObject(client, at);
    ASSERT_TRUE(file.ok()) << file.status();
    (*file)->WillRead(0, object.bytes.size());
    object.fail = 1;
    std::vector<uint8_t> out(piece);
    absl::Status s = (*file)->ReadAt(0, absl::MakeSpan(out));
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(out, want);
    EXPECT_EQ(object.gets.load(), 2) << "the failed window and its retry";
  }
  {
    // A failure that outlasts the retry fails that read, and only that one.
    auto file = OpenObject(client, at);
    ASSERT_TRUE(file.ok()) << file.status();
    (*file)->WillRead(0, object.bytes.size());
    object.gets = 0;
    object.fail = 2;
    std::vector<uint8_t> out(piece);
    EXPECT_EQ((*file)->ReadAt(0, absl::MakeSpan(out)).code(), absl::StatusCode::kUnavailable);
    absl::Status s = (*file)->ReadAt(0, absl::MakeSpan(out));
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(out, want);
    EXPECT_EQ(object.gets.load(), 3);
  }
}

TEST(S3ClientTest, CredentialsTravelInClearOnlyToLoopback) {
  for (const char* ok : {"https://s3.example.org", "http://127.0.0.1:9000", "http://localhost",
                         "http://127.1.2.3:80", "http://[::1]:9000"}) {
    EXPECT_TRUE(Client::Create(FakeConfig(ok)).ok()) << ok;
  }
  for (const char* bad : {"http://s3.example.org", "http://10.0.0.1:9000", "http://127.0.0.1.nip.io",
                          "http://localhost.example", "http://[::2]:80",
                          "http://127.0.0.999", "http://127.0.0.0999:80", "http://127.1",
                          "http://[::1]x", "http://[::1.evil]:80"}) {
    auto c = Client::Create(FakeConfig(bad));
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(c.status().message().find("https://"), std::string::npos) << c.status();
  }
}

TEST(S3XmlTest, ParsesAListing) {
  auto xml = ParseXml(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<IsTruncated>false</IsTruncated><!-- c -->"
      "<Contents><Key>a&amp;b&#x20;&#233;</Key><Size>12</Size></Contents>"
      "<Contents><Key><![CDATA[<raw>]]></Key><Size>3</Size></Contents>"
      "<s3:Empty/></ListBucketResult>");
  ASSERT_TRUE(xml.ok()) << xml.status();
  EXPECT_EQ(xml->name, "ListBucketResult");
  auto contents = xml->Children("Contents");
  ASSERT_EQ(contents.size(), 2u);
  EXPECT_EQ(contents[0]->ChildText("Key"), "a&b \xc3\xa9");
  EXPECT_EQ(contents[1]->ChildText("Key"), "<raw>");
  EXPECT_NE(xml->Child("Empty"), nullptr);
  EXPECT_EQ(xml->ChildText("Missing"), "");
}

TEST(S3XmlTest, RefusesHostileDocuments) {
  const std::string billion_laughs =
      "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
      "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><Error><Code>&lol2;</Code></Error>";
  const std::string external =
      "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><Error>&e;</Error>";
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "<a>";
  for (int i = 0; i < 100; ++i) deep += "</a>";
  std::string many = "<r>";
  for (size_t i = 0; i <= kMaxXmlElements; ++i) many += "<e/>";
  many += "</r>";
  for (const std::string& bad :
       {billion_laughs, external, deep, many, std::string(""), std::string("   "),
        std::string("<a>"), std::string("<a></b>"), std::string("<a>&unknown;</a>"),
        std::string("<a>&#0;</a>"), std::string("<a>&#xD800;</a>"),
        std::string("<a>&#x110000;</a>"), std::string("<a>&#99999999999999999999;</a>"),
        std::string("<a></a><b></b>"), std::string("<a></a>trailing"),
        std::string("<a x=1></a>"), std::string("<a x=\"1></a>"), std::string("<a><!-- </a>"),
        std::string("<a><![CDATA[x</a>"), std::string("<a><?pi?></a>"), std::string("text"),
        std::string("<a>&amp</a>"), std::string("<>"), std::string("</a>")}) {
    EXPECT_FALSE(ParseXml(bad).ok()) << bad.substr(0, 80);
  }
}

TEST(S3XmlTest, TruncationsAndByteFlipsNeverCrash) {
  const std::string doc =
      "<?xml version=\"1.0\"?><ListPartsResult xmlns=\"x\"><IsTruncated>true</IsTruncated>"
      "<NextPartNumberMarker>2</NextPartNumberMarker><Part><PartNumber>1</PartNumber>"
      "<ETag>&quot;abc&quot;</ETag><Size>5</Size></Part></ListPartsResult>";
  ASSERT_TRUE(ParseXml(doc).ok());
  for (size_t n = 0; n < doc.size(); ++n) {
    EXPECT_FALSE(ParseXml(doc.substr(0, n)).ok()) << n;
  }
  for (size_t i = 0; i < doc.size(); ++i) {
    for (char c : {'<', '>', '&', '/', '\0', '"', ';'}) {
      std::string flipped = doc;
      flipped[i] = c;
      (void)ParseXml(flipped);  // any result but a crash or hang
    }
  }
}

}  // namespace
}  // namespace bunker::capsule::s3

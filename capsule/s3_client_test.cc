// Unit tests of the S3 client's parsers: URLs, credentials files, hostile XML. The client against
// a real server is s3_client_integration_test.cc.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "capsule/capsule_test_util.h"
#include "capsule/s3_client.h"
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

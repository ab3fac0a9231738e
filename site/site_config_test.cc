#include "site/site_config.h"

#include <sys/stat.h>

#include <fstream>

#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace bunker::site {
namespace {

std::string TempDir() {
  return bunker::test_temp::MakeTempDir("site");
}

std::string Write(const std::string& dir, const std::string& json) {
  const std::string p = dir + "/site.json";
  std::ofstream(p) << json;
  return p;
}

TEST(SiteConfigTest, LoadsAndResolvesRelativePaths) {
  const std::string dir = TempDir();
  auto site = LoadSiteConfig(Write(dir, R"({"site": "site-b", "region": "eu-west-1",
      "storage": ["encrypted-at-rest"], "identity": "keys/site-b.key",
      "trust": ["trusted/"], "destinations": ["data", "/srv/x"], "state": "state",
      "listen": "127.0.0.1:7000", "peers": ["peers/a.pub"], "store": "store"})"));
  ASSERT_TRUE(site.ok()) << site.status();
  EXPECT_EQ(site->site, "site-b");
  EXPECT_EQ(site->region, "eu-west-1");
  EXPECT_EQ(site->identity, dir + "/keys/site-b.key");
  EXPECT_EQ(site->trust[0], dir + "/trusted");
  EXPECT_EQ(site->destinations[0], dir + "/data");
  EXPECT_EQ(site->destinations[1], "/srv/x");
  EXPECT_EQ(site->state, dir + "/state");
  EXPECT_EQ(site->listen, "127.0.0.1:7000");
}

TEST(SiteConfigTest, S3StoreTakesSettingsButNeverASecret) {
  const std::string dir = TempDir();
  const std::string base = R"({"site": "b", "identity": "b.key", "trust": ["t/"],
      "destinations": ["d"], "state": "s", )";
  auto site = LoadSiteConfig(Write(dir, base + R"("store": "s3://bucket/site-b",
      "s3": {"credentialsFile": "creds", "endpoint": "http://127.0.0.1:9000",
             "region": "eu-west-1", "partMiB": 16}})"));
  ASSERT_TRUE(site.ok()) << site.status();
  EXPECT_TRUE(site->StoreIsS3());
  EXPECT_EQ(site->store, "s3://bucket/site-b");  // not resolved as a path
  EXPECT_EQ(site->s3_credentials_file, dir + "/creds");
  EXPECT_EQ(site->s3_endpoint, "http://127.0.0.1:9000");
  EXPECT_EQ(site->s3_region, "eu-west-1");
  EXPECT_EQ(site->s3_part_mib, 16u);
  for (const char* secret : {R"({"secretAccessKey": "x"})", R"({"aws_secret_access_key": "x"})",
                             R"({"accessKeyId": "x"})", R"({"sessionToken": "x"})"}) {
    auto bad = LoadSiteConfig(
        Write(dir, base + R"("store": "s3://bucket/p", "s3": )" + secret + "}"));
    ASSERT_FALSE(bad.ok()) << secret;
    EXPECT_NE(bad.status().message().find("never holds credentials"), std::string::npos)
        << bad.status();
    EXPECT_EQ(bad.status().message().find("\"x\""), std::string::npos) << "echoes the secret";
  }
  for (const char* part : {"4", "513", "8.5", "\"8\""}) {
    EXPECT_FALSE(LoadSiteConfig(Write(dir, base + R"("store": "s3://bucket/p", "s3": {"partMiB": )" +
                                               part + "}}"))
                     .ok())
        << part;
  }
  EXPECT_FALSE(LoadSiteConfig(Write(dir, base + R"("store": "s3://bucket/p", "s3": {"x": "y"}})")).ok());
  // "s3" settings for a local store are a mistake.
  EXPECT_FALSE(LoadSiteConfig(Write(dir, base + R"("store": "st", "s3": {"region": "r"}})")).ok());
}

TEST(SiteConfigTest, WitnessesAreKeyAtAddress) {
  const std::string dir = TempDir();
  const std::string base = R"("site": "s", "identity": "k", "trust": ["t"],
      "destinations": ["d"], "state": "st", )";
  auto site = LoadSiteConfig(Write(dir, "{" + base + R"("witnesses": ["peers/b@x.pub@10.0.0.2:7000"]})"));
  ASSERT_TRUE(site.ok()) << site.status();
  ASSERT_EQ(site->witnesses.size(), 1u);
  EXPECT_EQ(site->witnesses[0].key, dir + "/peers/b@x.pub");
  EXPECT_EQ(site->witnesses[0].address, "10.0.0.2:7000");
  for (const char* bad : {R"(["b.pub"])", R"(["@h:1"])", R"(["b.pub@"])", R"([1])"}) {
    auto s = LoadSiteConfig(Write(dir, "{" + base + "\"witnesses\": " + bad + "}"));
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find("$.witnesses[0]"), std::string::npos) << s.status();
  }
}

TEST(SiteConfigTest, MountCacheMiBIsAWholeNumberOfMiB) {
  const std::string dir = TempDir();
  const std::string base = R"("site": "s", "identity": "k", "trust": ["t"],
      "destinations": ["d"], "state": "st")";
  auto absent = LoadSiteConfig(Write(dir, "{" + base + "}"));
  ASSERT_TRUE(absent.ok()) << absent.status();
  EXPECT_EQ(absent->mount_cache_mib, 0u);  // the daemon's default applies
  auto set = LoadSiteConfig(Write(dir, "{" + base + R"(, "mountCacheMiB": 1024})"));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->mount_cache_mib, 1024u);
  for (const char* bad : {"-1", "1.5", "\"64\"", "1048577", "[1]"}) {
    auto s = LoadSiteConfig(Write(dir, "{" + base + ", \"mountCacheMiB\": " + bad + "}"));
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find("$.mountCacheMiB: must be a whole number"),
              std::string::npos)
        << s.status();
  }
}

// Regression: the site's name goes into its signed checkpoints, which `capsule audit verify`
// and `prove` print: C1 controls (U+009B is CSI), bidi overrides and bytes that are not UTF-8
// reached the auditor's terminal. An escaped NUL cut the name short.
TEST(SiteConfigTest, SiteNameIsPlainUtf8) {
  const std::string dir = TempDir();
  const std::string rest = R"("identity": "k", "trust": ["t"], "destinations": ["d"],
      "state": "st")";
  for (const std::string& name :
       {std::string(R"(evil\u009b2J)"), std::string("evil\xc2\x9b" "2J"),
        std::string(R"(site-\u202eb)"), std::string(R"(site-\u2066b)"),
        std::string(R"(a\u200bb)"), std::string(R"(a\u0000b)"),
        std::string(R"(a\u0009b)"), std::string(""), std::string(257, 'a')}) {
    auto site = LoadSiteConfig(Write(dir, "{\"site\": \"" + name + "\", " + rest + "}"));
    ASSERT_FALSE(site.ok()) << name;
    EXPECT_EQ(site.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(std::string(site.status().message()).find("$.site: must "), std::string::npos)
        << site.status();
  }
  // Bytes that are not UTF-8 are refused with the whole text (RFC 8259 section 8.1).
  auto raw = LoadSiteConfig(Write(dir, "{\"site\": \"site-\xff\", " + rest + "}"));
  EXPECT_EQ(raw.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(raw.status().message()).find("not valid UTF-8"), std::string::npos)
      << raw.status();
  auto ok = LoadSiteConfig(Write(dir, "{\"site\": \"site \u00e9t\u00e9\", " + rest + "}"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->site, "site \xc3\xa9t\xc3\xa9");
}

// Regression: Cap'n Proto's JSON decoder ends the text at a NUL, so anything could follow a
// valid site file; it takes `1.`; and 0.99999999999999999 read as the whole number 1.
TEST(SiteConfigTest, NulBytesAndLaxNumbersAreRefused) {
  const std::string dir = TempDir();
  const std::string base = R"({"site": "s", "identity": "k", "trust": ["t"],
      "destinations": ["d"], "state": "st")";
  for (const std::string& json :
       {base + "}" + std::string(1, '\0') + R"({"site": "other"})",
        base + R"(, "mountCacheMiB": 1.})", base + R"(, "mountCacheMiB": 1.e0})",
        base + R"(, "mountCacheMiB": 0.99999999999999999})",
        base + R"(, "mountCacheMiB": 01})"}) {
    auto site = LoadSiteConfig(Write(dir, json));
    EXPECT_EQ(site.status().code(), absl::StatusCode::kInvalidArgument) << json;
  }
  auto ok = LoadSiteConfig(Write(dir, base + R"(, "mountCacheMiB": 1.0e3})"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->mount_cache_mib, 1000u);
}

TEST(SiteConfigTest, RejectsUnknownFieldsWrongTypesAndMissingFields) {
  const std::string dir = TempDir();
  const std::string base = R"("site": "s", "identity": "k", "trust": ["t"],
      "destinations": ["d"], "state": "st")";
  struct Case {
    std::string json, needle;
  };
  for (const Case& c : std::vector<Case>{
           {"{" + base + R"(, "colour": "blue"})", "$.colour: unknown field"},
           {"{" + base + R"(, "region": 3})", "$.region: must be a string"},
           {"{" + base + R"(, "storage": "x"})", "$.storage: must be an array"},
           {"{" + base + R"(, "storage": ["a", 1]})", "$.storage[1]: must be a string"},
           {R"({"identity": "k", "trust": ["t"], "destinations": ["d"], "state": "st"})",
            "$.site: is required"},
           {R"({"site": "s", "identity": "k", "trust": [], "destinations": ["d"], "state": "x"})",
            "$.trust"},
           {"[1, 2]", "must be a JSON object"},
           {"{\"site\": ", "not valid JSON"},
       }) {
    auto site = LoadSiteConfig(Write(dir, c.json));
    EXPECT_EQ(site.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_NE(std::string(site.status().message()).find(c.needle), std::string::npos)
        << site.status().message();
  }
  EXPECT_EQ(LoadSiteConfig(dir + "/missing.json").status().code(), absl::StatusCode::kNotFound);
}


}  // namespace
}  // namespace bunker::site

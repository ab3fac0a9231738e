#include "verifier/json_text.h"

#include "gtest/gtest.h"
#include "verifier/policy.h"

namespace bunker::verifier {
namespace {

TEST(JsonTextTest, DecodesEscapesInsideStringsOnly) {
  EXPECT_EQ(*DecodeUnicodeEscapes(R"({"a": "donn\u00e9es"})"), "{\"a\": \"donn\xc3\xa9" "es\"}");
  EXPECT_EQ(*DecodeUnicodeEscapes(R"(["\u006a", "\u20AC", "\ud83d\ude00"])"),
            "[\"j\", \"\xe2\x82\xac\", \"\xf0\x9f\x98\x80\"]");
  // Escapes of quote, backslash and controls stay escaped when the decoder reads them right.
  EXPECT_EQ(*DecodeUnicodeEscapes(R"(["\u0022", "\u0009"])"), R"(["\u0022", "\u0009"])");
  EXPECT_FALSE(DecodeUnicodeEscapes(R"(["\u001b"])").ok());
  // An escaped backslash followed by "u" is not an escape.
  EXPECT_EQ(*DecodeUnicodeEscapes(R"(["\\u00e9"])"), R"(["\\u00e9"])");
  EXPECT_FALSE(DecodeUnicodeEscapes(R"(["\ud83d"])").ok());
  EXPECT_FALSE(DecodeUnicodeEscapes(R"(["\ude00x"])").ok());
  EXPECT_FALSE(DecodeUnicodeEscapes(R"(["\u12"])").ok());
}

// Regression: ids and purposes "\xff" and "\xfe" passed, and printed alike (U+FFFD) in every
// JSON output and audit record.
TEST(JsonTextTest, TextThatIsNotUtf8IsRefused) {
  EXPECT_TRUE(CheckJsonText("{\"id\": \"donn\xc3\xa9" "es \xf0\x9f\x93\xa6\"}").ok());
  EXPECT_EQ(CheckJsonText("{\"id\": \"\xff\"}").status().message(),
            "the text is not valid UTF-8 at byte 8");
  EXPECT_FALSE(CheckJsonText("{\"id\": \"\xc3\"}").ok());          // cut short
  EXPECT_FALSE(CheckJsonText("{\"id\": \"\xc0\xaf\"}").ok());     // overlong
  EXPECT_FALSE(CheckJsonText("{\"id\": \"\xed\xa0\x80\"}").ok()); // a surrogate
  EXPECT_FALSE(CheckJsonText("{\"a\": 1} \xfe").ok());              // outside strings too
}

TEST(JsonTextTest, NulAndNumbersOutsideRfc8259AreRefused) {
  absl::StatusOr<std::vector<std::string_view>> ok =
      CheckJsonText(R"({"a": [1, -0.5, 2e3, "3.", "\"4."], "1.": true})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, (std::vector<std::string_view>{"1", "-0.5", "2e3"}));
  EXPECT_EQ(CheckJsonText(std::string("[1]\0[2]", 8)).status().message(), "NUL byte at byte 3");
  EXPECT_EQ(CheckJsonText("[1.]").status().message(),
            "number \"1.\" at byte 1 does not follow RFC 8259");
  EXPECT_FALSE(CheckJsonText("[1.e0]").ok());
  EXPECT_FALSE(CheckJsonText("[00]").ok());
  EXPECT_FALSE(CheckJsonText("[+1]").ok());
  EXPECT_FALSE(CheckJsonText("[.1]").ok());
}

TEST(JsonTextTest, NumberIntegerness) {
  for (const char* n : {"0", "-0", "0.0", "0e5", "0.000e-9", "7", "-7", "7.0", "7e2", "70e-1",
                        "1.23e2", "-1.5e1", "1e999999999999"}) {
    EXPECT_TRUE(JsonNumberIsInteger(n)) << n;
  }
  for (const char* n : {"0.5", "-0.5", "7.01", "7e-1", "1.23e1", "0.99999999999999999",
                        "1e-999999999999"}) {
    EXPECT_FALSE(JsonNumberIsInteger(n)) << n;
  }
}

// Regression: Cap'n Proto 0.9.2 read "\u00e9" as "I", so this forbid rule stopped matching.
TEST(JsonTextTest, EscapedForbidPathStillForbids) {
  auto policy = ParsePolicy(R"({"version": 1, "rules": [
      {"id": "all", "effect": "permit"},
      {"id": "secret", "effect": "forbid", "paths": ["donn\u00e9es/**"]}]})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  Request r;
  r.files = {"donn\xc3\xa9" "es/s.csv"};
  EXPECT_FALSE(Evaluate(*policy, r).permit);
}

// Regression (found by policy_fuzz): the parser's error echoed a raw newline from the input.
TEST(JsonTextTest, InvalidJsonErrorIsOneLine) {
  const std::string input("f\n\0\n\0\0\0\0\0\0\n\0\n", 13);
  auto policy = ParsePolicy(input);
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(std::string(policy.status().message()).find('\n'), std::string::npos)
      << policy.status().message();
}

}  // namespace
}  // namespace bunker::verifier

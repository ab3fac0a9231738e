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

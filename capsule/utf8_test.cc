#include "capsule/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

TEST(DecodeUtf8Test, DecodesStrictlyValidSequences) {
  char32_t cp = 0;
  EXPECT_EQ(DecodeUtf8("a", &cp), 1u);
  EXPECT_EQ(cp, U'a');
  EXPECT_EQ(DecodeUtf8("\xc3\xa9z", &cp), 2u);
  EXPECT_EQ(cp, U'\u00e9');
  EXPECT_EQ(DecodeUtf8("\xe2\x82\xac", &cp), 3u);
  EXPECT_EQ(cp, U'\u20ac');
  EXPECT_EQ(DecodeUtf8("\xf0\x9f\x94\x92", &cp), 4u);
  EXPECT_EQ(cp, U'\U0001f512');
}

TEST(DecodeUtf8Test, RefusesWhatIsNotUtf8) {
  char32_t cp;
  EXPECT_EQ(DecodeUtf8("", &cp), 0u);
  EXPECT_EQ(DecodeUtf8("\xff", &cp), 0u);
  EXPECT_EQ(DecodeUtf8("\x80", &cp), 0u);              // lone continuation
  EXPECT_EQ(DecodeUtf8("\xc3", &cp), 0u);              // truncated
  EXPECT_EQ(DecodeUtf8("\xc0\xaf", &cp), 0u);          // overlong
  EXPECT_EQ(DecodeUtf8("\xed\xa0\x80", &cp), 0u);      // surrogate
  EXPECT_EQ(DecodeUtf8("\xf4\x90\x80\x80", &cp), 0u);  // above U+10FFFF
}

TEST(ToValidUtf8Test, ReplacesEachBadByte) {
  EXPECT_EQ(ToValidUtf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(ToValidUtf8("a\xff" "b"), "a\xef\xbf\xbd" "b");
  EXPECT_EQ(ToValidUtf8("\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(ToValidUtf8(std::string("\0", 1)), std::string("\0", 1));  // valid, kept
}

}  // namespace
}  // namespace bunker::capsule

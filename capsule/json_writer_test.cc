#include "capsule/json_writer.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

TEST(JsonStringTest, EscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(JsonString("plain"), "\"plain\"");
  EXPECT_EQ(JsonString(""), "\"\"");
  EXPECT_EQ(JsonString("a\"b\\c\n\r\t"), "\"a\\\"b\\\\c\\n\\r\\t\"");
  EXPECT_EQ(JsonString(std::string("\x00\x01\x1b\x7f", 4)), "\"\\u0000\\u0001\\u001b\\u007f\"");
  EXPECT_EQ(JsonString("/"), "\"/\"");  // needs no escape
}

// A C1 control is valid UTF-8 but drives terminals (U+009B is CSI): escaped like C0.
TEST(JsonStringTest, EscapesC1Controls) {
  EXPECT_EQ(JsonString("\xc2\x80\xc2\x9b" "31m\xc2\x9f\xc2\xa0"), "\"\\u0080\\u009b31m\\u009f\xc2\xa0\"");
}

TEST(JsonStringTest, KeepsValidUtf8) {
  EXPECT_EQ(JsonString("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  EXPECT_EQ(JsonString("\xe2\x82\xac \xf0\x9f\x94\x92"), "\"\xe2\x82\xac \xf0\x9f\x94\x92\"");
}

TEST(JsonStringTest, ReplacesInvalidUtf8WithReplacementCharacter) {
  EXPECT_EQ(JsonString("bad\xff"), "\"bad\xef\xbf\xbd\"");                  // never UTF-8
  EXPECT_EQ(JsonString("\xc3"), "\"\xef\xbf\xbd\"");                         // truncated sequence
  EXPECT_EQ(JsonString("\xc3z"), "\"\xef\xbf\xbdz\"");                       // bad continuation
  EXPECT_EQ(JsonString("\xed\xa0\x80"), "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");   // surrogate
  EXPECT_EQ(JsonString("\xc0\xaf"), "\"\xef\xbf\xbd\xef\xbf\xbd\"");              // overlong '/'
  EXPECT_EQ(JsonString("\xf4\x90\x80\x80"), "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");  // > U+10FFFF
  EXPECT_EQ(JsonString("\x80" "a"), "\"\xef\xbf\xbd" "a\"");                 // lone continuation
}

TEST(AppendJsonStringTest, Appends) {
  std::string out = "x=";
  AppendJsonString(&out, "\"");
  EXPECT_EQ(out, "x=\"\\\"\"");
}

TEST(JsonWriterTest, ScalarsAtTopLevel) {
  EXPECT_EQ(JsonWriter().String("s").text(), "\"s\"");
  EXPECT_EQ(JsonWriter().Number(-3).text(), "-3");
  EXPECT_EQ(JsonWriter().Number(std::numeric_limits<uint64_t>::max()).text(),
            "18446744073709551615");
  EXPECT_EQ(JsonWriter().Bool(true).text(), "true");
  EXPECT_EQ(JsonWriter().Bool(false).text(), "false");
  EXPECT_EQ(JsonWriter().Null().text(), "null");
  EXPECT_EQ(JsonWriter().Fixed(1.23456, 3).text(), "1.235");
  EXPECT_EQ(JsonWriter().Fixed(2, 3).text(), "2.000");
  EXPECT_EQ(JsonWriter().Fixed(std::numeric_limits<double>::infinity(), 3).text(), "null");
  EXPECT_EQ(JsonWriter().Fixed(std::numeric_limits<double>::quiet_NaN(), 3).text(), "null");
}

TEST(JsonWriterTest, EmptyContainers) {
  EXPECT_EQ(JsonWriter().BeginObject().EndObject().text(), "{}");
  EXPECT_EQ(JsonWriter().BeginArray().EndArray().text(), "[]");
  EXPECT_EQ(JsonWriter().Strings({}).text(), "[]");
}

TEST(JsonWriterTest, ObjectMembersInOrderWithSeparators) {
  JsonWriter w;
  w.BeginObject()
      .Key("capsuleId").String("ab")
      .Key("files").Number(uint64_t{3})
      .Key("valid").Bool(true)
      .Key("error").Null()
      .EndObject();
  EXPECT_EQ(w.text(), "{\"capsuleId\": \"ab\", \"files\": 3, \"valid\": true, \"error\": null}");
}

TEST(JsonWriterTest, NestsArraysAndObjects) {
  JsonWriter w;
  w.BeginObject().Key("list").BeginArray();
  w.Number(1).BeginObject().Key("a").Strings({"x", "y"}).EndObject();
  w.BeginArray().BeginArray().EndArray().Null().EndArray();
  w.EndArray().Key("inner").BeginObject().Key("deep").BeginObject().EndObject().EndObject();
  w.EndObject();
  EXPECT_EQ(w.text(),
            "{\"list\": [1, {\"a\": [\"x\", \"y\"]}, [[], null]], "
            "\"inner\": {\"deep\": {}}}");
}

TEST(JsonWriterTest, OptionalValues) {
  JsonWriter w;
  w.BeginArray()
      .OptionalString(std::nullopt)
      .OptionalString(std::string("p"))
      .OptionalNumber(std::optional<int64_t>())
      .OptionalNumber(std::optional<int64_t>(-1))
      .EndArray();
  EXPECT_EQ(w.text(), "[null, \"p\", null, -1]");
}

// Strings are escaped exactly once, keys and values alike, also inside nested values.
TEST(JsonWriterTest, EscapesEveryStringOnce) {
  JsonWriter w;
  w.BeginObject()
      .Key("path").String("a\"b\\c\n\x01\xff")
      .Key("list").Strings({"\xc2\x9b", "\\u0041"})
      .EndObject();
  EXPECT_EQ(w.text(),
            "{\"path\": \"a\\\"b\\\\c\\n\\u0001\xef\xbf\xbd\", "
            "\"list\": [\"\\u009b\", \"\\\\u0041\"]}");
}

TEST(JsonWriterTest, KeyConventionIsCamelCase) {
  EXPECT_TRUE(JsonWriter::IsCamelCase("capsuleId"));
  EXPECT_TRUE(JsonWriter::IsCamelCase("sha256"));
  EXPECT_TRUE(JsonWriter::IsCamelCase("to"));
  EXPECT_FALSE(JsonWriter::IsCamelCase("capsule_id"));
  EXPECT_FALSE(JsonWriter::IsCamelCase("CapsuleId"));
  EXPECT_FALSE(JsonWriter::IsCamelCase("old-size"));
  EXPECT_FALSE(JsonWriter::IsCamelCase(""));
}

}  // namespace
}  // namespace bunker::capsule

#include "capsule/paths.h"

#include <string>

#include "absl/status/status.h"
#include "capsule/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

void ExpectRefused(std::string_view path, std::string_view rule) {
  absl::StatusOr<std::string> r = NormalizeEntryPath(path);
  ASSERT_FALSE(r.ok()) << "accepted " << QuotePath(path) << " as " << *r;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr(rule));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("\n")));
}

TEST(NormalizeEntryPathTest, AcceptsRelativePaths) {
  EXPECT_EQ(*NormalizeEntryPath("a"), "a");
  EXPECT_EQ(*NormalizeEntryPath("train/x/y.bin"), "train/x/y.bin");
  EXPECT_EQ(*NormalizeEntryPath(".hidden/..x/x.."), ".hidden/..x/x..");
  EXPECT_EQ(*NormalizeEntryPath("caf\xc3\xa9 \\ \"q\""), "caf\xc3\xa9 \\ \"q\"");
}

TEST(NormalizeEntryPathTest, StripsLeadingDotSlashAndOneTrailingSlash) {
  EXPECT_EQ(*NormalizeEntryPath("./a/b"), "a/b");
  EXPECT_EQ(*NormalizeEntryPath("././a"), "a");
  EXPECT_EQ(*NormalizeEntryPath("dir/"), "dir");
  EXPECT_EQ(*NormalizeEntryPath("./dir/"), "dir");
}

TEST(NormalizeEntryPathTest, RefusesUnsafePaths) {
  ExpectRefused("../etc/passwd", "'..' component");
  ExpectRefused("a/../../x", "'..' component");
  ExpectRefused("a/..", "'..' component");
  ExpectRefused("..", "'..' component");
  ExpectRefused("/etc/passwd", "absolute path");
  ExpectRefused(".//etc", "absolute path");
  ExpectRefused("a/./b", "'.' component");
  ExpectRefused(".", "'.' component");
  ExpectRefused("a//b", "empty component");
  ExpectRefused("dir//", "empty component");
  ExpectRefused("", "empty path");
  ExpectRefused("./", "empty path");
  ExpectRefused("/", "empty path");
  ExpectRefused(std::string_view("a\0b", 3), "NUL byte");
}

TEST(NormalizeEntryPathTest, MessageNamesPathAndRule) {
  EXPECT_EQ(NormalizeEntryPath("../etc/passwd").status().message(),
            "unsafe path \"../etc/passwd\" in archive: '..' component");
}

TEST(NormalizeEntryPathTest, LengthLimit) {
  const std::string ok(kMaxPathSize, 'a');
  EXPECT_TRUE(NormalizeEntryPath(ok).ok());
  EXPECT_TRUE(NormalizeEntryPath("./" + ok + "/").ok());
  const std::string long_path(kMaxPathSize + 1, 'a');
  ExpectRefused(long_path, "longer than 4096 bytes");
  // The error does not echo the whole path.
  EXPECT_LT(NormalizeEntryPath(std::string(1 << 20, 'a')).status().message().size(), 400u);
}

TEST(NormalizeEntryPathTest, ControlCharactersStayOnOneLine) {
  absl::Status s = NormalizeEntryPath("../a\nb\r\x1b[2Jc").status();
  EXPECT_EQ(s.message(), "unsafe path \"../a\\nb\\r\\x1b[2Jc\" in archive: '..' component");
}

TEST(QuotePathTest, EscapesQuotesAndControls) {
  EXPECT_EQ(QuotePath("plain/path.txt"), "\"plain/path.txt\"");
  EXPECT_EQ(QuotePath("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(QuotePath("\t\n\r\x01\x7f"), "\"\\t\\n\\r\\x01\\x7f\"");
  EXPECT_EQ(QuotePath(std::string_view("a\0b", 3)), "\"a\\x00b\"");
}

TEST(QuotePathTest, KeepsPrintableUtf8) {
  EXPECT_EQ(QuotePath("caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80"),
            "\"caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80\"");
}

TEST(QuotePathTest, EscapesInvalidUtf8AndDisguisingCodePoints) {
  // "\xff" "b" rather than "\xffb", which would be one hex escape.
  const std::string b = "b";
  EXPECT_EQ(QuotePath("a\xff" + b), "\"a\\xffb\"");
  EXPECT_EQ(QuotePath("\xc3"), "\"\\xc3\"");                    // truncated sequence
  EXPECT_EQ(QuotePath("\xc0\xaf"), "\"\\xc0\\xaf\"");           // overlong '/'
  EXPECT_EQ(QuotePath("\xed\xa0\x80"), "\"\\xed\\xa0\\x80\"");  // surrogate
  EXPECT_EQ(QuotePath("\xc2\x9b"), "\"\\u009b\"");              // C1 CSI
  EXPECT_EQ(QuotePath("a\xe2\x80\xa8" + b), "\"a\\u2028b\"");   // line separator
  EXPECT_EQ(QuotePath("\xe2\x80\xae" + b), "\"\\u202eb\"");     // right-to-left override
}

// The names that are printed raw (a site's name in checkpoints) must be what EscapeForTerminal
// would keep as it is.
TEST(IsPlainTextTest, RefusesWhatATerminalWouldBeShownEscaped) {
  EXPECT_TRUE(IsPlainText("site-b"));
  EXPECT_TRUE(IsPlainText("site \xc3\xa9t\xc3\xa9 \xe2\x82\xac"));
  EXPECT_TRUE(IsPlainText(""));
  for (const char* bad : {"a\x01", "a\x7f", "\xc2\x9b" "2J", "\xc2\x85", "x\xe2\x80\xaey",
                          "x\xe2\x81\xa6", "x\xe2\x80\x8b", "\xef\xbb\xbf", "bad\xff",
                          "\xc3", "\xed\xa0\x80", "\xc0\xaf"}) {
    EXPECT_FALSE(IsPlainText(bad)) << EscapeForTerminal(bad, false);
    EXPECT_NE(EscapeForTerminal(bad, false), bad);
  }
  EXPECT_FALSE(IsPlainText(std::string_view("a\0b", 3)));
}

TEST(CheckSymlinkTargetTest, AcceptsTargetsInsideTheTree) {
  EXPECT_TRUE(CheckSymlinkTarget("link", "file").ok());
  EXPECT_TRUE(CheckSymlinkTarget("link", ".").ok());
  EXPECT_TRUE(CheckSymlinkTarget("link", "./a/b/").ok());
  EXPECT_TRUE(CheckSymlinkTarget("a/link", "..").ok());
  EXPECT_TRUE(CheckSymlinkTarget("a/b/link", "../../x").ok());
  EXPECT_TRUE(CheckSymlinkTarget("a/b/link", "../c//d").ok());
  EXPECT_TRUE(CheckSymlinkTarget("a/b/link", "./../x").ok());
}

TEST(CheckSymlinkTargetTest, RefusesEscapes) {
  const auto refused = [](std::string_view link, std::string_view target, std::string_view rule) {
    absl::Status s = CheckSymlinkTarget(link, target);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << link << " -> " << target;
    EXPECT_THAT(s.message(), HasSubstr(rule));
    EXPECT_THAT(s.message(), HasSubstr(QuotePath(link)));
  };
  refused("link", "/etc", "absolute target");
  refused("up", "../..", "climbs above the root");
  refused("up", "..", "climbs above the root");
  refused("a/b/up", "../../../x", "climbs above the root");
  refused("link", "", "empty target");
  refused("link", std::string_view("a\0b", 3), "NUL byte");
  refused("link", std::string(kMaxPathSize + 1, 'a'), "longer than");
  // Lexically inside, but "l1" may itself be a symlink to "..".
  refused("l2", "a/l1/..", "'..' after a name");
  refused("a/b/l", "../c/../d", "'..' after a name");
}

TEST(CheckSymlinkTargetTest, MessageNamesLinkAndTarget) {
  EXPECT_EQ(CheckSymlinkTarget("up", "../..").message(),
            "unsafe symlink \"up\" -> \"../..\" in archive: target climbs above the root");
}

}  // namespace
}  // namespace bunker::capsule

#include "capsule/glob.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using ::testing::HasSubstr;

PathGlob Glob(std::string_view pattern) {
  absl::StatusOr<PathGlob> g = PathGlob::Parse(pattern);
  EXPECT_TRUE(g.ok()) << g.status();
  return *std::move(g);
}

TEST(PathGlobTest, ParseRefusesBadPatterns) {
  for (std::string_view bad : {"", "/abs", "/", "../x", "a/../b", "a/..", ".", "./"}) {
    absl::StatusOr<PathGlob> g = PathGlob::Parse(bad);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(PathGlob::Parse("a/../b").status().message(), HasSubstr("'..' component"));
  EXPECT_THAT(PathGlob::Parse("/abs").status().message(), HasSubstr("absolute"));
}

TEST(PathGlobTest, LiteralMatchesExactly) {
  PathGlob g = Glob("train/a.txt");
  EXPECT_TRUE(g.Matches("train/a.txt"));
  EXPECT_FALSE(g.Matches("train/a.txtx"));
  EXPECT_FALSE(g.Matches("train"));
  EXPECT_FALSE(g.Matches("train/a.txt/x"));
  EXPECT_FALSE(g.Matches("Train/a.txt"));  // case-sensitive
  EXPECT_EQ(g.pattern(), "train/a.txt");
}

TEST(PathGlobTest, TrailingSlashAndDotSlashIgnored) {
  EXPECT_TRUE(Glob("train/").Matches("train"));
  EXPECT_TRUE(Glob("./train").Matches("train"));
  EXPECT_TRUE(Glob("a//b").Matches("a/b"));
}

TEST(PathGlobTest, StarStaysWithinOneComponent) {
  PathGlob g = Glob("train/*.txt");
  EXPECT_TRUE(g.Matches("train/a.txt"));
  EXPECT_TRUE(g.Matches("train/.txt"));
  EXPECT_FALSE(g.Matches("train/sub/a.txt"));
  EXPECT_FALSE(g.Matches("train/a.bin"));
  EXPECT_TRUE(Glob("*").Matches("x"));
  EXPECT_FALSE(Glob("*").Matches("x/y"));
}

TEST(PathGlobTest, QuestionMarkAndClasses) {
  EXPECT_TRUE(Glob("shard-??.bin").Matches("shard-07.bin"));
  EXPECT_FALSE(Glob("shard-??.bin").Matches("shard-7.bin"));
  EXPECT_TRUE(Glob("shard-[0-4].bin").Matches("shard-3.bin"));
  EXPECT_FALSE(Glob("shard-[0-4].bin").Matches("shard-5.bin"));
  EXPECT_TRUE(Glob("shard-[!0-4].bin").Matches("shard-5.bin"));
  EXPECT_FALSE(Glob("a?b").Matches("a/b"));
}

TEST(PathGlobTest, DoubleStarMatchesAnyDepthIncludingZero) {
  PathGlob g = Glob("train/**");
  EXPECT_TRUE(g.Matches("train"));
  EXPECT_TRUE(g.Matches("train/a"));
  EXPECT_TRUE(g.Matches("train/a/b/c"));
  EXPECT_FALSE(g.Matches("val/a"));
  EXPECT_FALSE(g.Matches("trainx/a"));

  PathGlob mid = Glob("data/**/labels.csv");
  EXPECT_TRUE(mid.Matches("data/labels.csv"));
  EXPECT_TRUE(mid.Matches("data/x/y/labels.csv"));
  EXPECT_FALSE(mid.Matches("data/x/y/labels.csvx"));

  PathGlob lead = Glob("**/*.json");
  EXPECT_TRUE(lead.Matches("a.json"));
  EXPECT_TRUE(lead.Matches("a/b/c.json"));
  EXPECT_FALSE(lead.Matches("a/b/c.txt"));
}

TEST(PathGlobTest, ManyDoubleStarsStayFast) {
  PathGlob g = Glob("**/**/**/**/**/**/**/**/**/**/**/**/x");
  std::string path;
  for (int i = 0; i < 500; ++i) path += "d/";
  EXPECT_FALSE(g.Matches(path + "y"));
  EXPECT_TRUE(g.Matches(path + "x"));
}

TEST(PathGlobTest, MatchesPathOrAncestor) {
  PathGlob g = Glob("train");
  EXPECT_TRUE(g.MatchesPathOrAncestor("train"));
  EXPECT_TRUE(g.MatchesPathOrAncestor("train/a/b"));
  EXPECT_FALSE(g.MatchesPathOrAncestor("trainx/a"));
  EXPECT_FALSE(g.MatchesPathOrAncestor("val/train"));
  EXPECT_TRUE(Glob("*/images").MatchesPathOrAncestor("val/images/1.png"));
}

TEST(PathGlobTest, MayMatchBelow) {
  PathGlob g = Glob("data/train/*.bin");
  EXPECT_TRUE(g.MayMatchBelow("data"));
  EXPECT_TRUE(g.MayMatchBelow("data/train"));
  EXPECT_FALSE(g.MayMatchBelow("data/val"));
  EXPECT_FALSE(g.MayMatchBelow("data/train/x.bin"));  // a file pattern, nothing below it
  EXPECT_FALSE(g.MayMatchBelow("other"));

  PathGlob deep = Glob("train/**");
  EXPECT_TRUE(deep.MayMatchBelow("train"));
  EXPECT_TRUE(deep.MayMatchBelow("train/a/b"));
  EXPECT_FALSE(deep.MayMatchBelow("val"));

  EXPECT_TRUE(Glob("**/x").MayMatchBelow("anything/at/all"));
}

TEST(PathSelectionTest, EmptySelectsEverything) {
  PathSelection s;
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(s.Selects("any/path"));
  EXPECT_TRUE(s.NeedsDirectory("any"));
}

TEST(PathSelectionTest, SelectsAndNeedsDirectories) {
  absl::StatusOr<PathSelection> s = PathSelection::Parse({"data/train/**", "README.md"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->empty());
  EXPECT_EQ(s->globs().size(), 2u);
  EXPECT_TRUE(s->Selects("README.md"));
  EXPECT_TRUE(s->Selects("data/train"));
  EXPECT_TRUE(s->Selects("data/train/a/b.bin"));
  EXPECT_FALSE(s->Selects("data/val/a.bin"));
  EXPECT_FALSE(s->Selects("data"));
  EXPECT_TRUE(s->NeedsDirectory("data"));
  EXPECT_TRUE(s->NeedsDirectory("data/train"));
  EXPECT_TRUE(s->NeedsDirectory("data/train/sub"));
  EXPECT_FALSE(s->NeedsDirectory("data/val"));
  EXPECT_FALSE(s->NeedsDirectory("docs"));
}

TEST(PathSelectionTest, ParseReportsTheBadPattern) {
  absl::StatusOr<PathSelection> s = PathSelection::Parse({"ok/**", "../bad"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("\"../bad\""));
}

}  // namespace
}  // namespace bunker::capsule

namespace bunker::capsule {
namespace {

TEST(EscapeGlobTest, SelectsExactlyTheLiteralPath) {
  for (const std::string path : {"pub/[a]", "pub/\\a", "x/*", "q?.txt", "plain/file"}) {
    auto glob = PathGlob::Parse(EscapeGlob(path));
    ASSERT_TRUE(glob.ok()) << path;
    EXPECT_TRUE(glob->Matches(path)) << path;
  }
  auto glob = PathGlob::Parse(EscapeGlob("pub/[a]"));
  EXPECT_FALSE(glob->Matches("pub/a"));
  glob = PathGlob::Parse(EscapeGlob("x/*"));
  EXPECT_FALSE(glob->Matches("x/y"));
}

}  // namespace
}  // namespace bunker::capsule

#include "cli/context.h"
#include "cli/audit_common.h"
#include "cli/version.h"
#include "crypto/status_hint.h"

#include "gtest/gtest.h"

namespace bunker::cli {
namespace {

TEST(TerminalSafeTest, DefangsEscapeSequences) {
  EXPECT_EQ(TerminalSafe("ok name.txt"), "ok name.txt");
  EXPECT_EQ(TerminalSafe("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
  EXPECT_EQ(TerminalSafe("a\nb"), "a\\x0ab");
  EXPECT_EQ(TerminalSafe("a\nb\tc", /*keep_newlines=*/true), "a\nb\tc");
  EXPECT_EQ(TerminalSafe("\xc2\x9b" "31m"), "\\u009b31m");  // C1 CSI
  EXPECT_EQ(TerminalSafe("caf\xc3\xa9"), "caf\xc3\xa9");
}

// A requester's purpose that would reorder the line (U+202E RIGHT-TO-LEFT OVERRIDE) or carry
// bytes that are not UTF-8 is shown escaped, not passed to the terminal.
TEST(TerminalSafeTest, EscapesInvalidUtf8AndDisguisingCodePoints) {
  EXPECT_EQ(TerminalSafe("train\xe2\x80\xaegnp.exe"), "train\\u202egnp.exe");
  EXPECT_EQ(TerminalSafe("bad\xff\xfe end"), "bad\\xff\\xfe end");
  EXPECT_EQ(TerminalSafe("\xc3"), "\\xc3");                  // truncated sequence
  EXPECT_EQ(TerminalSafe("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // surrogate
  EXPECT_EQ(TerminalSafe("\xc0\xaf"), "\\xc0\\xaf");          // overlong '/'
  EXPECT_EQ(TerminalSafe("a\xe2\x80\x8b" "b\xef\xbb\xbf\xe2\x81\xa6" "c\xe2\x80\xa8"),
            "a\\u200bb\\ufeff\\u2066c\\u2028");
  // Other valid UTF-8 is kept.
  EXPECT_EQ(TerminalSafe("\xe2\x82\xac \xf0\x9f\x94\x91"), "\xe2\x82\xac \xf0\x9f\x94\x91");
  EXPECT_EQ(TerminalSafe("x\xe2\x80\xaey\n", /*keep_newlines=*/true), "x\\u202ey\n");
}

// Regression: `audit verify`, `prove` and `consistency` printed a checkpoint's site name raw.
// The parser now refuses such names too; the printer does not rely on it.
TEST(TerminalSafeTest, CheckpointsArePrintedTerminalSafe) {
  verifier::Checkpoint c;
  c.site = "evil\xc2\x9b" "2J\xe2\x80\xae\x1b[0m";
  c.size = 3;
  ::testing::internal::CaptureStdout();
  audit::PrintCheckpoint(c);
  std::fflush(stdout);
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("\nsite evil\\u009b2J\\u202e\\x1b[0m\nsize 3\n"), std::string::npos) << out;
  EXPECT_EQ(out.find('\x1b'), std::string::npos);
  EXPECT_EQ(out.find("\xc2\x9b"), std::string::npos);
}

TEST(ParseSizeTest, SuffixesAndErrors) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("64K"), 65536u);
  EXPECT_EQ(*ParseSize("1M"), 1u << 20);
  EXPECT_EQ(*ParseSize("2MiB"), 2u << 20);
  EXPECT_EQ(*ParseSize("1g"), uint64_t{1} << 30);
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("M").ok());
  EXPECT_FALSE(ParseSize("-1").ok());
  EXPECT_FALSE(ParseSize("99999999999999999999G").ok());
}

TEST(ExitCodeTest, EachClassHasItsStatus) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("")), kExitInvalid);
  EXPECT_EQ(ExitCodeFor(absl::DataLossError("")), kExitCorrupt);
  EXPECT_EQ(ExitCodeFor(absl::PermissionDeniedError("")), kExitDenied);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("")), kExitNotFound);
  EXPECT_EQ(ExitCodeFor(absl::AlreadyExistsError("")), kExitExists);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("")), kExitNotReady);
  EXPECT_EQ(ExitCodeFor(absl::ResourceExhaustedError("")), kExitExhausted);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("")), kExitUnavailable);
  EXPECT_EQ(ExitCodeFor(absl::AbortedError("")), kExitUnavailable);
  EXPECT_EQ(ExitCodeFor(absl::CancelledError("")), kExitInterrupted);
  EXPECT_EQ(ExitCodeFor(absl::InternalError("")), kExitInternal);
}

TEST(HumanBytesTest, Units) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(uint64_t{3} << 30), "3.0 GiB");
}

}  // namespace
}  // namespace bunker::cli

namespace bunker::cli {
namespace {

TEST(HintTest, TravelsAsAPayloadNotAsText) {
  const absl::Status s = WithHint(absl::NotFoundError("x is not in the capsule"), "run ls");
  EXPECT_EQ(HintOf(s), "run ls");
  EXPECT_EQ(s.message(), "x is not in the capsule");
  EXPECT_EQ(HintOf(absl::NotFoundError("x is not in the capsule")), "");
}

TEST(VersionTest, NamesTheProgramTheProjectVersionAndTheFormatVersion) {
  EXPECT_FALSE(ProjectVersion().empty());
  EXPECT_EQ(VersionLine("capsule"),
            std::string("capsule ") + std::string(ProjectVersion()) + " (capsule format 1)");
}

}  // namespace
}  // namespace bunker::cli

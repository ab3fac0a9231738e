// capsule verify, run in-process as the program runs it, with a capsule file cut short while
// it is being hashed in place (capsule/mapped_read.h): one clear error and exit status 4, not a
// crash by SIGBUS.
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "capsule/mapped_read.h"
#include "cli/context.h"
#include "gtest/gtest.h"

namespace bunker::cli {
namespace {

std::string g_capsule;
std::atomic<bool> g_truncated{false};

// Cuts the capsule to 1 MiB when the read of its third MiB is mapped, once.
void TruncateAtThirdMiB(int /*fd*/, uint64_t offset) {
  if (offset >= (uint64_t{2} << 20) && !g_truncated.exchange(true)) {
    ASSERT_EQ(::truncate(g_capsule.c_str(), 1 << 20), 0);
  }
}

int RunCommand(int (*command)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return command(static_cast<int>(args.size()), argv.data());
}

TEST(VerifyTest, CapsuleTruncatedWhileBeingVerifiedGivesOneClearError) {
  const std::string dir = capsule::testing::MakeTempDir();
  ::mkdir((dir + "/data").c_str(), 0755);
  const std::vector<uint8_t> bytes = capsule::testing::PatternBytes(6 << 20, 9);
  capsule::testing::WriteFile(dir + "/data/large.bin", std::string(bytes.begin(), bytes.end()));
  ASSERT_EQ(RunCommand(RunKeygen, {"-o", dir + "/issuer"}), kExitOk);
  ASSERT_EQ(RunCommand(RunKeygen, {"-o", dir + "/site"}), kExitOk);
  g_capsule = dir + "/d.capsule";
  ASSERT_EQ(RunCommand(RunSeal, {dir + "/data", "-o", g_capsule, "--sign", dir + "/issuer.key", "--to",
                          dir + "/site.pub"}),
            kExitOk);
  ASSERT_EQ(RunCommand(RunVerify, {g_capsule, "--trust", dir + "/issuer.pub"}), kExitOk);

  capsule::SetMappedRangeHookForTesting(TruncateAtThirdMiB);
  ::testing::internal::CaptureStderr();
  const int status = RunCommand(RunVerify, {g_capsule, "--trust", dir + "/issuer.pub", "--threads", "2"});
  const std::string err = ::testing::internal::GetCapturedStderr();
  capsule::SetMappedRangeHookForTesting(nullptr);
  EXPECT_TRUE(g_truncated.load());
  EXPECT_EQ(status, kExitCorrupt) << err;
  EXPECT_NE(err.find("capsule file changed while being read"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

}  // namespace
}  // namespace bunker::cli

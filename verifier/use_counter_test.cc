#include "verifier/use_counter.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace bunker::verifier {
namespace {

std::string TempDir() {
  return bunker::test_temp::MakeTempDir("counter");
}

TEST(UseCounterTest, CountsSurviveReopening) {
  const std::string dir = TempDir();
  auto c = UseCounter::Open(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*(*c)->Count("a"), 0u);
  ASSERT_TRUE((*c)->Begin().ok());
  ASSERT_TRUE((*c)->SetCount("a", 2).ok());
  ASSERT_TRUE((*c)->Commit().ok());
  ASSERT_TRUE((*c)->Begin().ok());
  ASSERT_TRUE((*c)->SetCount("b", 9).ok());
  (*c)->Rollback();
  EXPECT_EQ(*(*c)->Count("a"), 2u);
  EXPECT_EQ(*(*c)->Count("b"), 0u);
  c->reset();
  auto again = UseCounter::Open(dir);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*(*again)->Count("a"), 2u);
  EXPECT_EQ((*(*again)->Counts()), (std::map<std::string, uint64_t>{{"a", 2}}));
}

TEST(UseCounterTest, CheckpointAndPendingAreKept) {
  auto c = UseCounter::Open(TempDir());
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->LastCheckpoint()->has_value());
  ASSERT_TRUE((*c)->SetLastCheckpoint("cp1").ok());
  ASSERT_TRUE((*c)->SetLastCheckpoint("cp2").ok());
  EXPECT_EQ(**(*c)->LastCheckpoint(), "cp2");
  EXPECT_FALSE((*c)->Pending()->has_value());
  ASSERT_TRUE((*c)->SetPending({{1, 0, 2, 0xff}, 7}).ok());
  ASSERT_TRUE((*c)->SetPending({{1, 2, 3}, 8}).ok());  // one slot
  auto p = (*c)->Pending();
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->entry, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ((*p)->log_size, 8u);
  ASSERT_TRUE((*c)->ClearPending().ok());
  EXPECT_FALSE((*c)->Pending()->has_value());
}

// Many processes race for the last allowed uses: exactly `kAllowed` win, never more.
TEST(UseCounterTest, ConcurrentProcessesCannotOverspend) {
  const std::string dir = TempDir();
  ASSERT_TRUE(UseCounter::Open(dir).ok());
  constexpr int kProcs = 8;
  constexpr uint64_t kAllowed = 3;
  std::vector<pid_t> kids;
  for (int i = 0; i < kProcs; ++i) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto c = UseCounter::Open(dir);
      if (!c.ok() || !(*c)->Begin().ok()) ::_exit(2);
      auto n = (*c)->Count("capsule");
      if (!n.ok()) ::_exit(2);
      ::usleep(2000);  // widen the window in which a racing reader could see a stale count
      const bool won = *n < kAllowed;
      if (won && !(*c)->SetCount("capsule", *n + 1).ok()) ::_exit(2);
      ::_exit(!(*c)->Commit().ok() ? 2 : (won ? 0 : 1));
    }
    kids.push_back(pid);
  }
  int winners = 0, losers = 0;
  for (pid_t pid : kids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 0) ++winners;
    if (WEXITSTATUS(status) == 1) ++losers;
  }
  EXPECT_EQ(winners, static_cast<int>(kAllowed));
  EXPECT_EQ(losers, kProcs - static_cast<int>(kAllowed));
  auto c = UseCounter::Open(dir);
  EXPECT_EQ(*(*c)->Count("capsule"), kAllowed);
}

}  // namespace
}  // namespace bunker::verifier

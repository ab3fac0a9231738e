#include "verifier/use_counter.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "gtest/gtest.h"

namespace bunker::verifier {
namespace {

std::string TempDir() {
  std::string t = ::testing::TempDir() + "counter-XXXXXX";
  return ::mkdtemp(t.data());
}

TEST(UseCounterTest, CountsOnlyWhatDecideAccepts) {
  const std::string dir = TempDir();
  auto c = UseCounter::Open(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*(*c)->Count("a"), 0u);
  EXPECT_TRUE(*(*c)->Decide("a", [](uint64_t n) { return n < 2; }));
  EXPECT_TRUE(*(*c)->Decide("a", [](uint64_t n) { return n < 2; }));
  EXPECT_FALSE(*(*c)->Decide("a", [](uint64_t n) { return n < 2; }));
  EXPECT_EQ(*(*c)->Count("a"), 2u);
  EXPECT_EQ(*(*c)->Count("b"), 0u);
  // The count survives reopening.
  c->reset();
  auto again = UseCounter::Open(dir);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*(*again)->Count("a"), 2u);
}

TEST(UseCounterTest, CheckpointIsKept) {
  auto c = UseCounter::Open(TempDir());
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->LastCheckpoint()->has_value());
  ASSERT_TRUE((*c)->SetLastCheckpoint("cp1").ok());
  ASSERT_TRUE((*c)->SetLastCheckpoint("cp2").ok());
  EXPECT_EQ(**(*c)->LastCheckpoint(), "cp2");
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
      if (!c.ok()) ::_exit(2);
      auto won = (*c)->Decide("capsule", [](uint64_t n) {
        ::usleep(2000);  // widen the window in which a racing reader could see a stale count
        return n < kAllowed;
      });
      ::_exit(!won.ok() ? 2 : (*won ? 0 : 1));
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

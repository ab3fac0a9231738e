// The test suite's own temporary folders (tests/temp_dir.h): removed whole, never through a
// symbolic link, also when a test made parts of them unreadable or unwritable.
#include "tests/temp_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace bunker::test_temp {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

void Touch(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << path;
  ::close(fd);
}

TEST(TempDirTest, MakesAFreshPrivateFolderNamedByItsPrefix) {
  const std::string a = MakeTempDir("temp-dir-test");
  const std::string b = MakeTempDir("temp-dir-test");
  EXPECT_NE(a, b);
  EXPECT_NE(a.find("/temp-dir-test-"), std::string::npos) << a;
  struct stat st;
  ASSERT_EQ(::lstat(a.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST(TempDirTest, RemovesLockedFoldersAndNeverFollowsALink) {
  const std::string outside = MakeTempDir("temp-dir-test-outside");
  Touch(outside + "/keep");
  const std::string top = MakeTempDir("temp-dir-test");
  ASSERT_EQ(::mkdir((top + "/ro").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((top + "/ro/deeper").c_str(), 0700), 0);
  Touch(top + "/ro/deeper/f");
  ASSERT_EQ(::mkdir((top + "/locked").c_str(), 0700), 0);
  Touch(top + "/locked/f");
  ASSERT_EQ(::symlink(outside.c_str(), (top + "/link-to-dir").c_str()), 0);
  ASSERT_EQ(::symlink((outside + "/keep").c_str(), (top + "/ro/link-to-file").c_str()), 0);
  ASSERT_EQ(::chmod((top + "/ro/deeper").c_str(), 0500), 0);
  ASSERT_EQ(::chmod((top + "/ro").c_str(), 0500), 0);
  ASSERT_EQ(::chmod((top + "/locked").c_str(), 0), 0);

  EXPECT_TRUE(RemoveTree(top));
  EXPECT_FALSE(Exists(top));
  EXPECT_TRUE(Exists(outside + "/keep"));  // the links went, not what they point to
  EXPECT_TRUE(RemoveTree(top));            // already gone: nothing to do
}

TEST(TempDirTest, RemovesAFolderMadeUnreadableAtTheTop) {
  const std::string top = MakeTempDir("temp-dir-test");
  ASSERT_EQ(::mkdir((top + "/a").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((top + "/a/b").c_str(), 0700), 0);
  Touch(top + "/a/b/f");
  ASSERT_EQ(::chmod((top + "/a/b").c_str(), 0), 0);
  ASSERT_EQ(::chmod((top + "/a").c_str(), 0), 0);
  ASSERT_EQ(::chmod(top.c_str(), 0), 0);
  EXPECT_TRUE(RemoveTree(top));
  EXPECT_FALSE(Exists(top));
}

// Runs tests/temp_dir_child.cc through `env` (an env(1) command line); returns the folder it printed ("" if none)
// and sets `status` to its exit status.
std::string RunChild(const std::string& env, int* status) {
  const std::string command = env + " " + TEMP_DIR_CHILD + " 2>&1";
  FILE* out = ::popen(command.c_str(), "r");
  if (out == nullptr) return "";
  std::string folder;
  char line[4096];
  while (std::fgets(line, sizeof line, out) != nullptr) {
    std::string l(line);
    if (l.rfind("folder=", 0) == 0) folder = l.substr(7, l.find('\n') - 7);
  }
  const int w = ::pclose(out);
  *status = WIFEXITED(w) ? WEXITSTATUS(w) : -1;
  return folder;
}

TEST(TempDirTest, TheFolderGoesWhenTheTestPassesOrFailsEarly) {
  int status = -1;
  const std::string passed = RunChild("env -u TEMP_DIR_CHILD_FAIL -u BUNKER_KEEP_TMP", &status);
  EXPECT_EQ(status, 0);
  ASSERT_FALSE(passed.empty());
  EXPECT_FALSE(Exists(passed)) << passed;

  const std::string failed = RunChild("env -u BUNKER_KEEP_TMP TEMP_DIR_CHILD_FAIL=1", &status);
  EXPECT_EQ(status, 1);
  ASSERT_FALSE(failed.empty());
  EXPECT_FALSE(Exists(failed)) << failed;
}

TEST(TempDirTest, KeepTmpKeepsTheFolder) {
  int status = -1;
  const std::string kept = RunChild("env -u TEMP_DIR_CHILD_FAIL BUNKER_KEEP_TMP=1", &status);
  EXPECT_EQ(status, 0);
  ASSERT_FALSE(kept.empty());
  RemoveWhenTestEnds(kept);  // this test's to clean up now
  EXPECT_TRUE(Exists(kept + "/secret.key")) << kept;
}

}  // namespace
}  // namespace bunker::test_temp

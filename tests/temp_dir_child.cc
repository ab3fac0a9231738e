// Run by temp_dir_test.cc as a child process: one test that makes a folder with a file in it,
// prints the folder's path, and fails at once (ASSERT) when TEMP_DIR_CHILD_FAIL is set. What is
// left of the folder once this process has ended is the parent test's to judge.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/temp_dir.h"

TEST(TempDirChild, MakesAFolderAndEnds) {
  const std::string dir = bunker::test_temp::MakeTempDir("temp-dir-child");
  std::ofstream(dir + "/secret.key") << "not really a key\n";
  std::printf("folder=%s\n", dir.c_str());
  std::fflush(stdout);
  ASSERT_EQ(std::getenv("TEMP_DIR_CHILD_FAIL"), nullptr) << "failing on purpose";
}

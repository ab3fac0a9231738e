// Temporary folders for tests that leave nothing behind: every folder MakeTempDir() makes is
// removed, with everything under it, when the test that made it ends, whatever its outcome
// (pass, failure, an ASSERT's early return). gtest deletes the fixture before that point, so a
// fixture's destructor and TearDown() have stopped what they started (daemons, threads) by then.
//
// A folder made outside a running test (a static, an Environment) lives until the test program
// ends. Removal happens only in the process that made the folder (a forked child that returns
// into gtest removes nothing), never follows a symbolic link and never crosses into another
// file system (a mount left under the folder is left alone, and the folder with it, and says so).
// Folders a test made unreadable or unwritable are made accessible first; what the test process
// may not remove (another user's files, when not root) stays, and stderr names it.
//
// BUNKER_KEEP_TMP=1 in the environment keeps every folder, for debugging; each is named on stderr.
//
// Test-only; not thread-safe against a test that is still writing into a folder when it ends.
#ifndef BUNKER_TESTS_TEMP_DIR_H_
#define BUNKER_TESTS_TEMP_DIR_H_

#include <string>

namespace bunker::test_temp {

// A fresh empty folder `<::testing::TempDir()>/<prefix>-XXXXXX` (mode 0700), removed when the
// current test ends. Fails the test (and returns "") when it cannot be made.
std::string MakeTempDir(const std::string& prefix);

// Removes `path` with everything under it when the current test ends, as MakeTempDir's folders.
void RemoveWhenTestEnds(const std::string& path);

// Removes `path` and everything under it now: symbolic links are removed, never followed; other
// file systems are not entered. Returns true when `path` no longer exists.
bool RemoveTree(const std::string& path);

}  // namespace bunker::test_temp

#endif  // BUNKER_TESTS_TEMP_DIR_H_

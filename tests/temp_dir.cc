#include "tests/temp_dir.h"

#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include <gtest/gtest.h>

namespace bunker::test_temp {
namespace {

// nftw() callbacks take no context; every walk holds WalkMutex().
bool g_opened_a_folder = false;

std::mutex& WalkMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

// Gives the owner rwx on every folder, so that the removal pass can list and empty it. A folder
// nftw could not read is not entered this pass; the caller walks again.
int MakeAccessible(const char* path, const struct stat* st, int type, struct FTW*) {
  if ((type == FTW_D || type == FTW_DNR) && (st->st_mode & S_IRWXU) != S_IRWXU) {
    if (::chmod(path, (st->st_mode & 07777) | S_IRWXU) == 0 && type == FTW_DNR) {
      g_opened_a_folder = true;
    }
  }
  return 0;
}

// Folders after their contents (FTW_DEPTH); what cannot go stays, and the caller says so.
int RemoveOne(const char* path, const struct stat*, int type, struct FTW*) {
  if (type == FTW_DP || type == FTW_DNR) {
    ::rmdir(path);
  } else {
    ::unlink(path);
  }
  return 0;
}

bool KeepRequested() {
  const char* keep = ::getenv("BUNKER_KEEP_TMP");
  return keep != nullptr && *keep != '\0' && std::strcmp(keep, "0") != 0;
}

struct Pending {
  std::string path;
  pid_t owner;  // only the process that made it removes it
};

struct Registry {
  std::mutex mu;
  bool listening = false;
  std::vector<Pending> test;     // removed when the current test ends
  std::vector<Pending> program;  // made outside a test: removed when the program ends
};

Registry& TheRegistry() {
  static Registry* r = new Registry;  // outlives the listener's last call
  return *r;
}

void RemoveAll(std::vector<Pending> pending, bool test_failed) {
  const bool keep = KeepRequested();
  for (const Pending& p : pending) {
    if (p.owner != ::getpid()) continue;
    if (keep) {
      std::fprintf(stderr, "BUNKER_KEEP_TMP: kept %s\n", p.path.c_str());
    } else if (!RemoveTree(p.path)) {
      std::fprintf(stderr, "temporary folder %s could not be removed completely\n",
                   p.path.c_str());
    } else if (test_failed) {
      std::fprintf(stderr, "removed the test's temporary folder %s (BUNKER_KEEP_TMP=1 keeps it)\n",
                   p.path.c_str());
    }
  }
}

class RemoveAtEnd : public ::testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const ::testing::TestInfo& info) override {
    std::vector<Pending> pending;
    {
      std::lock_guard<std::mutex> lock(TheRegistry().mu);
      pending.swap(TheRegistry().test);
    }
    RemoveAll(std::move(pending), info.result() != nullptr && info.result()->Failed());
  }
  void OnTestProgramEnd(const ::testing::UnitTest& unit) override {
    std::vector<Pending> pending;
    {
      std::lock_guard<std::mutex> lock(TheRegistry().mu);
      pending.swap(TheRegistry().test);
      for (Pending& p : TheRegistry().program) pending.push_back(std::move(p));
      TheRegistry().program.clear();
    }
    RemoveAll(std::move(pending), unit.Failed());
  }
};

}  // namespace

std::string MakeTempDir(const std::string& prefix) {
  std::string path = ::testing::TempDir();
  if (path.empty() || path.back() != '/') path += '/';
  path += prefix + "-XXXXXX";
  if (::mkdtemp(path.data()) == nullptr) {
    // No folder to hand out: a caller would build paths on "" and write beside /.
    std::fprintf(stderr, "cannot make a temporary folder %s: %s\n", path.c_str(),
                 std::strerror(errno));
    std::abort();
  }
  RemoveWhenTestEnds(path);
  return path;
}

void RemoveWhenTestEnds(const std::string& path) {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.listening) {
    ::testing::UnitTest::GetInstance()->listeners().Append(new RemoveAtEnd);  // gtest owns it
    r.listening = true;
  }
  const bool in_test = ::testing::UnitTest::GetInstance()->current_test_info() != nullptr;
  (in_test ? r.test : r.program).push_back(Pending{path, ::getpid()});
}

bool RemoveTree(const std::string& path) {
  std::lock_guard<std::mutex> lock(WalkMutex());
  // A folder opened this pass may hold folders that are unreadable in turn: walk until none is
  // left (bounded, in case chmod keeps "succeeding" without effect).
  for (int pass = 0; pass < 64; ++pass) {
    g_opened_a_folder = false;
    ::nftw(path.c_str(), MakeAccessible, 16, FTW_PHYS | FTW_MOUNT);
    if (!g_opened_a_folder) break;
  }
  ::nftw(path.c_str(), RemoveOne, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  struct stat st;
  return ::lstat(path.c_str(), &st) != 0 && errno == ENOENT;
}

}  // namespace bunker::test_temp

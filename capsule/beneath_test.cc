#include "capsule/beneath.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <iostream>
#include <thread>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "capsule/fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using ::testing::HasSubstr;

using OpenFn = std::function<absl::StatusOr<Fd>(int, std::string_view, int, mode_t)>;

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

void Touch(const std::string& path) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid()) << path;
}

// Each test runs against both OpenBeneath (openat2 on this kernel) and its walking fallback.
class BeneathTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/beneath_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    top_ = tmpl;
    root_path_ = top_ + "/root";
    outside_ = top_ + "/outside";
    ASSERT_EQ(mkdir(root_path_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir(outside_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir((root_path_ + "/a").c_str(), 0755), 0);
    ASSERT_EQ(mkdir((root_path_ + "/a/b").c_str(), 0755), 0);
    Touch(root_path_ + "/a/b/f");
    Touch(outside_ + "/secret");
    ASSERT_EQ(symlink("../outside", (root_path_ + "/evil").c_str()), 0);
    ASSERT_EQ(symlink("b", (root_path_ + "/a/inner").c_str()), 0);  // harmless, still refused
    ASSERT_EQ(symlink("f", (root_path_ + "/a/b/flink").c_str()), 0);
    root_.Reset(open(root_path_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(root_.valid());
  }
  void TearDown() override {
    root_.Reset();
    const size_t slash = top_.rfind('/');
    Fd parent(open(top_.substr(0, slash).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    RemoveTreeBeneath(parent.get(), top_.substr(slash + 1));
  }

  absl::StatusOr<Fd> Open(std::string_view relative, int flags, mode_t mode = 0) {
    if (GetParam()) return internal::OpenBeneathByWalking(root_.get(), relative, flags, mode);
    return OpenBeneath(root_.get(), relative, flags, mode);
  }

  void ExpectSymlinkRefused(std::string_view relative, int flags) {
    absl::StatusOr<Fd> fd = Open(relative, flags, 0600);
    ASSERT_FALSE(fd.ok()) << relative;
    EXPECT_EQ(fd.status().code(), absl::StatusCode::kPermissionDenied) << fd.status();
    EXPECT_THAT(std::string(fd.status().message()),
                HasSubstr(absl::StrCat("\"", std::string(relative),
                                       "\" is or goes through a symbolic link")));
  }

  std::string top_;
  std::string root_path_;
  std::string outside_;
  Fd root_;
};

INSTANTIATE_TEST_SUITE_P(Openat2AndWalking, BeneathTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Walking" : "Openat2"; });

TEST_P(BeneathTest, OpensFilesAndDirectoriesBelow) {
  ASSERT_TRUE(Open("a/b/f", O_RDONLY).ok());
  ASSERT_TRUE(Open("a/b", O_RDONLY | O_DIRECTORY).ok());
  ASSERT_TRUE(Open("a", O_PATH | O_DIRECTORY).ok());
  absl::StatusOr<Fd> created = Open("a/b/new", O_WRONLY | O_CREAT | O_EXCL, 0640);
  ASSERT_TRUE(created.ok()) << created.status();
  struct stat st;
  ASSERT_EQ(fstat(created->get(), &st), 0);
  EXPECT_EQ(st.st_mode & 0700, 0600u);
  EXPECT_TRUE(Exists(root_path_ + "/a/b/new"));
  EXPECT_EQ(Open("a/missing", O_RDONLY).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(BeneathTest, RefusesSymlinksAnywhereOnThePath) {
  ExpectSymlinkRefused("evil", O_RDONLY | O_DIRECTORY);
  ExpectSymlinkRefused("evil/secret", O_RDONLY);
  ExpectSymlinkRefused("evil/new", O_WRONLY | O_CREAT);
  ExpectSymlinkRefused("a/inner/f", O_RDONLY);
  ExpectSymlinkRefused("a/b/flink", O_RDONLY);
  // O_PATH | O_NOFOLLOW would hand out a descriptor of the link itself.
  ExpectSymlinkRefused("a/b/flink", O_PATH | O_NOFOLLOW);
  ExpectSymlinkRefused("a/b/flink", O_PATH);
  EXPECT_FALSE(Exists(outside_ + "/new"));
}

TEST_P(BeneathTest, RefusesPathsThatCouldLeave) {
  for (const char* bad : {"", "/etc", "..", "a/../..", "a//b", "a/./b", "a/b/", ".", "a/."}) {
    absl::StatusOr<Fd> fd = Open(bad, O_RDONLY);
    EXPECT_EQ(fd.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(Open(std::string(256, 'n'), O_RDONLY).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Open(std::string(4096, 'n'), O_RDONLY).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(BeneathTest, CrossesSearchOnlyDirectories) {
  ASSERT_EQ(chmod((root_path_ + "/a").c_str(), 0111), 0);
  EXPECT_TRUE(Open("a/b/f", O_RDONLY).ok());
  ASSERT_EQ(chmod((root_path_ + "/a").c_str(), 0755), 0);
}

void ExpectEmpty(int dir_fd, bool expected) {
  const absl::StatusOr<bool> empty = DirectoryIsEmpty(dir_fd, "cannot read");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, expected);
}

TEST_P(BeneathTest, TellsAnEmptyDirectoryAndLeavesTheCallersOffset) {
  ASSERT_EQ(mkdir((root_path_ + "/empty").c_str(), 0755), 0);
  absl::StatusOr<Fd> empty = Open("empty", O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(empty.ok()) << empty.status();
  ExpectEmpty(empty->get(), true);
  absl::StatusOr<Fd> full = Open("a", O_RDONLY | O_DIRECTORY);  // holds b, inner
  ASSERT_TRUE(full.ok()) << full.status();
  ExpectEmpty(full->get(), false);
  // Twice through the same descriptor: the listing is read through a description of its own.
  ExpectEmpty(full->get(), false);
  // Read through an O_PATH descriptor too (the kind Destination roots are).
  absl::StatusOr<Fd> path_only = Open("a", O_PATH | O_DIRECTORY);
  ASSERT_TRUE(path_only.ok()) << path_only.status();
  ExpectEmpty(path_only->get(), false);
  Fd file(openat(root_.get(), "a/b/f", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(file.valid());
  const absl::StatusOr<bool> not_dir = DirectoryIsEmpty(file.get(), "cannot read \"a/b/f\"");
  ASSERT_FALSE(not_dir.ok());
  EXPECT_THAT(std::string(not_dir.status().message()), HasSubstr("cannot read \"a/b/f\""));
}

TEST(FdTest, ClosesOnDestructionMoveAndReset) {
  int raw = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    Fd a(raw);
    Fd b(std::move(a));
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): the contract says -1
    EXPECT_EQ(b.get(), raw);
    Fd c;
    c = std::move(b);
    EXPECT_EQ(c.get(), raw);
    EXPECT_EQ(fcntl(raw, F_GETFD), FD_CLOEXEC);
  }
  EXPECT_EQ(fcntl(raw, F_GETFD), -1);  // closed

  raw = open("/dev/null", O_RDONLY | O_CLOEXEC);
  {
    Fd d(raw);
    EXPECT_EQ(d.release(), raw);
    EXPECT_FALSE(d.valid());
  }
  EXPECT_EQ(fcntl(raw, F_GETFD), FD_CLOEXEC);  // released, not closed
  Fd e(raw);
  e.Reset();
  EXPECT_EQ(fcntl(raw, F_GETFD), -1);
}

class MakeDirsTest : public BeneathTest {};
INSTANTIATE_TEST_SUITE_P(Once, MakeDirsTest, ::testing::Values(false));

TEST_P(MakeDirsTest, CreatesRecordsAndTakesBack) {
  {
    CreatedDirs created;
    absl::StatusOr<Fd> dir = MakeDirsBeneath(root_.get(), "a/x/y/z", 0777, &created);
    ASSERT_TRUE(dir.ok()) << dir.status();
    EXPECT_TRUE(Exists(root_path_ + "/a/x/y/z"));
    EXPECT_FALSE(created.empty());
    // The descriptor works as a dirfd.
    ASSERT_EQ(mkdirat(dir->get(), "in", 0700), 0);
    ASSERT_EQ(unlinkat(dir->get(), "in", AT_REMOVEDIR), 0);
  }
  EXPECT_FALSE(Exists(root_path_ + "/a/x"));   // taken back
  EXPECT_TRUE(Exists(root_path_ + "/a/b/f"));  // what existed stays

  {
    CreatedDirs created;
    ASSERT_TRUE(MakeDirsBeneath(root_.get(), "a/kept/k", 0777, &created).ok());
    created.Keep();
  }
  EXPECT_TRUE(Exists(root_path_ + "/a/kept/k"));
}

TEST_P(MakeDirsTest, NeverFollowsASymlink) {
  CreatedDirs created;
  for (const char* path : {"evil", "evil/newsub", "evil/newsub/x", "a/inner/x", "a/b/flink/x"}) {
    absl::StatusOr<Fd> dir = MakeDirsBeneath(root_.get(), path, 0777, &created);
    ASSERT_FALSE(dir.ok()) << path;
    EXPECT_EQ(dir.status().code(), absl::StatusCode::kPermissionDenied) << dir.status();
    EXPECT_THAT(std::string(dir.status().message()), HasSubstr("is or goes through a symbolic"));
  }
  EXPECT_FALSE(Exists(outside_ + "/newsub"));
  EXPECT_FALSE(Exists(root_path_ + "/a/b/x"));
  EXPECT_EQ(MakeDirsBeneath(root_.get(), "a/b/f/x", 0777, &created).status().code(),
            absl::StatusCode::kInvalidArgument);  // a file on the way
}

TEST_P(MakeDirsTest, GivesCreatedDirectoriesToTheOwner) {
  if (geteuid() != 0) GTEST_SKIP() << "chown to another uid needs root (CAP_CHOWN)";
  CreatedDirs created;
  absl::StatusOr<Fd> dir =
      MakeDirsBeneath(root_.get(), "a/o1/o2", 0777, &created, FileOwner{65534, 65534});
  ASSERT_TRUE(dir.ok()) << dir.status();
  struct stat st;
  ASSERT_EQ(lstat((root_path_ + "/a").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);  // existed: left alone
  for (const char* p : {"/a/o1", "/a/o1/o2"}) {
    ASSERT_EQ(lstat((root_path_ + p).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u) << p;
    EXPECT_EQ(st.st_gid, 65534u) << p;
  }
}

// Someone who can write the parent renames another user's directory over the one just made:
// it must never be given to the owner (regression: a CAP_CHOWN service chowned it).
TEST_P(MakeDirsTest, NeverGivesAwayADirectorySwappedInWhileItWasMade) {
  if (geteuid() != 0) GTEST_SKIP() << "chown to another uid needs root (CAP_CHOWN)";
  const std::string victim = root_path_ + "/victim";
  std::atomic<bool> stop{false};
  std::thread racer([&] {
    while (!stop.load()) {
      if (mkdir(victim.c_str(), 0755) == 0) {
        // Marked, so that the victim can be told from a directory the call made itself.
        close(open((victim + "/mark").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
        (void)chown(victim.c_str(), 4242, 4242);
      }
      // Replaces "new" when it is an empty directory: exactly the window after mkdirat.
      (void)rename(victim.c_str(), (root_path_ + "/a/new").c_str());
    }
  });
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    CreatedDirs created;
    absl::StatusOr<Fd> dir =
        MakeDirsBeneath(root_.get(), "a/new", 0777, &created, FileOwner{65534, 65534});
    if (!dir.ok()) ++refused;
    struct stat st;
    if (lstat((root_path_ + "/a/new/mark").c_str(), &st) == 0 &&
        lstat((root_path_ + "/a/new").c_str(), &st) == 0) {
      ASSERT_NE(st.st_uid, 65534u) << "a directory swapped in was given away";
    }
    unlink((root_path_ + "/a/new/mark").c_str());
    rmdir((root_path_ + "/a/new").c_str());
  }
  stop.store(true);
  racer.join();
  std::cout << "refused while racing: " << refused << " of 3000\n";
}

TEST_P(MakeDirsTest, RemoveTreeNeverFollowsAndEmptiesLockedDirectories) {
  ASSERT_EQ(mkdir((root_path_ + "/t").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((root_path_ + "/t/locked").c_str(), 0755), 0);
  Touch(root_path_ + "/t/locked/f");
  ASSERT_EQ(chmod((root_path_ + "/t/locked").c_str(), 0), 0);
  ASSERT_EQ(symlink("../../outside", (root_path_ + "/t/out").c_str()), 0);
  RemoveTreeBeneath(root_.get(), "t");
  EXPECT_FALSE(Exists(root_path_ + "/t"));
  EXPECT_TRUE(Exists(outside_ + "/secret"));
  RemoveTreeBeneath(root_.get(), "evil");  // the link goes, not what it points to
  EXPECT_FALSE(Exists(root_path_ + "/evil"));
  EXPECT_TRUE(Exists(outside_ + "/secret"));
}

}  // namespace
}  // namespace bunker::capsule

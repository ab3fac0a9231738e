#include "capsule/tree_walk.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

Fd OpenDir(const std::string& path) {
  return Fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

size_t OpenDescriptors() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  while (::readdir(d) != nullptr) ++n;
  ::closedir(d);
  return n;
}

// What the walk visited, by path.
std::vector<std::string> Walk(const std::string& root, absl::Status* status) {
  std::vector<std::string> seen;
  Fd fd = OpenDir(root);
  EXPECT_TRUE(fd.valid());
  *status = WalkTree(fd.get(), [&](const WalkEntry& e) {
    seen.push_back(e.path);
    return absl::OkStatus();
  });
  return seen;
}

TEST(TreeWalkTest, VisitsEveryEntryOnceWithoutFollowingSymlinks) {
  const std::string dir = testing::MakeTempDir();
  const std::string outside = testing::MakeTempDir();
  testing::WriteFile(outside + "/secret", "s");
  ::mkdir((dir + "/a").c_str(), 0755);
  ::mkdir((dir + "/a/b").c_str(), 0755);
  testing::WriteFile(dir + "/a/b/f", "f");
  testing::WriteFile(dir + "/top", "t");
  ASSERT_EQ(::symlink(outside.c_str(), (dir + "/a/out").c_str()), 0);
  absl::Status s;
  const std::vector<std::string> seen = Walk(dir, &s);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()),
            (std::set<std::string>{"a", "a/b", "a/b/f", "a/out", "top"}));
  EXPECT_EQ(seen.size(), 5u);
}

// A directory's entries all come before anything below it, and its subdirectories are walked
// last listed first (libarchive's order, which the sealed archives keep).
TEST(TreeWalkTest, ListsADirectoryToTheEndThenWalksItsSubdirectoriesLastFirst) {
  const std::string dir = testing::MakeTempDir();
  for (const char* d : {"/p", "/q", "/r"}) {
    ::mkdir((dir + d).c_str(), 0755);
    testing::WriteFile(dir + d + "/x", "x");
  }
  testing::WriteFile(dir + "/f", "f");
  absl::Status s;
  const std::vector<std::string> seen = Walk(dir, &s);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(seen.size(), 7u);
  std::vector<std::string> listed_dirs;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(seen[i].find('/'), std::string::npos) << seen[i];
    if (seen[i] != "f") listed_dirs.push_back(seen[i]);
  }
  ASSERT_EQ(listed_dirs.size(), 3u);
  EXPECT_EQ(seen[4], listed_dirs[2] + "/x");
  EXPECT_EQ(seen[5], listed_dirs[1] + "/x");
  EXPECT_EQ(seen[6], listed_dirs[0] + "/x");
}

// The race of a hostile user who may write a folder of the dataset: between listing "d" (a
// directory) and entering it, "d" becomes a symlink to a folder outside the tree. The walk
// refuses instead of entering it.
TEST(TreeWalkTest, AFolderSwappedForASymlinkBeforeItIsEnteredIsRefused) {
  const std::string dir = testing::MakeTempDir();
  const std::string outside = testing::MakeTempDir();
  testing::WriteFile(outside + "/secret", "s");
  ::mkdir((dir + "/d").c_str(), 0755);
  testing::WriteFile(dir + "/d/inside", "i");
  Fd root = OpenDir(dir);
  std::vector<std::string> seen;
  const absl::Status s = WalkTree(root.get(), [&](const WalkEntry& e) {
    seen.push_back(e.path);
    if (e.path == "d") {
      EXPECT_TRUE(S_ISDIR(e.st.st_mode));
      EXPECT_EQ(::rename((dir + "/d").c_str(), (dir + "/d.moved").c_str()), 0);
      EXPECT_EQ(::symlink(outside.c_str(), (dir + "/d").c_str()), 0);
    }
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_EQ(s.message(), "\"d\" changed while it was being sealed");
  for (const std::string& p : seen) EXPECT_EQ(p.find("secret"), std::string::npos) << p;
}

// Another directory in its place (a rename within reach of the hostile user) is refused too:
// what is walked is what was listed.
TEST(TreeWalkTest, AFolderSwappedForAnotherFolderIsRefused) {
  const std::string dir = testing::MakeTempDir();
  ::mkdir((dir + "/d").c_str(), 0755);
  ::mkdir((dir + "/other").c_str(), 0755);
  Fd root = OpenDir(dir);
  int listed = 0;
  const absl::Status s = WalkTree(root.get(), [&](const WalkEntry& e) {
    if ((e.path == "d" || e.path == "other") && ++listed == 2) {  // both listed: swap them
      EXPECT_EQ(::rename((dir + "/d").c_str(), (dir + "/tmp").c_str()), 0);
      EXPECT_EQ(::rename((dir + "/other").c_str(), (dir + "/d").c_str()), 0);
      EXPECT_EQ(::rename((dir + "/tmp").c_str(), (dir + "/other").c_str()), 0);
    }
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
}

TEST(TreeWalkTest, AFileSwappedForASymlinkIsRefusedWhenOpened) {
  const std::string dir = testing::MakeTempDir();
  const std::string outside = testing::MakeTempDir();
  testing::WriteFile(outside + "/secret", "s");
  testing::WriteFile(dir + "/f", "f");
  Fd root = OpenDir(dir);
  const absl::Status s = WalkTree(root.get(), [&](const WalkEntry& e) -> absl::Status {
    EXPECT_EQ(::unlink((dir + "/f").c_str()), 0);
    EXPECT_EQ(::symlink((outside + "/secret").c_str(), (dir + "/f").c_str()), 0);
    return OpenListedFile(e).status();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_EQ(s.message(), "\"f\" changed while it was being sealed");
}

// A file swapped for a socket (which open refuses with ENXIO) is a change too, not a read error.
TEST(TreeWalkTest, AFileSwappedForASocketIsAChange) {
  const std::string dir = testing::MakeTempDir();
  testing::WriteFile(dir + "/f", "f");
  Fd root = OpenDir(dir);
  const absl::Status s = WalkTree(root.get(), [&](const WalkEntry& e) -> absl::Status {
    EXPECT_EQ(::unlink((dir + "/f").c_str()), 0);
    Fd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    const std::string path = dir + "/f";
    if (path.size() >= sizeof addr.sun_path) return absl::OkStatus();  // folder too deep to test
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(::bind(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    return OpenListedFile(e).status();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_EQ(s.message(), "\"f\" changed while it was being sealed");
}

// 300 levels: descriptors stay bounded (deep directories are closed while their subdirectories
// are walked), and a deep directory reopened afterwards is checked on the way back: here an
// ancestor below the held levels was swapped for a symlink meanwhile.
TEST(TreeWalkTest, DeepTreesKeepFewDescriptorsAndAreCheckedWhenReopened) {
  const std::string dir = testing::MakeTempDir();
  std::string p = dir;
  for (int i = 0; i < 300; ++i) {
    p += "/d";
    ASSERT_EQ(::mkdir(p.c_str(), 0755), 0);
  }
  ASSERT_EQ(::mkdir((p + "/s1").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((p + "/s2").c_str(), 0755), 0);
  const size_t before = OpenDescriptors();
  size_t most = 0;
  absl::Status s;
  {
    Fd root = OpenDir(dir);
    size_t visited = 0;
    s = WalkTree(root.get(), [&](const WalkEntry&) {
      ++visited;
      most = std::max(most, OpenDescriptors());
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(visited, 302u);
  }
  EXPECT_LE(most, before + 1 + kHeldDirectories + 3);

  // Level 20 (below the held ones) becomes a symlink to a copy of itself once the walk is in
  // the first of the two deepest subdirectories: reopening their parent for the second fails.
  std::string level20 = dir;
  for (int i = 0; i < 20; ++i) level20 += "/d";
  Fd root = OpenDir(dir);
  bool swapped = false;
  s = WalkTree(root.get(), [&](const WalkEntry& e) {
    if (!swapped && e.path.size() > 600) {  // inside s1 or s2 (empty: never), or at them
      swapped = true;
      EXPECT_EQ(::rename(level20.c_str(), (level20 + ".moved").c_str()), 0);
      EXPECT_EQ(::symlink("d.moved", level20.c_str()), 0);
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(swapped);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
}

}  // namespace
}  // namespace bunker::capsule

// A mount's file handles (site/file_handles.h): the handles FUSE sends back are the mounting
// user's to choose (he can answer the mount's opens himself), so none is trusted.
#include "site/file_handles.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace bunker::site {
namespace {

constexpr uint64_t kWindow = 4 << 20;
constexpr uint64_t kForged = 0x4141414141414140;  // what a user answered an open with

// Before: the handle was a pointer (new Handle) cast to fuse_file_info::fh; a read cast it back
// and used it, a release deleted it. A user who answered FUSE_OPEN himself with 0x4141414141414140
// crashed the daemon (or had it write and free memory of his choosing); a stale handle was freed
// twice. Now reads and releases with such handles name no state and free nothing.
TEST(FileHandlesTest, ForgedZeroAndStaleHandlesNameNothingAndFreeNothing) {
  FileHandles handles;
  const uint64_t a = handles.Open(7);
  const uint64_t stale = handles.Open(7);
  ASSERT_NE(a, FileHandles::kNone);
  ASSERT_NE(stale, FileHandles::kNone);
  ASSERT_NE(a, stale);
  EXPECT_TRUE(handles.Release(stale));
  ASSERT_EQ(handles.size(), 1u);

  for (uint64_t fh : {kForged, uint64_t{0}, stale}) {
    SCOPED_TRACE(fh);
    // A read through it: without history (only offset 0 is sequential), and it records nothing.
    EXPECT_TRUE(handles.Sequential(fh, 7, 0, kWindow));
    EXPECT_FALSE(handles.Sequential(fh, 7, 1 << 20, kWindow));
    handles.ReadEnded(fh, 7, 1 << 20);
    EXPECT_FALSE(handles.Sequential(fh, 7, 1 << 20, kWindow));
    // Its release frees nothing, however often.
    EXPECT_FALSE(handles.Release(fh));
    EXPECT_FALSE(handles.Release(fh));
    EXPECT_EQ(handles.size(), 1u);
  }

  // The one real handle is untouched and still works.
  EXPECT_FALSE(handles.Sequential(a, 7, 64 << 20, kWindow));
  handles.ReadEnded(a, 7, 64 << 20);
  EXPECT_TRUE(handles.Sequential(a, 7, 64 << 20, kWindow));
  EXPECT_TRUE(handles.Sequential(a, 7, (64 << 20) + kWindow, kWindow));
  EXPECT_FALSE(handles.Sequential(a, 7, (64 << 20) + kWindow + 1, kWindow));
  EXPECT_TRUE(handles.Release(a));
  EXPECT_FALSE(handles.Release(a)) << "released twice";
  EXPECT_EQ(handles.size(), 0u);
}

// A handle is state for the file it was opened for: sent with another file's read (a user can
// answer an open with any handle), it is unknown there and that read changes nothing of it.
TEST(FileHandlesTest, AHandleNamesStateOnlyForItsOwnFile) {
  FileHandles handles;
  const uint64_t fh = handles.Open(7);
  handles.ReadEnded(fh, 7, 1 << 20);
  EXPECT_FALSE(handles.Sequential(fh, 8, 1 << 20, kWindow));
  handles.ReadEnded(fh, 8, 900 << 20);
  EXPECT_TRUE(handles.Sequential(fh, 7, 1 << 20, kWindow));
  // Offsets near the ends of the range do not wrap into "sequential".
  EXPECT_FALSE(handles.Sequential(fh, 7, UINT64_MAX, kWindow));
  handles.ReadEnded(fh, 7, UINT64_MAX - 1);
  EXPECT_FALSE(handles.Sequential(fh, 7, 1, kWindow));
  EXPECT_TRUE(handles.Sequential(fh, 7, UINT64_MAX, kWindow));
}

// Handles are never reused (a stale one never names a later open), and the table is bounded: a
// user who answers releases himself never frees one, so beyond the bound an open gets kNone
// (its reads are served without history) instead of growing the daemon's memory.
TEST(FileHandlesTest, HandlesAreNotReusedAndTheTableIsBounded) {
  FileHandles handles;
  std::vector<uint64_t> seen;
  for (size_t i = 0; i < FileHandles::kMaxHandles; ++i) {
    const uint64_t fh = handles.Open(3);
    ASSERT_NE(fh, FileHandles::kNone);
    seen.push_back(fh);
  }
  EXPECT_EQ(handles.Open(3), FileHandles::kNone);
  EXPECT_EQ(handles.size(), FileHandles::kMaxHandles);
  ASSERT_TRUE(handles.Release(seen.front()));
  const uint64_t next = handles.Open(3);
  ASSERT_NE(next, FileHandles::kNone);
  for (uint64_t old : seen) EXPECT_NE(next, old);
  EXPECT_FALSE(handles.Release(FileHandles::kNone));
}

}  // namespace
}  // namespace bunker::site

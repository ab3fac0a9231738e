#include "capsule/mapped_read.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "capsule/reader.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using testing::Keys;
using testing::PatternBytes;

// The file the truncating hook cuts short, and where: the first read at or past `g_from`
// truncates it to `g_to` bytes, once. Set before the reads; the hook is cleared by each test.
std::string g_path;
uint64_t g_from = 0, g_to = 0;
int g_fd = -1;  // only reads of this descriptor truncate; -1: any
std::atomic<bool> g_truncated{false};
void TruncateOnce(int fd, uint64_t offset) {
  if ((g_fd < 0 || fd == g_fd) && offset >= g_from && !g_truncated.exchange(true)) {
    ASSERT_EQ(::truncate(g_path.c_str(), static_cast<off_t>(g_to)), 0);
  }
}

class MappedReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_truncated = false;
    g_fd = -1;
  }
  void TearDown() override { SetMappedRangeHookForTesting(nullptr); }

  static std::string WriteBytes(const std::vector<uint8_t>& bytes) {
    const std::string path = testing::MakeTempDir() + "/file.bin";
    testing::WriteFile(path, std::string(bytes.begin(), bytes.end()));
    return path;
  }
};

// Sums the bytes: reads every page of the range.
absl::Status ReadAll(absl::Span<const uint8_t> bytes, uint64_t* sum) {
  uint64_t s = 0;
  for (uint8_t b : bytes) s += b;
  *sum = s;
  return absl::OkStatus();
}

TEST_F(MappedReadTest, GivesTheBytesInPlace) {
  const std::vector<uint8_t> bytes = PatternBytes(3 << 20, 7);
  Fd fd(::open(WriteBytes(bytes).c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  const uint64_t offset = 12345;  // not page-aligned
  const size_t size = (1 << 20) + 17;
  absl::Status s = WithMappedRange(fd.get(), offset, size, [&](absl::Span<const uint8_t> got) {
    EXPECT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + offset, bytes.begin() + offset + size));
    EXPECT_EQ(got.size(), size);
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST_F(MappedReadTest, FileTruncatedDuringTheReadFailsClosedAndTheProcessLives) {
  g_path = WriteBytes(PatternBytes(2 << 20, 1));
  g_from = 0;
  g_to = 4096;
  SetMappedRangeHookForTesting(TruncateOnce);
  Fd fd(::open(g_path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  uint64_t sum = 0;
  absl::Status s = WithMappedRange(fd.get(), 0, 2 << 20, [&](absl::Span<const uint8_t> got) {
    return ReadAll(got, &sum);  // faults past 4096: zeros, and fn "succeeds"
  });
  EXPECT_TRUE(g_truncated.load());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_EQ(s.message(), "file shrank while being read");
  // And the next read of what is left works as before.
  SetMappedRangeHookForTesting(nullptr);
  s = WithMappedRange(fd.get(), 0, 4096, [&](absl::Span<const uint8_t> got) {
    return ReadAll(got, &sum);
  });
  EXPECT_TRUE(s.ok()) << s;
}

// One reader's file is cut short while other threads keep reading theirs (a daemon serving
// others): only that reader fails.
TEST_F(MappedReadTest, OnlyTheReaderOfTheTruncatedFileFails) {
  const std::vector<uint8_t> other = PatternBytes(1 << 20, 2);
  const std::string other_path = WriteBytes(other);
  g_path = WriteBytes(PatternBytes(1 << 20, 3));
  g_from = 0;
  g_to = 0;
  Fd victim(::open(g_path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(victim.valid());
  std::atomic<bool> stop{false};
  std::atomic<int> good{0}, bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      Fd fd(::open(other_path.c_str(), O_RDONLY | O_CLOEXEC));
      while (!stop.load() || good.load() < 8) {
        uint64_t sum = 0;
        absl::Status s = WithMappedRange(fd.get(), 0, other.size(),
                                         [&](absl::Span<const uint8_t> b) { return ReadAll(b, &sum); });
        (s.ok() ? good : bad).fetch_add(1);
      }
    });
  }
  // Only the victim's read truncates; the others read a file nobody touches.
  g_fd = victim.get();
  SetMappedRangeHookForTesting(TruncateOnce);
  uint64_t sum = 0;
  absl::Status s = WithMappedRange(victim.get(), 0, 1 << 20,
                                   [&](absl::Span<const uint8_t> b) { return ReadAll(b, &sum); });
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_GE(good.load(), 8);
  EXPECT_EQ(bad.load(), 0);
}

// The handler answers only faults in a guarded range: any other SIGBUS still ends the process
// (by the default action, or by a sanitizer's report when one handles SIGBUS).
TEST_F(MappedReadTest, AnUnguardedFaultStillKills) {
  // Install the handler first.
  const std::string path = WriteBytes(PatternBytes(8192, 4));
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(WithMappedRange(fd.get(), 0, 8192, [](absl::Span<const uint8_t>) {
                return absl::OkStatus();
              }).ok());
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        void* p = ::mmap(nullptr, 8192, PROT_READ, MAP_SHARED, fd.get(), 0);
        if (p == MAP_FAILED || ::truncate(path.c_str(), 0) != 0) ::_exit(0);
        volatile uint8_t b = static_cast<const uint8_t*>(p)[4096];
        (void)b;
        ::_exit(0);  // survived: the fault was swallowed
      },
      [](int status) {
        return (WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) ||
               (WIFEXITED(status) && WEXITSTATUS(status) != 0);
      },
      "");
}

// The reader, end to end: a capsule file cut short while VerifyChunks hashes it in place.
TEST_F(MappedReadTest, VerifyOfACapsuleTruncatedUnderTheReaderFailsClosed) {
  Keys keys;
  constexpr uint32_t kChunk = 1 << 20;  // large enough to be mapped
  const std::vector<uint8_t> capsule =
      testing::SealRaw(keys, PatternBytes(6 * kChunk, 5), kChunk);
  g_path = WriteBytes(capsule);
  const crypto::PublicIdentity issuer = keys.issuer.public_identity();
  {  // Untouched, it verifies through the mapping.
    auto file = OpenFile(g_path);
    ASSERT_TRUE(file.ok());
    auto r = CapsuleReader::Open(std::move(*file), absl::MakeConstSpan(&issuer, 1));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE((*r)->VerifyChunks(2, nullptr).ok());
  }
  auto file = OpenFile(g_path);
  ASSERT_TRUE(file.ok());
  auto r = CapsuleReader::Open(std::move(*file), absl::MakeConstSpan(&issuer, 1));
  ASSERT_TRUE(r.ok()) << r.status();
  g_from = (*r)->geometry().ChunkOffset(2);  // after chunks 0 and 1 were mapped
  g_to = (*r)->geometry().ChunkOffset(1) + 100;
  SetMappedRangeHookForTesting(TruncateOnce);
  absl::Status s = (*r)->VerifyChunks(2, nullptr);
  EXPECT_TRUE(g_truncated.load());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("capsule file changed while being read"), std::string::npos) << s;
}

}  // namespace
}  // namespace bunker::capsule

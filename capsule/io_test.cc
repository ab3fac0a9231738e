#include "capsule/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

TEST(AtomicFileWriterTest, NothingIsVisibleUntilCommit) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/out.bin";
  {
    auto w = AtomicFileWriter::Create(path, 0600);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Append(Bytes("hello")).ok());
    EXPECT_TRUE(testing::ListDir(dir).empty()) << "a partial file is visible";
    ASSERT_TRUE((*w)->Commit().ok());
  }
  EXPECT_EQ(testing::ReadFile(path), "hello");
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(testing::ListDir(dir), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFileWriterTest, AbandonedWriteLeavesNothing) {
  const std::string dir = testing::MakeTempDir();
  {
    auto w = AtomicFileWriter::Create(dir + "/x", 0644);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(Bytes(std::string(3 << 20, 'x'))).ok());
  }
  EXPECT_TRUE(testing::ListDir(dir).empty());
}

TEST(AtomicFileWriterTest, NeverReplacesAnExistingFile) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/taken";
  testing::WriteFile(path, "mine");
  EXPECT_EQ(AtomicFileWriter::Create(path).status().code(), absl::StatusCode::kAlreadyExists);
  // A file that appears while writing is not replaced either.
  auto w = AtomicFileWriter::Create(dir + "/late");
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(Bytes("theirs")).ok());
  testing::WriteFile(dir + "/late", "first");
  EXPECT_EQ((*w)->Commit().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(testing::ReadFile(dir + "/late"), "first");
}

TEST(ReadSmallFileTest, RefusesFifosWithoutHangingAndBigFiles) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_EQ(::mkfifo((dir + "/fifo").c_str(), 0600), 0);
  EXPECT_EQ(ReadSmallFile(dir + "/fifo", 100).status().code(), absl::StatusCode::kInvalidArgument);
  testing::WriteFile(dir + "/big", std::string(101, 'b'));
  EXPECT_EQ(ReadSmallFile(dir + "/big", 100).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadSmallFile(dir + "/none", 100).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace bunker::capsule

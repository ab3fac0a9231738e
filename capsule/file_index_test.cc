#include "capsule/file_index.h"

#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

class VectorSource : public ByteSource {
 public:
  VectorSource(std::vector<uint8_t> bytes, size_t piece) : bytes_(std::move(bytes)), piece_(piece) {}
  absl::StatusOr<absl::Span<const uint8_t>> Next() override {
    const size_t n = std::min(piece_, bytes_.size() - pos_);
    auto out = absl::MakeConstSpan(bytes_.data() + pos_, n);
    pos_ += n;
    return out;
  }

 private:
  std::vector<uint8_t> bytes_;
  size_t piece_;
  size_t pos_ = 0;
};

std::vector<uint8_t> SampleIndex(int n) {
  std::vector<uint8_t> out;
  for (int i = 0; i < n; ++i) {
    FileEntry e;
    e.path = "dir/file" + std::to_string(i);
    e.size = i;
    e.offset = 512 * i;
    e.sha256.fill(static_cast<uint8_t>(i));
    e.mode = 0644;
    auto r = EncodeIndexRecord(e);
    out.insert(out.end(), r.begin(), r.end());
  }
  return out;
}

TEST(FileIndexTest, RoundTripInAnyPieceSize) {
  for (size_t piece : {1, 3, 64, 100000}) {
    VectorSource src(SampleIndex(20), piece);
    IndexReader reader(&src, 20);
    for (int i = 0; i < 20; ++i) {
      auto e = reader.Next();
      ASSERT_TRUE(e.ok() && e->has_value()) << e.status();
      EXPECT_EQ((*e)->path, "dir/file" + std::to_string(i));
      EXPECT_EQ((*e)->offset, 512u * i);
    }
    auto end = reader.Next();
    ASSERT_TRUE(end.ok());
    EXPECT_FALSE(end->has_value());
  }
}

TEST(FileIndexTest, CountMismatchTruncationAndGarbageAreDataLoss) {
  {
    VectorSource src(SampleIndex(3), 7);
    IndexReader reader(&src, 4);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader.Next().ok());
    EXPECT_TRUE(absl::IsDataLoss(reader.Next().status()));
  }
  {
    VectorSource src(SampleIndex(3), 7);
    IndexReader reader(&src, 2);
    ASSERT_TRUE(reader.Next().ok());
    ASSERT_TRUE(reader.Next().ok());
    EXPECT_TRUE(absl::IsDataLoss(reader.Next().status()));
  }
  auto bytes = SampleIndex(2);
  bytes.resize(bytes.size() - 3);
  VectorSource truncated(bytes, 5);
  IndexReader r2(&truncated, 2);
  ASSERT_TRUE(r2.Next().ok());
  EXPECT_TRUE(absl::IsDataLoss(r2.Next().status()));
  VectorSource huge(std::vector<uint8_t>{0x7f, 0xff, 0xff, 0xf8, 0, 0}, 6);
  IndexReader r3(&huge, 1);
  EXPECT_TRUE(absl::IsDataLoss(r3.Next().status()));
}

TEST(FileIndexTest, FieldsThatDoNotFitTheTypeAreRejected) {
  std::vector<FileEntry> bad(6);
  bad[0].path = "d";
  bad[0].type = FileEntry::Type::kDirectory;
  bad[0].size = 5;  // a directory with a size
  bad[1].path = "f";
  bad[1].link_target = "x";  // a file with a link target
  bad[2].path = "l";
  bad[2].type = FileEntry::Type::kSymlink;  // a symlink without a target
  bad[3].path = "m";
  bad[3].mode = 04755;  // setuid
  bad[4].path = "h";
  bad[4].type = FileEntry::Type::kHardlink;
  bad[4].link_target = "../x";  // an unsafe hard link target
  bad[5].path = "o";
  bad[5].type = FileEntry::Type::kSymlink;
  bad[5].link_target = "t";
  bad[5].offset = 7;  // a symlink with an offset
  for (const FileEntry& e : bad) {
    VectorSource src(EncodeIndexRecord(e), 100);
    IndexReader reader(&src, 1);
    EXPECT_TRUE(absl::IsDataLoss(reader.Next().status())) << e.path;
  }
}

TEST(FileIndexTest, UnsafePathInIndexIsRejected) {
  FileEntry e;
  e.path = "../escape";
  auto bytes = EncodeIndexRecord(e);
  VectorSource src(bytes, 100);
  IndexReader reader(&src, 1);
  EXPECT_TRUE(absl::IsDataLoss(reader.Next().status()));
}

}  // namespace
}  // namespace bunker::capsule

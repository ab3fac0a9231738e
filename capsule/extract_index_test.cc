// Extraction against the raw tar headers (unknown typeflags, sizes of entries without data),
// against the file index (ExtractOptions::index), CheckArchive, and error precedence
// (spec/FORMAT.md "Extraction", "Agreement with the index", "Error precedence").
#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "capsule/extract.h"
#include "capsule/file_index.h"
#include "capsule/tar_headers.h"
#include "crypto/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A ustar header block written by hand, so that any typeflag and size field can be tested.
std::string Header(const std::string& name, char typeflag, uint64_t size,
                   const std::string& linkname = "", int mode = 0644) {
  std::string h(512, '\0');
  std::memcpy(&h[0], name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(&h[100], 8, "%07o", mode);
  std::snprintf(&h[108], 8, "%07o", 0);
  std::snprintf(&h[116], 8, "%07o", 0);
  std::snprintf(&h[124], 12, "%011llo", static_cast<unsigned long long>(size));
  std::snprintf(&h[136], 12, "%011o", 1600000000);
  h[156] = typeflag;
  std::memcpy(&h[157], linkname.data(), std::min<size_t>(linkname.size(), 100));
  std::memcpy(&h[257], "ustar", 6);
  h[263] = '0';
  h[264] = '0';
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(&h[148], 8, "%06o", sum);
  h[155] = ' ';
  return h;
}

std::string Padded(const std::string& data) {
  return data + std::string((512 - data.size() % 512) % 512, '\0');
}

std::string FileEntryBytes(const std::string& name, const std::string& data, char type = '0') {
  return Header(name, type, data.size()) + Padded(data);
}

// A pax extended header ('x') holding `records` ("path=..." etc.).
std::string Pax(const std::string& records) {
  return Header("PaxHeader/x", 'x', records.size()) + Padded(records);
}
std::string PaxRecord(const std::string& key, const std::string& value) {
  const std::string body = " " + key + "=" + value + "\n";
  size_t len = body.size() + 1;
  while (std::to_string(len).size() + body.size() != len) ++len;
  return std::to_string(len) + body;
}

const std::string kEnd(1024, '\0');

// Hands out `data` in pieces of `piece` bytes; fails with kDataLoss at byte `fail_at`.
class Pieces : public ByteSource {
 public:
  Pieces(std::string data, size_t piece, size_t fail_at = std::string::npos)
      : data_(std::move(data)), piece_(piece), fail_at_(fail_at) {}
  absl::StatusOr<absl::Span<const uint8_t>> Next() override {
    if (pos_ >= fail_at_) return absl::DataLossError("chunk 2 does not authenticate");
    size_t n = std::min(piece_, data_.size() - pos_);
    if (fail_at_ != std::string::npos) n = std::min(n, fail_at_ - pos_);
    auto out = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data_.data()) + pos_, n);
    pos_ += n;
    return out;
  }

 private:
  std::string data_;
  size_t piece_;
  size_t fail_at_;
  size_t pos_ = 0;
};

absl::Status Extract(const std::string& tar, const ExtractOptions& options = {},
                     size_t piece = 700, std::string* dest_out = nullptr) {
  const std::string dest = testing::MakeTempDir() + "/out";
  if (dest_out != nullptr) *dest_out = dest;
  Pieces source(tar, piece);
  return ExtractArchive(&source, dest, options).status();
}

FileEntry IndexFile(const std::string& path, const std::string& data, int mode = 0644) {
  FileEntry e;
  e.path = path;
  e.type = FileEntry::Type::kFile;
  e.size = data.size();
  e.offset = 512;
  e.sha256 = crypto::Sha256::Hash(data);
  e.mode = static_cast<uint32_t>(mode);
  e.mtime = 1600000000;
  return e;
}

// spec/FORMAT.md "Entries": a header without the ustar magic (v7), or a second pax 'x' header
// before one entry (libarchive would keep only the second's records), is malformed; one 'x'
// header after a global 'g' header is fine, and the 'g' records apply to nothing.
TEST(TarHeaderTapTest, V7HeadersAndASecondPaxHeaderAreMalformed) {
  std::string v7 = FileEntryBytes("a.txt", "hello");
  std::memset(&v7[257], 0, 8);
  std::memset(&v7[148], ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) sum += static_cast<unsigned char>(v7[i]);
  std::snprintf(&v7[148], 8, "%06o", sum);
  absl::Status s = Extract(v7 + kEnd);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("v7"));

  s = Extract(Pax(PaxRecord("mtime", "5")) + Pax(PaxRecord("path", "b.txt")) +
              FileEntryBytes("a.txt", "hello") + kEnd);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("more than one pax extended header"));

  std::string global = Pax(PaxRecord("path", "glob.txt"));
  global[156] = 'g';
  std::memset(&global[148], ' ', 8);
  sum = 0;
  for (size_t i = 0; i < 512; ++i) sum += static_cast<unsigned char>(global[i]);
  std::snprintf(&global[148], 8, "%06o", sum);
  std::string dest;
  s = Extract(global + Pax(PaxRecord("mtime", "5")) + FileEntryBytes("a.txt", "hello") + kEnd,
              {}, 700, &dest);
  ASSERT_TRUE(s.ok()) << s;
  struct stat st;
  ASSERT_EQ(::stat((dest + "/a.txt").c_str(), &st), 0);  // not renamed by the global path
  EXPECT_EQ(st.st_mtime, 5);
}

// spec/FORMAT.md "Extraction", "End of archive": the first zero block ends the archive, and
// must lie within archiveSize; what follows it is not inspected.
TEST(TarHeaderTapTest, EndOfArchiveIsTheFirstZeroBlockWithinArchiveSize) {
  const std::string entry = FileEntryBytes("a.txt", "hello");  // 1024 bytes
  const std::string junk(512, 'x');
  // One zero block, then junk: accepted, with or without the size.
  EXPECT_TRUE(Extract(entry + std::string(512, '\0') + junk).ok());
  ExtractOptions sized;
  sized.archive_size = 1536;  // the entry and one zero block
  EXPECT_TRUE(Extract(entry + std::string(512, '\0') + junk, sized).ok());
  sized.archive_size = 2048;
  EXPECT_TRUE(Extract(entry + kEnd, sized).ok());
  // The marker past archiveSize (the archive's end read from the index's bytes): refused.
  sized.archive_size = 1024;
  absl::Status s = Extract(entry + kEnd, sized);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("no end-of-archive marker within"));
  // No zero block at all: truncated.
  EXPECT_EQ(Extract(entry).code(), absl::StatusCode::kDataLoss);
}

TEST(TarHeaderTapTest, ParsesOctalAndBase256Numbers) {
  const uint8_t octal[] = {' ', '0', '1', '7', ' ', 0};
  EXPECT_EQ(*ParseTarNumber(octal), 15u);
  const uint8_t b256[] = {0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0};
  EXPECT_EQ(*ParseTarNumber(b256), uint64_t{2} << 32);
  const uint8_t bad[] = {'1', '9', 0};
  EXPECT_EQ(ParseTarNumber(bad).status().code(), absl::StatusCode::kDataLoss);
}

TEST(TarHeaderTapTest, SkippedDataIsNotHeld) {
  TarHeaderTap tap;
  const std::string a = FileEntryBytes("a", std::string(5000, 'x'));
  tap.Feed(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(a.data()), 600));
  auto h = tap.Inspect(0);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->typeflag, '0');
  EXPECT_EQ(h->size_field, 5000u);
  tap.Skip(h->data_start, 5120);
  tap.Feed(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(a.data()) + 600, a.size() - 600));
  // Asking for a dropped byte fails; it never reads other bytes.
  EXPECT_EQ(tap.Inspect(0).status().code(), absl::StatusCode::kDataLoss);
}

// Regression (issue 10, item 2): libarchive reads an unknown typeflag as a regular file.
TEST(ExtractRawTest, UnknownTypeflagIsInvalidArgument) {
  std::string dest;
  const absl::Status s = Extract(FileEntryBytes("z", "data", 'Z') + kEnd, {}, 700, &dest);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("tar type 'Z'"));
  EXPECT_FALSE(testing::Exists(dest));
}

TEST(ExtractRawTest, UnknownTypeflagBehindAPaxHeaderIsInvalidArgument) {
  for (size_t piece : {1, 511, 512, 4096}) {
    const absl::Status s =
        Extract(Pax(PaxRecord("path", "long/name")) + FileEntryBytes("z", "data", '7') + kEnd, {},
                piece);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
}

TEST(ExtractRawTest, GnuDumpdirAndVolumeLabelAreRefused) {
  EXPECT_EQ(Extract(FileEntryBytes("d", "xyz", 'D') + kEnd).code(),
            absl::StatusCode::kInvalidArgument);
  // libarchive skips a volume label as metadata; the entry after it starts at the label.
  EXPECT_EQ(Extract(FileEntryBytes("label", "", 'V') + FileEntryBytes("f", "x") + kEnd).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ExtractRawTest, OldStyleRegularFileIsAccepted) {
  std::string dest;
  ASSERT_TRUE(Extract(FileEntryBytes("f", "hello", '\0') + kEnd, {}, 700, &dest).ok());
  EXPECT_EQ(testing::ReadFile(dest + "/f"), "hello");
}

// Regression (item 3): in a ustar (non-pax) archive libarchive ignores a hard link's size.
TEST(ExtractRawTest, HardLinkWithASizeIsInvalidArgumentInAnyFormat) {
  const std::string tar = FileEntryBytes("f", "hello") + Header("h", '1', 5, "f") + kEnd;
  const absl::Status s = Extract(tar);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("hard link with data"));
}

TEST(ExtractRawTest, DirectoryOrSymlinkWithASizeIsInvalidArgument) {
  EXPECT_EQ(Extract(Header("d/", '5', 512) + std::string(512, 'x') + kEnd).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Extract(Header("l", '2', 1, "f") + kEnd).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ExtractRawTest, SymlinkWithoutTargetIsInvalidArgument) {
  const absl::Status s = Extract(Header("l", '2', 0, "") + kEnd);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(ExtractRawTest, HardLinkToAnEarlierFileIsAccepted) {
  std::string dest;
  ASSERT_TRUE(
      Extract(FileEntryBytes("f", "hello") + Header("h", '1', 0, "f") + kEnd, {}, 700, &dest)
          .ok());
  struct stat a, b;
  ASSERT_EQ(::stat((dest + "/f").c_str(), &a), 0);
  ASSERT_EQ(::stat((dest + "/h").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
}

// Item 1: the archive must agree with the index the decision was made over.
TEST(ExtractIndexTest, AgreeingIndexExtracts) {
  const std::vector<FileEntry> index = {IndexFile("f", "hello")};
  ExtractOptions o;
  o.index = &index;
  std::string dest;
  ASSERT_TRUE(Extract(FileEntryBytes("f", "hello") + kEnd, o, 700, &dest).ok());
  EXPECT_EQ(testing::ReadFile(dest + "/f"), "hello");
}

TEST(ExtractIndexTest, EveryDisagreementIsDataLoss) {
  const std::string tar = FileEntryBytes("f", "hello") + kEnd;
  FileEntry other_path = IndexFile("g", "hello");
  FileEntry other_digest = IndexFile("f", "HELLO");
  FileEntry other_size = IndexFile("f", "hello!");
  FileEntry other_mode = IndexFile("f", "hello", 0600);
  FileEntry dir;
  dir.path = "f";
  dir.type = FileEntry::Type::kDirectory;
  dir.mode = 0644;
  const std::vector<std::vector<FileEntry>> cases = {
      {},  // an empty index with a non-empty archive
      {other_path}, {other_digest}, {other_size}, {other_mode}, {dir},
      {IndexFile("f", "hello"), IndexFile("g", "")},  // an index entry the archive lacks
  };
  for (const auto& index : cases) {
    ExtractOptions o;
    o.index = &index;
    std::string dest;
    const absl::Status s = Extract(tar, o, 700, &dest);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_FALSE(testing::Exists(dest));
  }
}

TEST(ExtractIndexTest, AnEntryOutsideTheSelectionMustAgreeToo) {
  const std::string tar = FileEntryBytes("a", "1") + FileEntryBytes("secret", "2") + kEnd;
  const std::vector<FileEntry> index = {IndexFile("a", "1")};  // "secret" is not listed
  ExtractOptions o;
  o.index = &index;
  o.only = *PathSelection::Parse({"a"});
  EXPECT_EQ(Extract(tar, o).code(), absl::StatusCode::kDataLoss);
}

TEST(ExtractIndexTest, CheckArchiveAppliesTheSameRulesAndWritesNothing) {
  const std::vector<FileEntry> good = {IndexFile("f", "hello")};
  const std::vector<FileEntry> bad = {IndexFile("f", "HELLO")};
  ExtractOptions o;
  o.index = &good;
  Pieces ok(FileEntryBytes("f", "hello") + kEnd, 100);
  EXPECT_TRUE(CheckArchive(&ok, o).ok());
  o.index = &bad;
  Pieces wrong(FileEntryBytes("f", "hello") + kEnd, 100);
  EXPECT_EQ(CheckArchive(&wrong, o).code(), absl::StatusCode::kDataLoss);
  Pieces unsafe(FileEntryBytes("../f", "hello") + kEnd, 100);
  EXPECT_EQ(CheckArchive(&unsafe, {}).code(), absl::StatusCode::kInvalidArgument);
  Pieces empty("", 100);
  EXPECT_EQ(CheckArchive(&empty, {}).code(), absl::StatusCode::kDataLoss);
}

// Item 4: an entry refused early does not hide a later authentication failure.
TEST(ExtractPrecedenceTest, AuthenticationFailureLaterInTheStreamWins) {
  const std::string tar =
      FileEntryBytes("../evil", "x") + FileEntryBytes("big", std::string(9000, 'b')) + kEnd;
  const std::string dest = testing::MakeTempDir() + "/out";
  Pieces source(tar, 4096, /*fail_at=*/8192);
  const absl::Status s = ExtractArchive(&source, dest, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not authenticate"));
  // Without the failure, the entry's own class.
  EXPECT_EQ(Extract(tar).code(), absl::StatusCode::kInvalidArgument);
}

// Item 13: an empty payload is no archive; an archive of only the end marker is empty.
TEST(ExtractRawTest, EmptyArchiveAndEmptyPayload) {
  EXPECT_EQ(Extract("").code(), absl::StatusCode::kDataLoss);
  std::string dest;
  ASSERT_TRUE(Extract(kEnd, {}, 700, &dest).ok());
  EXPECT_THAT(testing::ListDir(dest), IsEmpty());
}

}  // namespace
}  // namespace bunker::capsule

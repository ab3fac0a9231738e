#include "capsule/file_index.h"

#include <cstring>
#include <random>

#include "capnp/message.h"
#include "capsule/format.h"
#include "capsule/strict_decode.h"
#include "gtest/gtest.h"
#include "spec/capsule.capnp.h"

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


// Entries of every shape the encoder can meet: each type, empty and long texts (a text whose
// length is a multiple of 8 needs a whole word for its NUL), zero fields (canonical form drops
// trailing zero words), the largest values.
std::vector<FileEntry> ShapesOfEntries() {
  std::vector<FileEntry> out;
  const std::string texts[] = {"", "a", "dir/f10000", "1234567", "12345678", std::string(300, 'x'),
                               "caf\xc3\xa9/\xe2\x9c\x93"};
  const uint64_t numbers[] = {0, 1, 0xffffffffffffffffu};
  int k = 0;
  for (int type = 0; type <= 3; ++type) {
    for (const std::string& path : texts) {
      for (const std::string& target : texts) {
        for (uint64_t number : numbers) {
          FileEntry e;
          e.type = static_cast<FileEntry::Type>(type);
          e.path = path;
          e.link_target = target;
          e.size = (k % 3 == 0) ? number : 0;
          e.offset = (k % 2 == 0) ? number : 0;
          e.mode = (k % 5 == 0) ? 0 : static_cast<uint32_t>(number);
          e.mtime = (k % 7 == 0) ? 0 : static_cast<int64_t>(number);
          e.sha256.fill(static_cast<uint8_t>(k));
          out.push_back(e);
          ++k;
        }
      }
    }
  }
  return out;
}

// How the reader checked a record before ParseIndexEntry: capnp's canonical check, the fields
// read through the generated reader, and a re-encoding with EncodeIndexRecord.
absl::StatusOr<FileEntry> DecodeWithCapnp(absl::Span<const uint8_t> record) {
  auto read = [](schema::IndexEntry::Reader root) -> absl::StatusOr<FileEntry> {
    FileEntry e;
    auto path = root.getPath();
    e.path.assign(path.begin(), path.size());
    const uint16_t type = static_cast<uint16_t>(root.getType());
    if (type > 3) return absl::DataLossError("bad type");
    e.type = static_cast<FileEntry::Type>(type);
    e.size = root.getSize();
    e.offset = root.getOffset();
    auto digest = root.getSha256();
    if (e.type == FileEntry::Type::kFile) {
      if (digest.size() != e.sha256.size()) return absl::DataLossError("no digest");
      std::memcpy(e.sha256.data(), digest.begin(), digest.size());
    }
    e.mode = root.getMode();
    e.mtime = root.getMtime();
    auto target = root.getLinkTarget();
    e.link_target.assign(target.begin(), target.size());
    return e;
  };
  auto encode = [](const FileEntry& e) {
    std::vector<uint8_t> again = EncodeIndexRecord(e);
    again.erase(again.begin(), again.begin() + 4);
    return again;
  };
  return StrictDecode<schema::IndexEntry>(
      record, StrictDecodeLimits{kMaxIndexRecordSize, 4, 8}, read, encode,
      [](StrictDecodeFailure) { return absl::DataLossError("refused"); });
}

void ExpectSameEntry(const FileEntry& a, const FileEntry& b) {
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.offset, b.offset);
  EXPECT_EQ(a.sha256, b.sha256);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.mtime, b.mtime);
  EXPECT_EQ(a.link_target, b.link_target);
}

TEST(FileIndexTest, DirectEncodingIsCapnpCanonicalForm) {
  std::vector<uint8_t> direct;
  for (const FileEntry& e : ShapesOfEntries()) {
    const std::vector<uint8_t> record = EncodeIndexRecord(e);
    EncodeCanonicalIndexEntry(e, &direct);
    ASSERT_EQ(std::vector<uint8_t>(record.begin() + 4, record.end()), direct)
        << "type " << static_cast<int>(e.type) << " path '" << e.path << "' target '"
        << e.link_target << "'";
    std::vector<uint8_t> scratch;
    absl::StatusOr<FileEntry> parsed = ParseIndexEntry(direct, 0, &scratch);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    // A non-file's digest is not part of its encoding.
    FileEntry expected = e;
    if (e.type != FileEntry::Type::kFile) expected.sha256.fill(0);
    ExpectSameEntry(*parsed, expected);
  }
}

// The direct parser accepts exactly what capnp's strict decoding accepted, with the same
// value: every single-byte change of a set of records (each byte set to several values), every
// truncation to a whole word, and a zero word appended.
TEST(FileIndexTest, DirectParserAgreesWithCapnpOnMutatedRecords) {
  std::vector<FileEntry> entries(4);
  entries[0].path = "dirs/f10000";
  entries[0].size = 2048;
  entries[0].offset = 0x12345;
  entries[0].mode = 0644;
  entries[0].mtime = 1700000000;
  entries[0].sha256.fill(0xab);
  entries[1].path = "d";
  entries[1].type = FileEntry::Type::kDirectory;
  entries[1].mode = 0755;
  entries[2].path = "a/link";
  entries[2].type = FileEntry::Type::kSymlink;
  entries[2].link_target = "../b";
  entries[3].path = "h";
  entries[3].type = FileEntry::Type::kHardlink;
  entries[3].link_target = "dirs/f10000";
  entries[3].mtime = -1;
  std::vector<uint8_t> scratch;
  size_t accepted = 0, checked = 0;
  auto compare = [&](const std::vector<uint8_t>& bytes, const std::string& what) {
    absl::StatusOr<FileEntry> direct = ParseIndexEntry(bytes, 0, &scratch);
    absl::StatusOr<FileEntry> capnp = DecodeWithCapnp(bytes);
    ++checked;
    ASSERT_EQ(direct.ok(), capnp.ok()) << what << ": direct " << direct.status() << ", capnp "
                                       << capnp.status();
    if (direct.ok()) {
      ++accepted;
      ExpectSameEntry(*direct, *capnp);
    } else {
      EXPECT_TRUE(absl::IsDataLoss(direct.status())) << what;
    }
  };
  const uint8_t values[] = {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x40, 0x80, 0xff, 0xfe, 0x7f};
  for (const FileEntry& e : entries) {
    std::vector<uint8_t> record = EncodeIndexRecord(e);
    record.erase(record.begin(), record.begin() + 4);
    compare(record, "as written");
    for (size_t i = 0; i < record.size(); ++i) {
      for (uint8_t v : values) {
        if (record[i] == v) continue;
        std::vector<uint8_t> mutated = record;
        mutated[i] = v;
        compare(mutated, "byte " + std::to_string(i) + " = " + std::to_string(v));
        mutated[i] = record[i] ^ v;
        compare(mutated, "byte " + std::to_string(i) + " ^= " + std::to_string(v));
      }
    }
    for (size_t words = 1; words < record.size() / 8; ++words) {
      compare(std::vector<uint8_t>(record.begin(), record.begin() + 8 * words),
              "cut to " + std::to_string(words) + " words");
    }
    std::vector<uint8_t> longer = record;
    longer.insert(longer.end(), 8, 0);
    compare(longer, "a zero word appended");
  }
  // Random records, mostly garbage, a few built around a valid root pointer.
  std::mt19937_64 rng(9);
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> bytes(8 * (1 + rng() % 12));
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng() % 4 == 0 ? rng() : 0);
    if (i % 2 == 0) {  // a struct pointer at offset 0 with small sections
      const uint64_t root = ((rng() % 6) << 32) | ((rng() % 5) << 48);
      for (int k = 0; k < 8; ++k) bytes[k] = static_cast<uint8_t>(root >> (8 * k));
    }
    compare(bytes, "random record " + std::to_string(i));
  }
  EXPECT_GT(accepted, 4u);
  EXPECT_GT(checked, 20000u);
}

// spec/FORMAT.md 10 "File index": three records that capnp reads without complaint but that
// are not what a writer emits, so the reader refuses them as not canonical.
TEST(FileIndexTest, NonCanonicalExtrasOfTheSpecAreRefused) {
  auto build = [](auto fill) {
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<schema::IndexEntry>();
    fill(root);
    // Canonical form, so that only the point under test is off.
    kj::Array<capnp::word> words = capnp::canonicalize(root.asReader());
    auto bytes = words.asBytes();
    return std::vector<uint8_t>(bytes.begin(), bytes.end());
  };
  std::vector<uint8_t> scratch;
  auto expect_refused = [&scratch](const std::vector<uint8_t>& record, const char* what) {
    absl::StatusOr<FileEntry> parsed = ParseIndexEntry(record, 0, &scratch);
    EXPECT_TRUE(absl::IsDataLoss(parsed.status())) << what << ": " << parsed.status();
  };
  const std::vector<uint8_t> dir = build([](schema::IndexEntry::Builder e) {
    e.setPath("d");
    e.setType(schema::IndexEntry::Type::DIRECTORY);
    e.setMode(0755);
  });
  ASSERT_TRUE(ParseIndexEntry(dir, 0, &scratch).ok());
  // Bytes 2-3 of the data section, between `type` and `mode` (word 1 of the record).
  std::vector<uint8_t> padded = dir;
  padded[8 + 2] = 1;
  expect_refused(padded, "non-zero bytes 2-3");
  expect_refused(build([](schema::IndexEntry::Builder e) {
                   e.setPath("d");
                   e.setType(schema::IndexEntry::Type::DIRECTORY);
                   e.setMode(0755);
                   const uint8_t digest[32] = {};
                   e.setSha256(kj::arrayPtr(digest, sizeof digest));
                 }),
                 "a directory with a sha256");
  expect_refused(build([](schema::IndexEntry::Builder e) {
                   e.setPath("d");
                   e.setType(schema::IndexEntry::Type::DIRECTORY);
                   e.setMode(0755);
                   e.initSha256(0);
                 }),
                 "a directory with an empty sha256");
  expect_refused(build([](schema::IndexEntry::Builder e) {
                   e.setPath("l");
                   e.setType(schema::IndexEntry::Type::SYMLINK);
                   e.setMode(0777);
                   e.setLinkTarget("");
                 }),
                 "an empty but present linkTarget");
}

}  // namespace
}  // namespace bunker::capsule

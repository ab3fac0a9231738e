#include "capsule/archive_builder.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include "absl/strings/ascii.h"
#include "capsule/capsule_test_util.h"
#include "capsule/file_index.h"
#include "capsule/reader.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using testing::Keys;

std::vector<uint8_t> ReadPayload(const CapsuleReader& r, const PayloadKey& key, uint64_t begin,
                                 uint64_t end) {
  auto stream = r.Stream(key, begin, end, 2);
  EXPECT_TRUE(stream.ok());
  std::vector<uint8_t> out;
  while (true) {
    auto piece = (*stream)->Next();
    EXPECT_TRUE(piece.ok()) << piece.status();
    if (!piece.ok() || piece->empty()) break;
    out.insert(out.end(), piece->begin(), piece->end());
  }
  return out;
}

std::string MakeDataset() {
  const std::string dir = testing::MakeTempDir() + "/data";
  ::mkdir(dir.c_str(), 0755);
  ::mkdir((dir + "/train").c_str(), 0750);
  ::mkdir((dir + "/train/deep").c_str(), 0755);
  testing::WriteFile(dir + "/README", "hello\n");
  testing::WriteFile(dir + "/empty", "");
  testing::WriteFile(dir + "/train/a.bin", std::string(10000, 'a'), 0600);
  const auto big = testing::PatternBytes(3 * 4096 + 123, 42);
  testing::WriteFile(dir + "/train/deep/big.bin", std::string(big.begin(), big.end()));
  ::symlink("train/a.bin", (dir + "/link").c_str());
  return dir;
}

TEST(ArchiveBuilderTest, DirectoryBecomesPaxArchivePlusIndex) {
  Keys keys;
  const std::string dir = MakeDataset();
  const auto capsule = testing::SealDirectory(keys, dir);
  auto r = CapsuleReader::Open(MemoryFile(capsule), {keys.issuer.public_identity()});
  ASSERT_TRUE(r.ok()) << r.status();
  auto key = (*r)->Unlock(keys.alice);
  ASSERT_TRUE(key.ok());
  const Manifest& m = (*r)->manifest();
  EXPECT_EQ(m.index_entries, 7u);  // train, train/deep, README, empty, a.bin, big.bin, link

  // The archive part is a tar stream that libarchive (and so GNU tar) reads.
  const auto tar = ReadPayload(**r, **key, 0, m.archive_size);
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  ASSERT_EQ(archive_read_open_memory(a, tar.data(), tar.size()), ARCHIVE_OK);
  std::map<std::string, std::string> contents;
  struct archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    std::string body(static_cast<size_t>(archive_entry_size(e)), '\0');
    if (!body.empty()) archive_read_data(a, body.data(), body.size());
    contents[archive_entry_pathname(e)] = body;
    EXPECT_EQ(archive_entry_uid(e), 0);
    const char* uname = archive_entry_uname(e);
    EXPECT_TRUE(uname == nullptr || *uname == 0) << (uname != nullptr ? uname : "");
  }
  archive_read_free(a);
  EXPECT_EQ(contents.count("README"), 1u);
  EXPECT_EQ(contents["README"], "hello\n");
  EXPECT_EQ(contents["train/a.bin"], std::string(10000, 'a'));
  EXPECT_EQ(contents.count("link"), 1u);
  EXPECT_EQ(contents.count("data"), 0u) << "the input directory itself is not an entry";

  // The index points at each file's bytes in the payload, with their digest.
  auto index_stream = (*r)->Stream(**key, m.archive_size, m.payload_size, 1);
  ASSERT_TRUE(index_stream.ok());
  IndexReader index(index_stream->get(), m.index_entries);
  std::map<std::string, FileEntry> entries;
  while (true) {
    auto next = index.Next();
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) break;
    entries[(*next)->path] = **next;
  }
  ASSERT_EQ(entries.size(), 7u);
  const FileEntry& big = entries["train/deep/big.bin"];
  EXPECT_EQ(big.type, FileEntry::Type::kFile);
  const auto big_bytes = ReadPayload(**r, **key, big.offset, big.offset + big.size);
  EXPECT_EQ(std::string(big_bytes.begin(), big_bytes.end()),
            testing::ReadFile(dir + "/train/deep/big.bin"));
  EXPECT_EQ(crypto::Sha256::Hash(big_bytes), big.sha256);
  EXPECT_EQ(entries["train/a.bin"].mode, 0600u);
  EXPECT_EQ(entries["train"].type, FileEntry::Type::kDirectory);
  EXPECT_EQ(entries["train"].mode, 0750u);
  EXPECT_EQ(entries["link"].type, FileEntry::Type::kSymlink);
  EXPECT_EQ(entries["link"].link_target, "train/a.bin");
  EXPECT_EQ(entries["empty"].size, 0u);
}

// The per-file digests are computed on a thread of their own (IndexSpooler): each record still
// gets the digest of its own file, for a file over several read buffers, an empty file, and
// more records than the spooler queues at once.
TEST(ArchiveBuilderTest, EveryFileRecordHasItsOwnContentsDigest) {
  Keys keys;
  const std::string dir = testing::MakeTempDir() + "/data";
  ::mkdir(dir.c_str(), 0755);
  const auto big = testing::PatternBytes((5u << 19) + 1, 9);  // 2.5 MiB + 1
  testing::WriteFile(dir + "/big.bin", std::string(big.begin(), big.end()));
  testing::WriteFile(dir + "/empty", "");
  for (int i = 0; i < 300; ++i) {
    testing::WriteFile(dir + "/f" + std::to_string(i), std::string(100 + i, 'a' + i % 26));
  }
  const auto capsule = testing::SealDirectory(keys, dir);
  auto r = CapsuleReader::Open(MemoryFile(capsule), {keys.issuer.public_identity()});
  ASSERT_TRUE(r.ok()) << r.status();
  auto key = (*r)->Unlock(keys.alice);
  ASSERT_TRUE(key.ok());
  const Manifest& m = (*r)->manifest();
  ASSERT_EQ(m.index_entries, 302u);
  auto index_stream = (*r)->Stream(**key, m.archive_size, m.payload_size, 1);
  ASSERT_TRUE(index_stream.ok());
  IndexReader index(index_stream->get(), m.index_entries);
  int files = 0;
  while (true) {
    auto next = index.Next();
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) break;
    const FileEntry& e = **next;
    ASSERT_EQ(e.type, FileEntry::Type::kFile) << e.path;
    EXPECT_EQ(e.sha256, crypto::Sha256::Hash(testing::ReadFile(dir + "/" + e.path))) << e.path;
    const auto bytes = ReadPayload(**r, **key, e.offset, e.offset + e.size);
    EXPECT_EQ(crypto::Sha256::Hash(bytes), e.sha256) << e.path;
    ++files;
  }
  EXPECT_EQ(files, 302);
}

// The progress estimate counts the tree's regular files through descriptors, as the seal's walk
// reads them: a symlink to a folder outside adds nothing (it was walked by path with nftw, which
// a folder swapped for a symlink mid-count led out of the tree).
TEST(ArchiveBuilderTest, TheEstimateCountsOnlyTheTreesOwnFiles) {
  const std::string dir = testing::MakeTempDir();
  const std::string outside = testing::MakeTempDir();
  testing::WriteFile(outside + "/big", std::string(5000, 'x'));
  ASSERT_EQ(::mkdir((dir + "/sub").c_str(), 0755), 0);
  testing::WriteFile(dir + "/a", "12345");
  testing::WriteFile(dir + "/sub/b", "123");
  ASSERT_EQ(::symlink(outside.c_str(), (dir + "/out").c_str()), 0);
  DatasetSource source;
  source.path = dir;
  EXPECT_EQ(EstimateContentBytes(source), 8u);
  source.path = dir + "/a";
  EXPECT_EQ(EstimateContentBytes(source), 5u);
  source.path = dir + "/out";  // a symlink named as the input is refused by seal: nothing
  EXPECT_EQ(EstimateContentBytes(source), 0u);
}

TEST(ArchiveBuilderTest, SingleFileInput) {
  Keys keys;
  const std::string dir = testing::MakeTempDir();
  testing::WriteFile(dir + "/one.txt", "just one");
  const auto capsule = testing::SealDirectory(keys, dir + "/one.txt");
  auto r = CapsuleReader::Open(MemoryFile(capsule), {keys.issuer.public_identity()});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->manifest().index_entries, 1u);
}

// Builds a tar file with libarchive's writer; `entries` are (path, type, contents/target).
std::string WriteTar(const std::string& dir,
                     const std::vector<std::tuple<std::string, unsigned, std::string>>& entries,
                     mode_t perm = 0644) {
  const std::string path = dir + "/input.tar";
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, path.c_str());
  for (const auto& [name, type, body] : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    if (type == AE_IFLNK) archive_entry_set_symlink(e, body.c_str());
    if (type == AE_IFREG) archive_entry_set_size(e, static_cast<la_int64_t>(body.size()));
    archive_write_header(a, e);
    if (type == AE_IFREG) archive_write_data(a, body.data(), body.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return path;
}

absl::Status SealTar(const Keys& keys, const std::string& tar) {
  WriterOptions opts;
  opts.issuer = &keys.issuer;
  opts.recipients = {keys.alice.public_identity()};
  opts.chunk_size = 4096;
  MemorySink sink;
  auto w = CapsuleWriter::Create(std::move(opts), &sink);
  if (!w.ok()) return w.status();
  auto stats = BuildPayload({DatasetSource::Kind::kArchive, tar}, w->get());
  if (!stats.ok()) return stats.status();
  return (*w)->Finish(stats->entries()).status();
}

TEST(ArchiveBuilderTest, ImportsAWellFormedTar) {
  Keys keys;
  const std::string dir = testing::MakeTempDir();
  const std::string tar = WriteTar(dir, {{"./data/", AE_IFDIR, ""},
                                         {"./data/x.txt", AE_IFREG, "xyz"},
                                         {"data/l", AE_IFLNK, "x.txt"}});
  EXPECT_TRUE(SealTar(keys, tar).ok());
}

TEST(ArchiveBuilderTest, RefusesMaliciousTarEntries) {
  Keys keys;
  const std::vector<std::tuple<std::string, unsigned, std::string, std::string>> cases = {
      {"../evil", AE_IFREG, "x", "'..'"},
      {"/etc/passwd", AE_IFREG, "x", "absolute"},
      {"a/../../x", AE_IFREG, "x", "'..'"},
      {"esc", AE_IFLNK, "../../etc", "climbs above the root"},
      {"abs", AE_IFLNK, "/etc/passwd", "absolute"},
      {"fifo", AE_IFIFO, "", "unsupported file type"},
      {"dev", AE_IFCHR, "", "unsupported file type"},
  };
  for (const auto& [name, type, body, why] : cases) {
    const std::string dir = testing::MakeTempDir();
    absl::Status s = SealTar(keys, WriteTar(dir, {{name, type, body}}));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name << ": " << s;
    EXPECT_NE(s.message().find(why), std::string::npos) << name << ": " << s.message();
  }
}

// A ustar archive of one regular file "big.bin" whose header declares `declared` bytes (at most
// 8 GiB - 1, eleven octal digits) while only `present` bytes follow, and nothing after them: a
// truncated or lying input.
std::string LyingTar(uint64_t declared, size_t present) {
  std::string h(512, '\0');
  auto put = [&h](size_t offset, const std::string& v) { h.replace(offset, v.size(), v); };
  char size[16];
  std::snprintf(size, sizeof size, "%011llo", static_cast<unsigned long long>(declared));
  put(0, "big.bin");
  put(100, "0000644");
  put(108, "0000000");
  put(116, "0000000");
  put(124, size);
  put(136, "00000000000");
  put(156, "0");
  put(257, "ustar");
  put(263, "00");
  put(148, "        ");  // the checksum counts its own field as spaces
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  char checksum[8];
  std::snprintf(checksum, sizeof checksum, "%06o", sum);
  put(148, std::string(checksum, 6));
  h[154] = '\0';
  return h + std::string(present, 'x');
}

// Counts what reaches the capsule file, and fails (as a full disk would) past `limit`.
class CountingSink : public WritableFile {
 public:
  explicit CountingSink(uint64_t limit) : limit_(limit) {}
  absl::Status Append(absl::Span<const uint8_t> data) override {
    bytes += data.size();
    if (bytes > limit_) return absl::ResourceExhaustedError("test sink full");
    return absl::OkStatus();
  }
  uint64_t bytes = 0;

 private:
  uint64_t limit_;
};

// Regression: a 2 KiB tar whose header declares 8 GiB made seal write 8 GiB of zeros (libarchive
// padding the unfinished entry when the archive writer was freed on the error path) before it
// failed. Now it fails at the end of the input, and what was written stays bounded by it.
TEST(ArchiveBuilderTest, TruncatedTarDeclaringAHugeEntryFailsWithoutPadding) {
  Keys keys;
  const std::string dir = testing::MakeTempDir();
  const std::string tar = dir + "/lying.tar";
  testing::WriteFile(tar, LyingTar((uint64_t{8} << 30) - 1, 1536));
  WriterOptions opts;
  opts.issuer = &keys.issuer;
  opts.recipients = {keys.alice.public_identity()};
  opts.chunk_size = 4096;
  CountingSink sink(32u << 20);
  auto w = CapsuleWriter::Create(std::move(opts), &sink);
  ASSERT_TRUE(w.ok()) << w.status();
  auto stats = BuildPayload({DatasetSource::Kind::kArchive, tar}, w->get());
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument) << stats.status();
  EXPECT_NE(stats.status().message().find("big.bin"), std::string::npos) << stats.status();
  EXPECT_NE(absl::AsciiStrToLower(stats.status().message()).find("truncated"), std::string::npos)
      << stats.status();
  EXPECT_LT((*w)->payload_size(), 64u << 10);
  EXPECT_LT(sink.bytes, 64u << 10);
}

TEST(ArchiveBuilderTest, GarbageIsNotAnArchive) {
  Keys keys;
  const std::string dir = testing::MakeTempDir();
  testing::WriteFile(dir + "/junk.tar", std::string(5000, '\x42'));
  absl::Status s = SealTar(keys, dir + "/junk.tar");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(ArchiveBuilderTest, SetuidBitsAreDropped) {
  Keys keys;
  const std::string dir = testing::MakeTempDir() + "/d";
  ::mkdir(dir.c_str(), 0755);
  testing::WriteFile(dir + "/suid", "x", 04755);
  const auto capsule = testing::SealDirectory(keys, dir);
  auto r = CapsuleReader::Open(MemoryFile(capsule), {keys.issuer.public_identity()});
  ASSERT_TRUE(r.ok());
  auto key = (*r)->Unlock(keys.alice);
  const Manifest& m = (*r)->manifest();
  auto stream = (*r)->Stream(**key, m.archive_size, m.payload_size, 1);
  IndexReader index(stream->get(), m.index_entries);
  auto e = index.Next();
  ASSERT_TRUE(e.ok() && e->has_value());
  EXPECT_EQ((*e)->mode, 0755u);
}

TEST(ArchiveBuilderTest, DirectoryWithAnEscapingSymlinkIsRefused) {
  Keys keys;
  for (const char* target : {"/etc/passwd", "../../outside"}) {
    const std::string dir = testing::MakeTempDir() + "/d";
    ::mkdir(dir.c_str(), 0755);
    ::symlink(target, (dir + "/bad").c_str());
    WriterOptions opts;
    opts.issuer = &keys.issuer;
    opts.recipients = {keys.alice.public_identity()};
    MemorySink sink;
    auto w = CapsuleWriter::Create(std::move(opts), &sink);
    auto stats = BuildPayload({DatasetSource::Kind::kPath, dir}, w->get());
    EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument) << target;
    EXPECT_NE(stats.status().message().find("\"bad\""), std::string::npos) << stats.status();
  }
}

TEST(ArchiveBuilderTest, MissingInputIsNotFound) {
  Keys keys;
  WriterOptions opts;
  opts.issuer = &keys.issuer;
  opts.recipients = {keys.alice.public_identity()};
  MemorySink sink;
  auto w = CapsuleWriter::Create(std::move(opts), &sink);
  auto stats = BuildPayload({DatasetSource::Kind::kPath, "/nonexistent/bunker"}, w->get());
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace bunker::capsule

namespace bunker::capsule {
namespace {

// -o inside the input folder where the file system lacks O_TMPFILE: the capsule's temporary file
// has a name in the tree while the tree is walked, and the walk leaves it out (by device and
// inode) instead of sealing the capsule into itself.
TEST(ArchiveBuilderTest, TheCapsuleBeingWrittenIsNotSealedIntoItself) {
  testing::Keys keys;
  const std::string dir = MakeDataset();
  // overwrite = true takes the named temporary file, as a file system without O_TMPFILE does.
  auto out = AtomicFileWriter::Create(dir + "/self.capsule", 0644, /*overwrite=*/true);
  ASSERT_TRUE(out.ok()) << out.status();
  bool named = false;
  for (const std::string& n : testing::ListDir(dir)) named |= n.find(".partial") != n.npos;
  ASSERT_TRUE(named) << "the temporary file has no name in the tree: the test tests nothing";
  WriterOptions opts;
  opts.issuer = &keys.issuer;
  opts.recipients = {keys.alice.public_identity()};
  opts.chunk_size = 4096;
  opts.created_at = 1790000000;
  auto w = CapsuleWriter::Create(std::move(opts), out->get());
  ASSERT_TRUE(w.ok()) << w.status();
  DatasetSource src{DatasetSource::Kind::kPath, dir};
  auto id = (*out)->FileId();
  ASSERT_TRUE(id.ok()) << id.status();
  auto stats = BuildPayload(src, w->get(), *id);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->entries(), 7u);  // MakeDataset's 7, without the capsule
  EXPECT_EQ(stats->files, 4u);
}

// The hard-link check of an imported archive still knows the earlier regular files (kept as
// digests of their paths now, and only for archives).
TEST(ArchiveBuilderTest, ImportedHardLinksStillNeedAnEarlierRegularFile) {
  testing::Keys keys;
  const std::string dir = testing::MakeTempDir();
  const std::string tar = dir + "/in.tar";
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  ASSERT_EQ(archive_write_open_filename(a, tar.c_str()), ARCHIVE_OK);
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, "dir/file");
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, 2);
  archive_write_header(a, e);
  archive_write_data(a, "hi", 2);
  archive_entry_clear(e);
  archive_entry_set_pathname(e, "good");
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_hardlink(e, "dir/file");
  archive_write_header(a, e);
  archive_entry_clear(e);
  archive_entry_set_pathname(e, "bad");
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_hardlink(e, "dir/nothing");
  archive_write_header(a, e);
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);

  const absl::Status s = SealTar(keys, tar);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("\"bad\" points to \"dir/nothing\""), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace bunker::capsule

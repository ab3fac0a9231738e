// Tests of capsule/extract.h. Over 500 lines on purpose: one file per unit under test, and the
// cases share one tar-building fixture (BuildTar, PieceSource); split it along the sections below
// (entries, destinations, owners, races) once that fixture moves to a shared test header.
#include "capsule/extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "capsule/fd.h"
#include "capsule/glob.h"
#include "capsule/io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

constexpr int64_t kMtime = 1'600'000'000;

// One entry of a test archive, written as-is by libarchive's pax writer (which does not clean
// up paths, so malicious names go into the archive unchanged).
struct TarEntry {
  std::string path;
  mode_t type = AE_IFREG;
  int perm = 0644;
  std::string data;
  std::string symlink;
  std::string hardlink;
  int64_t mtime = kMtime;
  long mtime_nsec = 0;
};

TarEntry File(std::string path, std::string data = "", int perm = 0644) {
  TarEntry e;
  e.path = std::move(path);
  e.data = std::move(data);
  e.perm = perm;
  return e;
}
TarEntry Dir(std::string path, int perm = 0755) {
  TarEntry e;
  e.path = std::move(path);
  e.type = AE_IFDIR;
  e.perm = perm;
  return e;
}
TarEntry Symlink(std::string path, std::string target) {
  TarEntry e;
  e.path = std::move(path);
  e.type = AE_IFLNK;
  e.perm = 0777;
  e.symlink = std::move(target);
  return e;
}
TarEntry Hardlink(std::string path, std::string target) {
  TarEntry e;
  e.path = std::move(path);
  e.hardlink = std::move(target);
  return e;
}
TarEntry Special(std::string path, mode_t type) {
  TarEntry e;
  e.path = std::move(path);
  e.type = type;
  return e;
}

la_ssize_t AppendToString(struct archive*, void* out, const void* data, size_t size) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(data), size);
  return static_cast<la_ssize_t>(size);
}

enum class Format {
  kPaxRestricted,  // ustar headers, a pax extended header only where ustar cannot say it
  kPax,            // a pax extended header for every entry (needed for sub-second mtimes)
};

// A tar archive of `entries`. Without `pad`, it ends right after the end-of-archive marker
// (two zero blocks) so that tests can cut it at known places; with it, libarchive's default
// 10240-byte record padding follows.
std::string BuildTar(const std::vector<TarEntry>& entries, bool pad = false,
                     Format format = Format::kPaxRestricted) {
  std::string out;
  struct archive* a = archive_write_new();
  if (format == Format::kPax) {
    archive_write_set_format_pax(a);
  } else {
    archive_write_set_format_pax_restricted(a);
  }
  if (!pad) archive_write_set_bytes_in_last_block(a, 1);
  EXPECT_EQ(archive_write_open(a, &out, nullptr, AppendToString, nullptr), ARCHIVE_OK);
  for (const TarEntry& t : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_copy_pathname(e, t.path.c_str());
    archive_entry_set_filetype(e, t.type);
    archive_entry_set_perm(e, t.perm);
    archive_entry_set_mtime(e, t.mtime, t.mtime_nsec);
    archive_entry_set_uid(e, 4242);
    archive_entry_set_gid(e, 4242);
    archive_entry_copy_uname(e, "mallory");
    if (t.type == AE_IFCHR || t.type == AE_IFBLK) archive_entry_set_rdev(e, makedev(1, 3));
    if (!t.symlink.empty()) archive_entry_copy_symlink(e, t.symlink.c_str());
    if (!t.hardlink.empty()) archive_entry_copy_hardlink(e, t.hardlink.c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(t.data.size()));
    // ARCHIVE_WARN: a name that is not ASCII in the C locale, still written (hdrcharset=BINARY).
    EXPECT_GE(archive_write_header(a, e), ARCHIVE_WARN) << archive_error_string(a);
    if (!t.data.empty()) {
      EXPECT_EQ(archive_write_data(a, t.data.data(), t.data.size()),
                static_cast<la_ssize_t>(t.data.size()));
    }
    archive_entry_free(e);
  }
  EXPECT_EQ(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
  return out;
}

// Hands out `data` in pieces of `piece` bytes. Each piece lives in its own allocation, freed at
// the next call, so AddressSanitizer catches any use of a piece beyond the promised lifetime.
class PieceSource : public ByteSource {
 public:
  PieceSource(std::string data, size_t piece) : data_(std::move(data)), piece_(piece) {}

  // Fails with `error` once `offset` bytes have been handed out.
  void FailAt(size_t offset, absl::Status error) {
    fail_at_ = offset;
    error_ = std::move(error);
  }

  // Runs `f` when the end is first reached, i.e. after the last entry was extracted but before
  // the extraction is committed.
  void OnEnd(std::function<void()> f) { on_end_ = std::move(f); }

  absl::StatusOr<absl::Span<const uint8_t>> Next() override {
    ++calls_;
    current_.reset();
    if (fail_at_.has_value() && pos_ >= *fail_at_) return error_;
    size_t n = std::min(piece_, data_.size() - pos_);
    if (fail_at_.has_value()) n = std::min(n, *fail_at_ - pos_);
    if (n == 0) {
      if (!reached_end_ && on_end_) on_end_();
      reached_end_ = true;
      return absl::Span<const uint8_t>();
    }
    current_ = std::make_unique<uint8_t[]>(n);
    std::memcpy(current_.get(), data_.data() + pos_, n);
    pos_ += n;
    return absl::Span<const uint8_t>(current_.get(), n);
  }

  int calls() const { return calls_; }
  bool reached_end() const { return reached_end_; }

 private:
  std::string data_;
  size_t piece_;
  size_t pos_ = 0;
  std::optional<size_t> fail_at_;
  absl::Status error_;
  std::unique_ptr<uint8_t[]> current_;
  std::function<void()> on_end_;
  int calls_ = 0;
  bool reached_end_ = false;
};

std::vector<std::string> Listing(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (const struct dirent* ent = readdir(d)) {
    const std::string name = ent->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// rm -rf that also copes with the 0500/0000 directories some tests extract.
void ForceRemove(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    chmod(path.c_str(), 0700);
    for (const std::string& name : Listing(path)) ForceRemove(path + "/" + name);
    rmdir(path.c_str());
  } else {
    unlink(path.c_str());
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

std::string ReadLink(const std::string& path) {
  char buf[4096];
  const ssize_t n = readlink(path.c_str(), buf, sizeof buf);
  return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
}

ExtractOptions Only(std::vector<std::string> patterns) {
  absl::StatusOr<PathSelection> s = PathSelection::Parse(patterns);
  EXPECT_TRUE(s.ok()) << s.status();
  ExtractOptions options;
  options.only = *std::move(s);
  return options;
}

class ExtractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old_umask_ = umask(022);
    std::string tmpl = ::testing::TempDir() + "/extract_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    dest_ = dir_ + "/out";
  }
  void TearDown() override {
    ForceRemove(dir_);
    umask(old_umask_);
  }

  absl::StatusOr<ExtractStats> Extract(std::string tar, const ExtractOptions& options = {},
                                       size_t piece = 1000) {
    PieceSource source(std::move(tar), piece);
    absl::StatusOr<ExtractStats> r = ExtractArchive(&source, dest_, options);
    if (r.ok()) {
      EXPECT_TRUE(source.reached_end()) << "source not read to its end";
    }
    return r;
  }

  // The extraction failed with `code` and a one-line message containing `text`, and left
  // nothing behind: no `dest`, no staging directory.
  void ExpectRefused(const absl::StatusOr<ExtractStats>& r, absl::StatusCode code,
                     std::string_view text) {
    ASSERT_FALSE(r.ok()) << "extraction unexpectedly succeeded";
    // Abseil here has its own string_view, which gtest prints byte by byte.
    const std::string message(r.status().message());
    EXPECT_EQ(r.status().code(), code) << message;
    EXPECT_THAT(message, HasSubstr(std::string(text)));
    EXPECT_THAT(message, Not(HasSubstr("\n")));
    EXPECT_THAT(Listing(dir_), IsEmpty()) << "left behind after: " << r.status();
  }

  void ExpectUnsafe(const std::vector<TarEntry>& entries, std::string_view text) {
    ExpectRefused(Extract(BuildTar(entries)), absl::StatusCode::kInvalidArgument, text);
  }

  std::string Out(const std::string& rel) const { return absl::StrCat(dest_, "/", rel); }

  mode_t old_umask_ = 0;
  std::string dir_;
  std::string dest_;
};

// --- What a well-formed archive produces ---

TEST_F(ExtractTest, ExtractsFilesDirectoriesAndSymlinks) {
  const std::string tar = BuildTar({
      Dir("data/"),
      File("data/a.txt", "alpha\n"),
      Dir("data/sub"),
      File("data/sub/b.bin", std::string("\0\1\2", 3)),
      Symlink("data/link", "a.txt"),
      File("./top.txt", "top"),
  });
  absl::StatusOr<ExtractStats> r = Extract(tar);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files, 3u);
  EXPECT_EQ(r->directories, 2u);
  EXPECT_EQ(r->symlinks, 1u);
  EXPECT_EQ(r->bytes, 6u + 3u + 3u);
  EXPECT_EQ(ReadFile(Out("data/a.txt")), "alpha\n");
  EXPECT_EQ(ReadFile(Out("data/sub/b.bin")), std::string("\0\1\2", 3));
  EXPECT_EQ(ReadFile(Out("top.txt")), "top");
  EXPECT_EQ(ReadLink(Out("data/link")), "a.txt");
  EXPECT_EQ(ReadFile(Out("data/link")), "alpha\n");
  EXPECT_THAT(Listing(dir_), ElementsAre("out"));  // no staging left over
  EXPECT_EQ(ModeOf(dest_) & 07777, 0755u);         // mkdir(0777) under umask 022
}

TEST_F(ExtractTest, PreservesModesAndMtimes) {
  TarEntry file = File("d/f.txt", "x", 0640);
  file.mtime = 1'500'000'000;
  file.mtime_nsec = 123'456'789;
  TarEntry dir = Dir("d", 0750);
  dir.mtime = 1'400'000'000;
  TarEntry ro_dir = Dir("ro", 0555);
  ro_dir.mtime = 1'300'000'000;
  TarEntry link = Symlink("d/l", "f.txt");
  link.mtime = 1'200'000'000;
  // The directories are listed before their contents, so their mtimes only survive because
  // they are restored at the end.
  // Full pax: pax_restricted drops sub-second mtimes.
  const std::string tar = BuildTar({dir, file, File("d/exe", "#!", 0755), File("d/ro", "", 0400),
                                    File("d/none", "", 0), ro_dir, File("ro/inside", "i"), link},
                                   /*pad=*/false, Format::kPax);
  absl::StatusOr<ExtractStats> r = Extract(tar);
  ASSERT_TRUE(r.ok()) << r.status();

  EXPECT_EQ(ModeOf(Out("d")) & 07777, 0750u);
  EXPECT_EQ(ModeOf(Out("d/f.txt")) & 07777, 0640u);
  EXPECT_EQ(ModeOf(Out("d/exe")) & 07777, 0755u);
  EXPECT_EQ(ModeOf(Out("d/ro")) & 07777, 0400u);
  EXPECT_EQ(ModeOf(Out("d/none")) & 07777, 0u);
  EXPECT_EQ(ModeOf(Out("ro")) & 07777, 0555u);
  EXPECT_EQ(ReadFile(Out("ro/inside")), "i");

  struct stat st;
  ASSERT_EQ(lstat(Out("d/f.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'500'000'000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123'456'789);
  ASSERT_EQ(lstat(Out("d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'400'000'000);
  ASSERT_EQ(lstat(Out("ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'300'000'000);
  ASSERT_EQ(lstat(Out("d/l").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'200'000'000);
}

TEST_F(ExtractTest, OwnersAreNeverRestored) {
  ASSERT_TRUE(Extract(BuildTar({File("f", "x")})).ok());
  struct stat st;
  ASSERT_EQ(lstat(Out("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, geteuid());
}

TEST_F(ExtractTest, PreservesSymlinksInsideTheTree) {
  const std::string tar = BuildTar({
      Dir("data"),
      File("data/real.txt", "real"),
      Symlink("top", "data/real.txt"),
      Symlink("dirlink", "data"),
      Symlink("a/b/up", "../../data"),
      Symlink("self", "."),
      Symlink("dangling", "nowhere/yet"),
  });
  absl::StatusOr<ExtractStats> r = Extract(tar);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->symlinks, 5u);
  EXPECT_EQ(ReadLink(Out("top")), "data/real.txt");
  EXPECT_EQ(ReadLink(Out("dirlink")), "data");
  EXPECT_EQ(ReadLink(Out("a/b/up")), "../../data");
  EXPECT_EQ(ReadLink(Out("self")), ".");
  EXPECT_EQ(ReadLink(Out("dangling")), "nowhere/yet");
  EXPECT_EQ(ReadFile(Out("a/b/up/real.txt")), "real");
}

TEST_F(ExtractTest, HardLinkToAFileInTheTree) {
  TarEntry link = Hardlink("b/link", "a/file");
  link.perm = 0600;
  const std::string tar =
      BuildTar({File("a/file", "shared", 0644), link, Hardlink("./c", "./a/file")});
  absl::StatusOr<ExtractStats> r = Extract(tar);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files, 3u);
  EXPECT_EQ(r->bytes, 6u);
  struct stat a, b, c;
  ASSERT_EQ(lstat(Out("a/file").c_str(), &a), 0);
  ASSERT_EQ(lstat(Out("b/link").c_str(), &b), 0);
  ASSERT_EQ(lstat(Out("c").c_str(), &c), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_ino, c.st_ino);
  EXPECT_EQ(a.st_nlink, 3u);
  EXPECT_EQ(a.st_mode & 07777, 0644u);  // the link entry's own mode is not applied
  EXPECT_EQ(ReadFile(Out("b/link")), "shared");
}

TEST_F(ExtractTest, ExplicitDirectoryAfterItsContents) {
  absl::StatusOr<ExtractStats> r = Extract(BuildTar({File("a/x", "x"), Dir("a/", 0700)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ModeOf(Out("a")) & 07777, 0700u);
  EXPECT_EQ(ReadFile(Out("a/x")), "x");
}

TEST_F(ExtractTest, NonAsciiNamesAreKeptAsBytes) {
  const std::string utf8 = "caf\xc3\xa9.txt";
  const std::string binary = "raw\xff\xfe";
  ASSERT_TRUE(Extract(BuildTar({File(utf8, "1"), File(binary, "2")})).ok());
  EXPECT_EQ(ReadFile(Out(utf8)), "1");
  EXPECT_EQ(ReadFile(Out(binary)), "2");
}

TEST_F(ExtractTest, ControlCharactersInSafeNamesAreAllowed) {
  const std::string name = "a\x1b[31mred\tname";
  ASSERT_TRUE(Extract(BuildTar({File(name, "x")})).ok());
  EXPECT_EQ(ReadFile(Out(name)), "x");
}

TEST_F(ExtractTest, LargeFileAcrossManyPieces) {
  std::string data(3 << 20, '\0');
  uint32_t x = 12345;
  for (char& c : data) {
    x = x * 1103515245 + 12345;
    c = static_cast<char>(x >> 24);
  }
  const std::string tar = BuildTar({File("big.bin", data), File("after", "tail")});
  for (size_t piece : {size_t{1} << 20, size_t{4093}, size_t{511}}) {
    SCOPED_TRACE(piece);
    absl::StatusOr<ExtractStats> r = Extract(tar, {}, piece);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->bytes, data.size() + 4);
    EXPECT_TRUE(ReadFile(Out("big.bin")) == data);
    EXPECT_EQ(ReadFile(Out("after")), "tail");
    ForceRemove(dest_);
  }
}

TEST_F(ExtractTest, OneBytePieces) {
  ASSERT_TRUE(Extract(BuildTar({Dir("d"), File("d/f", "hello")}), {}, 1).ok());
  EXPECT_EQ(ReadFile(Out("d/f")), "hello");
}

TEST_F(ExtractTest, EmptyArchiveMakesAnEmptyDirectory) {
  absl::StatusOr<ExtractStats> r = Extract(BuildTar({}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files + r->directories + r->symlinks + r->bytes, 0u);
  EXPECT_THAT(Listing(dest_), IsEmpty());
  EXPECT_THAT(Listing(dir_), ElementsAre("out"));
}

TEST_F(ExtractTest, RecordPaddingAfterTheEndIsAccepted) {
  const std::string tar = BuildTar({File("f", "x")}, /*pad=*/true);
  ASSERT_EQ(tar.size() % 10240, 0u);
  ASSERT_TRUE(Extract(tar, {}, 700).ok());
}

// --- Unsafe entries ---

TEST_F(ExtractTest, RefusesParentTraversal) {
  ExpectUnsafe({File("ok", "1"), File("../evil", "x")},
               "unsafe path \"../evil\" in archive: '..' component");
  EXPECT_FALSE(Exists(dir_ + "/../evil"));
}

TEST_F(ExtractTest, RefusesAbsolutePath) {
  ExpectUnsafe({File("/abs", "x")}, "unsafe path \"/abs\" in archive: absolute path");
}

TEST_F(ExtractTest, RefusesDotDotInsideThePath) {
  ExpectUnsafe({File("a/../../x", "x")}, "'..' component");
  ExpectUnsafe({Dir("a/b/../../..")}, "'..' component");
}

TEST_F(ExtractTest, RefusesAbsoluteSymlinkAndWhatFollowsIt) {
  ExpectUnsafe({Symlink("link", "/etc"), File("link/passwd", "root::0:0::/:/bin/sh")},
               "unsafe symlink \"link\" -> \"/etc\" in archive: absolute target");
}

TEST_F(ExtractTest, RefusesWritingThroughASymlink) {
  // The link itself is harmless; writing through it is not.
  ExpectUnsafe({Dir("sub"), Symlink("link", "sub"), File("link/passwd", "x")},
               "unsafe entry \"link/passwd\" in archive: goes through symlink \"link\"");
  ExpectUnsafe({Dir("sub"), Symlink("link", "sub"), Dir("link/d")}, "goes through symlink");
  ExpectUnsafe({Symlink("a", "."), File("a/b", "x")}, "goes through symlink \"a\"");
}

TEST_F(ExtractTest, RefusesEscapingSymlinks) {
  ExpectUnsafe({Symlink("up", "../..")}, "target climbs above the root");
  ExpectUnsafe({Symlink("a/b/up", "../../../etc")}, "target climbs above the root");
  // Lexically inside, yet a/l1 -> .. makes "a/l1/.." the parent of the root.
  ExpectUnsafe({Symlink("a/l1", ".."), Symlink("l2", "a/l1/..")}, "'..' after a name");
}

TEST_F(ExtractTest, RefusesHardLinksOutsideTheTree) {
  ExpectUnsafe({Hardlink("pw", "/etc/passwd")},
               "hard link \"pw\" points to an unsafe path \"/etc/passwd\" in archive: absolute "
               "path");
  ExpectUnsafe({Hardlink("x", "../x")}, "'..' component");
}

TEST_F(ExtractTest, RefusesHardLinksToAnythingButAnEarlierFile) {
  ExpectUnsafe({Hardlink("h", "missing")},
               "unsafe entry \"h\" in archive: hard link to \"missing\", which is not a regular "
               "file earlier in the archive");
  ExpectUnsafe({Hardlink("h", "later"), File("later", "x")}, "not a regular file earlier");
  ExpectUnsafe({Dir("d"), Hardlink("h", "d")}, "not a regular file earlier");
  ExpectUnsafe({File("f", "x"), Symlink("s", "f"), Hardlink("h", "s")},
               "not a regular file earlier");
  ExpectUnsafe({Hardlink("self", "self")}, "not a regular file earlier");
}

TEST_F(ExtractTest, RefusesDevicesFifosAndSockets) {
  ExpectUnsafe({File("ok", "1"), Special("dev/null", AE_IFCHR)},
               "unsafe entry \"dev/null\" in archive: character device (only regular files, "
               "directories and symlinks are allowed)");
  ExpectUnsafe({Special("sda", AE_IFBLK)}, "block device");
  ExpectUnsafe({Special("pipe", AE_IFIFO)}, "FIFO");
}

TEST_F(ExtractTest, RefusesSetuidSetgidAndSticky) {
  ExpectUnsafe({File("su", "x", 04755)}, "unsafe entry \"su\" in archive: setuid bit");
  ExpectUnsafe({File("sg", "x", 02755)}, "setgid bit");
  ExpectUnsafe({Dir("tmp", 01777)}, "sticky bit");
  ExpectUnsafe({Dir("shared", 02775)}, "setgid bit");
}

TEST_F(ExtractTest, ErrorsNamingControlCharacterPathsStayOnOneLine) {
  ExpectUnsafe({Special("fi\nfo\r\x1b[2J", AE_IFIFO)}, "\"fi\\nfo\\r\\x1b[2J\"");
  ExpectUnsafe({File("evil\n/../x", "x")}, "\"evil\\n/../x\"");
}

TEST_F(ExtractTest, RefusesDuplicateEntries) {
  ExpectUnsafe({File("x", "first"), File("x", "second")},
               "unsafe entry \"x\" in archive: duplicate entry");
  ExpectUnsafe({Dir("d"), Dir("d/")}, "duplicate entry");
  ExpectUnsafe({File("d", "x"), Dir("d")}, "duplicate entry");
  ExpectUnsafe({Dir("d"), File("d", "x")}, "duplicate entry (a directory already)");
  ExpectUnsafe({File("d/x", "x"), Symlink("d", ".")}, "duplicate entry (a directory already)");
  ExpectUnsafe({File("a/x", "x"), File("./a/x", "y")}, "duplicate entry");
}

TEST_F(ExtractTest, RefusesEntriesBelowAFile) {
  ExpectUnsafe({File("f", "x"), File("f/y", "y")},
               "unsafe entry \"f/y\" in archive: parent \"f\" is not a directory");
}

TEST_F(ExtractTest, RefusesHardLinkWithData) {
  // libarchive's writers never produce one; hand-craft it by patching the ustar header of a
  // hard link (typeflag '1') to carry a size, then fixing the checksum. libarchive honours the
  // size of a hard link only after a pax extended header, hence full pax and a sub-second mtime
  // (which needs one).
  TarEntry link = Hardlink("h", "f");
  link.mtime_nsec = 1;
  std::string tar = BuildTar({File("f", "x"), link}, false, Format::kPax);
  size_t h = 0;
  while (h < tar.size() && !(tar[h + 156] == '1' && tar.compare(h + 257, 5, "ustar") == 0)) {
    h += 512;
  }
  ASSERT_LT(h, tar.size());
  std::memcpy(&tar[h + 124], "00000000001", 11);
  std::memset(&tar[h + 148], ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) sum += static_cast<unsigned char>(tar[h + i]);
  snprintf(&tar[h + 148], 8, "%06o", sum);
  tar.insert(h + 512, std::string(512, 'D'));
  ExpectRefused(Extract(tar), absl::StatusCode::kInvalidArgument, "hard link with data");
}

TEST_F(ExtractTest, RefusesPathsTooLongForTheDestination) {
  // Acceptable as an entry path (at most 4096 bytes), too long once below the staging root.
  std::string path;
  while (path.size() < 3800) path += std::string(200, 'p') + "/";
  path += std::string(4096 - path.size(), 'f');
  ASSERT_EQ(path.size(), 4096u);
  ExpectUnsafe({File(path, "x")}, "is too long to extract under");
}

TEST_F(ExtractTest, RefusesNamesLongerThanNameMax) {
  ExpectUnsafe({File("d/" + std::string(256, 'n'), "x")}, "is too long to extract under");
  ASSERT_TRUE(Extract(BuildTar({File("d/" + std::string(255, 'n'), "x")})).ok());
}

TEST_F(ExtractTest, DestinationAppearingDuringExtractionIsLeftAlone) {
  // Directories of mode 0500 and 0000 already have their final modes when the commit fails, so
  // this also covers removing such a tree.
  const std::string tar = BuildTar({Dir("ro", 0500), File("ro/f", "x"), Dir("none", 0),
                                    Dir("none/sub", 0500), File("none/sub/g", "y")});
  for (bool empty : {false, true}) {
    SCOPED_TRACE(empty);
    PieceSource source(tar, 1000);
    source.OnEnd([&] {
      ASSERT_EQ(mkdir(dest_.c_str(), 0755), 0);
      if (!empty) std::ofstream(Out("theirs")) << "theirs";
    });
    absl::StatusOr<ExtractStats> r = ExtractArchive(&source, dest_, {});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("appeared during extraction"));
    EXPECT_THAT(Listing(dir_), ElementsAre("out"));  // no staging left
    if (empty) {
      EXPECT_THAT(Listing(dest_), IsEmpty());
    } else {
      EXPECT_THAT(Listing(dest_), ElementsAre("theirs"));
    }
    ForceRemove(dest_);
  }
}

TEST_F(ExtractTest, CleansUpDirectoriesWithRestrictiveModes) {
  // By the time the FIFO is refused, freeing libarchive's writer has applied 0500 and 0000.
  ExpectUnsafe({Dir("ro", 0500), File("ro/f", "x"), Dir("none", 0), Dir("none/sub"),
                File("none/sub/g", "y"), Special("zz", AE_IFIFO)},
               "FIFO");
}

TEST_F(ExtractTest, UnsafeEntriesAreRefusedEvenOutsideTheSelection) {
  ExpectRefused(
      Extract(BuildTar({File("train/a", "a"), File("val/../../x", "x")}), Only({"train/**"})),
      absl::StatusCode::kInvalidArgument, "'..' component");
  ExpectRefused(
      Extract(BuildTar({File("train/a", "a"), Special("val/dev", AE_IFCHR)}), Only({"train/**"})),
      absl::StatusCode::kInvalidArgument, "character device");
}

// --- Malformed input ---

TEST_F(ExtractTest, TruncatedArchives) {
  const std::string tar = BuildTar({File("a", std::string(2000, 'a')), File("b", "b")});
  // a's header, 4 data blocks, b's header, 1 data block, 2 end blocks.
  ASSERT_EQ(tar.size(), 9u * 512);
  for (size_t cut :
       {size_t{0}, size_t{100}, size_t{512 + 1000}, size_t{5 * 512 + 17}, size_t{7 * 512}}) {
    SCOPED_TRACE(cut);
    ExpectRefused(Extract(tar.substr(0, cut)), absl::StatusCode::kDataLoss, "malformed archive");
  }
  // Cut exactly at an entry boundary: libarchive alone would call that a complete archive.
  ExpectRefused(Extract(tar.substr(0, 5 * 512)), absl::StatusCode::kDataLoss,
                "no end-of-archive marker");
}

TEST_F(ExtractTest, NotAnArchive) {
  std::string junk;
  while (junk.size() < 5000) junk += "this is not a tar archive. ";
  ExpectRefused(Extract(junk), absl::StatusCode::kDataLoss, "malformed archive");
}

TEST_F(ExtractTest, ByteFlipsNeverEscapeOrLeaveDebris) {
  const std::string tar =
      BuildTar({Dir("d"), File("d/f", "contents"), Symlink("d/l", "f"), Hardlink("d/h", "d/f")});
  for (size_t i = 0; i < tar.size(); i += 5) {
    for (uint8_t flip : {0x01, 0x80}) {
      std::string bad = tar;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      absl::StatusOr<ExtractStats> r = Extract(bad, {}, 300);
      if (r.ok()) {
        EXPECT_THAT(Listing(dir_), ElementsAre("out")) << i;
        ForceRemove(dest_);
      } else {
        EXPECT_THAT(r.status().message(), Not(HasSubstr("\n")));
        EXPECT_THAT(Listing(dir_), IsEmpty()) << i << ": " << r.status();
      }
    }
  }
}

// --- The source ---

TEST_F(ExtractTest, ReturnsTheSourceErrorAndLeavesNothing) {
  const std::string tar = BuildTar(
      {Dir("d", 0500), File("d/a", std::string(3000, 'a')), File("d/b", std::string(3000, 'b'))});
  const absl::Status failure = absl::DataLossError("chunk 2 failed authentication");
  for (size_t at : {size_t{0}, size_t{700}, size_t{2500}, tar.size() - 600}) {
    SCOPED_TRACE(at);
    PieceSource source(tar, 512);
    source.FailAt(at, failure);
    absl::StatusOr<ExtractStats> r = ExtractArchive(&source, dest_, {});
    EXPECT_EQ(r.status(), failure);
    EXPECT_THAT(Listing(dir_), IsEmpty());
  }
}

TEST_F(ExtractTest, ReadsTheSourceToItsEnd) {
  // The source only detects a truncated capsule when asked for the piece after the last one;
  // that must happen even though the tar archive ended before.
  std::string tar = BuildTar({File("f", "x")});
  const size_t end = tar.size();
  tar += std::string(20000, '\0');
  const absl::Status failure = absl::DataLossError("capsule truncated after chunk 7");
  PieceSource source(tar, 512);
  source.FailAt(end + 10000, failure);
  EXPECT_EQ(ExtractArchive(&source, dest_, {}).status(), failure);
  EXPECT_THAT(Listing(dir_), IsEmpty());
}

// --- The destination ---

TEST_F(ExtractTest, RefusesNonEmptyDestinationBeforeReading) {
  ASSERT_EQ(mkdir(dest_.c_str(), 0755), 0);
  { std::ofstream(Out("precious")) << "keep"; }
  PieceSource source(BuildTar({File("f", "x")}), 1000);
  absl::StatusOr<ExtractStats> r = ExtractArchive(&source, dest_, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.status().message(), absl::StrCat("destination \"", dest_, "\" is not empty"));
  EXPECT_EQ(source.calls(), 0);
  EXPECT_THAT(Listing(dest_), ElementsAre("precious"));
  EXPECT_THAT(Listing(dir_), ElementsAre("out"));
}

TEST_F(ExtractTest, RefusesAnExistingFileAsDestination) {
  { std::ofstream(dest_) << "file"; }
  PieceSource source(BuildTar({File("f", "x")}), 1000);
  absl::StatusOr<ExtractStats> r = ExtractArchive(&source, dest_, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(r.status().message(), HasSubstr("is not a directory"));
  EXPECT_EQ(source.calls(), 0);
  EXPECT_EQ(ReadFile(dest_), "file");
}

TEST_F(ExtractTest, RefusesASymlinkAsDestination) {
  ASSERT_EQ(mkdir((dir_ + "/elsewhere").c_str(), 0755), 0);
  ASSERT_EQ(symlink("elsewhere", dest_.c_str()), 0);
  PieceSource source(BuildTar({File("f", "x")}), 1000);
  EXPECT_EQ(ExtractArchive(&source, dest_, {}).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(Listing(dir_ + "/elsewhere"), IsEmpty());
}

TEST_F(ExtractTest, ReplacesAnEmptyDestinationKeepingItsMode) {
  ASSERT_EQ(mkdir(dest_.c_str(), 0700), 0);
  ASSERT_EQ(chmod(dest_.c_str(), 0700), 0);
  ASSERT_TRUE(Extract(BuildTar({File("f", "x")})).ok());
  EXPECT_EQ(ReadFile(Out("f")), "x");
  EXPECT_EQ(ModeOf(dest_) & 07777, 0700u);
  EXPECT_THAT(Listing(dir_), ElementsAre("out"));
}

TEST_F(ExtractTest, LeavesAnEmptyDestinationAsItWasOnError) {
  ASSERT_EQ(mkdir(dest_.c_str(), 0700), 0);
  absl::StatusOr<ExtractStats> r = Extract(BuildTar({File("f", "x"), File("../g", "y")}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Listing(dir_), ElementsAre("out"));
  EXPECT_THAT(Listing(dest_), IsEmpty());
}

TEST_F(ExtractTest, TrailingSlashOnDestination) {
  dest_ += "/";
  ASSERT_TRUE(Extract(BuildTar({File("f", "x")})).ok());
  EXPECT_EQ(ReadFile(dir_ + "/out/f"), "x");
}

TEST_F(ExtractTest, CreatesMissingParentsAndRemovesThemOnError) {
  const std::string top = dir_ + "/p";
  dest_ = top + "/q/out";
  ASSERT_TRUE(Extract(BuildTar({File("f", "x")})).ok());
  EXPECT_EQ(ReadFile(dest_ + "/f"), "x");
  EXPECT_THAT(Listing(top + "/q"), ElementsAre("out"));

  ForceRemove(top);
  ExpectRefused(Extract(BuildTar({File("/abs", "x")})), absl::StatusCode::kInvalidArgument,
                "absolute path");
}

TEST_F(ExtractTest, RelativeDestinationWithDotDot) {
  ASSERT_EQ(mkdir((dir_ + "/sub").c_str(), 0755), 0);
  dest_ = dir_ + "/sub/../out";
  ASSERT_TRUE(Extract(BuildTar({Dir("d"), File("d/f", "x")})).ok());
  EXPECT_EQ(ReadFile(dir_ + "/out/d/f"), "x");
}

TEST_F(ExtractTest, RefusesDestinationsThatNameNoDirectory) {
  for (const std::string& bad :
       {std::string(""), std::string("."), std::string("/"), dir_ + "/..", dir_ + "/."}) {
    PieceSource source(BuildTar({}), 1000);
    absl::StatusOr<ExtractStats> r = ExtractArchive(&source, bad, {});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(source.calls(), 0);
  }
}

// --- Selections ---

TEST_F(ExtractTest, OnlyTrainExtractsTrainAndItsParents) {
  TarEntry data = Dir("data", 0750);
  data.mtime = 1'234'567'890;
  const std::string tar = BuildTar({
      data,
      Dir("data/train"),
      File("data/train/a.bin", "A"),
      Dir("data/train/sub"),
      File("data/train/sub/b.bin", "B"),
      Symlink("data/train/latest", "a.bin"),
      Dir("data/val"),
      File("data/val/c.bin", "C"),
      File("README", "read me"),
  });
  absl::StatusOr<ExtractStats> r = Extract(tar, Only({"data/train/**"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files, 2u);
  EXPECT_EQ(r->directories, 3u);  // data (a needed parent), data/train, data/train/sub
  EXPECT_EQ(r->symlinks, 1u);
  EXPECT_EQ(r->bytes, 2u);
  EXPECT_THAT(Listing(dest_), ElementsAre("data"));
  EXPECT_THAT(Listing(Out("data")), ElementsAre("train"));
  EXPECT_THAT(Listing(Out("data/train")), UnorderedElementsAre("a.bin", "sub", "latest"));
  EXPECT_EQ(ReadFile(Out("data/train/sub/b.bin")), "B");
  EXPECT_EQ(ModeOf(Out("data")) & 07777, 0750u);
  struct stat st;
  ASSERT_EQ(lstat(Out("data").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'234'567'890);
}

TEST_F(ExtractTest, SelectingADirectorySelectsEverythingBelowIt) {
  const std::string tar = BuildTar({File("train/x/1", "1"), File("train/2", "2"), File("val/3")});
  ASSERT_TRUE(Extract(tar, Only({"train"})).ok());
  EXPECT_THAT(Listing(dest_), ElementsAre("train"));
  EXPECT_EQ(ReadFile(Out("train/x/1")), "1");
  EXPECT_EQ(ReadFile(Out("train/2")), "2");
}

TEST_F(ExtractTest, SelectionWithoutDirectoryEntriesCreatesParents) {
  const std::string tar = BuildTar({File("x/y/z.txt", "z"), File("x/other.txt", "o")});
  absl::StatusOr<ExtractStats> r = Extract(tar, Only({"x/y/*.txt"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files, 1u);
  EXPECT_THAT(Listing(Out("x")), ElementsAre("y"));
  EXPECT_EQ(ReadFile(Out("x/y/z.txt")), "z");
}

TEST_F(ExtractTest, SelectionSkipsUnneededDirectories) {
  const std::string tar = BuildTar({Dir("data"), Dir("data/train"), File("data/train/x.bin", "x"),
                                    Dir("data/train/sub"), File("data/train/sub/y.bin", "y"),
                                    Dir("data/val"), File("data/val/z.bin", "z")});
  ASSERT_TRUE(Extract(tar, Only({"data/train/*.bin"})).ok());
  EXPECT_THAT(Listing(Out("data")), ElementsAre("train"));
  EXPECT_THAT(Listing(Out("data/train")), ElementsAre("x.bin"));
}

TEST_F(ExtractTest, SelectedHardLinkToUnselectedTarget) {
  const std::string tar = BuildTar({File("val/orig", "o"), Hardlink("train/link", "val/orig")});
  ExpectRefused(Extract(tar, Only({"train/**"})), absl::StatusCode::kInvalidArgument,
                "hard link \"train/link\" is selected but its target \"val/orig\" is not; add "
                "the target to the selection");
  ASSERT_TRUE(Extract(tar, Only({"train/**", "val/orig"})).ok());
  EXPECT_EQ(ReadFile(Out("train/link")), "o");
}

TEST_F(ExtractTest, SelectionMatchingNothingMakesAnEmptyDirectory) {
  absl::StatusOr<ExtractStats> r = Extract(BuildTar({File("a", "a")}), Only({"nope/**"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files, 0u);
  EXPECT_THAT(Listing(dest_), IsEmpty());
}

// --- Race-free destinations: ExtractArchiveAt and owners ---

// Extraction below a directory descriptor (dir_/root), next to a directory an attacker would
// like to write into (dir_/outside).
class ExtractAtTest : public ExtractTest {
 protected:
  void SetUp() override {
    ExtractTest::SetUp();
    root_ = dir_ + "/root";
    outside_ = dir_ + "/outside";
    ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir(outside_.c_str(), 0755), 0);
    root_fd_.Reset(open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(root_fd_.valid());
  }

  absl::StatusOr<ExtractStats> ExtractAt(const std::string& tar, const std::string& relative,
                                         const ExtractOptions& options = {}) {
    PieceSource source(tar, 1000);
    ExtractTarget target;
    target.root_fd = root_fd_.get();
    target.relative = relative;
    return ExtractArchiveAt(&source, target, options);
  }

  // Refused as going through a symlink, with nothing written outside or left in the root.
  void ExpectThroughSymlinkRefused(const std::string& relative,
                                   const std::vector<std::string>& root_listing) {
    absl::StatusOr<ExtractStats> r = ExtractAt(BuildTar({File("f", "x")}), relative);
    ASSERT_FALSE(r.ok()) << relative;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("is or goes through a symbolic link"));
    EXPECT_THAT(std::string(r.status().message()), Not(HasSubstr("\n")));
    EXPECT_THAT(Listing(outside_), IsEmpty());
    EXPECT_EQ(Listing(root_), root_listing);
  }

  std::string root_;
  std::string outside_;
  Fd root_fd_;
};

TEST_F(ExtractAtTest, ExtractsBelowTheDescriptorCreatingParents) {
  const std::string tar = BuildTar({Dir("d", 0500), File("d/f", "x"), Symlink("l", "d/f")});
  absl::StatusOr<ExtractStats> r = ExtractAt(tar, "p/q/out");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReadFile(root_ + "/p/q/out/l"), "x");
  EXPECT_THAT(Listing(root_ + "/p/q"), ElementsAre("out"));

  r = ExtractAt(BuildTar({File("f", "x"), File("../g", "y")}), "n/m/out");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(Listing(root_), ElementsAre("p"));  // n and n/m taken back
}

TEST_F(ExtractAtTest, RefusesASymlinkAtAnExistingParent) {
  ASSERT_EQ(symlink("../outside", (root_ + "/evil").c_str()), 0);
  ExpectThroughSymlinkRefused("evil/x", {"evil"});
  ASSERT_EQ(symlink(outside_.c_str(), (root_ + "/abs").c_str()), 0);
  ExpectThroughSymlinkRefused("abs/x", {"abs", "evil"});
}

TEST_F(ExtractAtTest, RefusesASymlinkAboveAMissingParent) {
  ASSERT_EQ(symlink("../outside", (root_ + "/evil").c_str()), 0);
  ExpectThroughSymlinkRefused("evil/newsub/x", {"evil"});
  ASSERT_EQ(mkdir((root_ + "/real").c_str(), 0755), 0);
  ASSERT_EQ(symlink("../../outside", (root_ + "/real/link").c_str()), 0);
  ExpectThroughSymlinkRefused("real/link/a/b/x", {"evil", "real"});
  EXPECT_THAT(Listing(root_ + "/real"), ElementsAre("link"));
}

TEST_F(ExtractAtTest, RefusesASymlinkAsTheDestination) {
  ASSERT_EQ(symlink("../outside", (root_ + "/evil").c_str()), 0);
  absl::StatusOr<ExtractStats> r = ExtractAt(BuildTar({File("f", "x")}), "evil");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
  EXPECT_THAT(Listing(outside_), IsEmpty());
  EXPECT_THAT(Listing(root_), ElementsAre("evil"));
}

TEST_F(ExtractAtTest, RefusesDestinationsThatAreNotPlainRelativePaths) {
  for (const char* bad : {"", "/abs", "..", "../x", "a/../x", "a//b", ".", "a/./b"}) {
    PieceSource source(BuildTar({}), 1000);
    ExtractTarget target;
    target.root_fd = root_fd_.get();
    target.relative = bad;
    EXPECT_EQ(ExtractArchiveAt(&source, target, {}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
    EXPECT_EQ(source.calls(), 0) << bad;
  }
  EXPECT_THAT(Listing(root_), IsEmpty());
  EXPECT_THAT(Listing(outside_), IsEmpty());
}

// An attacker who can write in the root keeps swapping root/race between a real directory and
// a symlink to the outside (renameat2 RENAME_EXCHANGE) while extractions into race/subN/out
// run. Each extraction must either land inside the real directory or fail cleanly.
TEST_F(ExtractAtTest, RaceSwappingAParentForASymlinkNeverWritesOutside) {
  ASSERT_EQ(mkdir((root_ + "/race").c_str(), 0755), 0);
  ASSERT_EQ(symlink("../outside", (root_ + "/spare").c_str()), 0);
  std::vector<TarEntry> entries = {Dir("d"), File("d/big", std::string(64 << 10, 'b')),
                                   Symlink("d/l", "big"), Hardlink("h", "d/big")};
  for (int i = 0; i < 20; ++i) entries.push_back(File(absl::StrCat("d/f", i), "small"));
  const std::string tar = BuildTar(entries);

  std::atomic<bool> stop{false};
  std::atomic<int> swaps{0};
  std::thread attacker([&] {
    while (!stop.load()) {
      if (renameat2(root_fd_.get(), "race", root_fd_.get(), "spare", RENAME_EXCHANGE) == 0) {
        ++swaps;
      }
    }
  });
  constexpr int kRuns = 100;
  std::vector<bool> succeeded(kRuns);
  int failures = 0;
  for (int n = 0; n < kRuns; ++n) {
    absl::StatusOr<ExtractStats> r = ExtractAt(tar, absl::StrCat("race/sub", n, "/out"));
    succeeded[n] = r.ok();
    if (!r.ok()) {
      ++failures;
      EXPECT_THAT(std::string(r.status().message()), Not(HasSubstr("\n")));
    }
  }
  stop = true;
  attacker.join();

  EXPECT_THAT(Listing(outside_), IsEmpty()) << "a byte escaped";
  struct stat st;
  ASSERT_EQ(lstat((root_ + "/race").c_str(), &st), 0);
  const std::string real = root_ + (S_ISDIR(st.st_mode) ? "/race" : "/spare");
  std::vector<std::string> expected;
  for (int n = 0; n < kRuns; ++n) {
    if (!succeeded[n]) continue;
    const std::string sub = absl::StrCat("sub", n);
    expected.push_back(sub);
    EXPECT_THAT(Listing(real + "/" + sub), ElementsAre("out"));
    EXPECT_EQ(ReadFile(real + "/" + sub + "/out/d/f7"), "small");
  }
  std::sort(expected.begin(), expected.end());
  // Failed runs left nothing: no subN (taken back), no staging directory.
  EXPECT_EQ(Listing(real), expected);
  std::cout << "[          ] " << swaps.load() << " swaps, " << kRuns - failures
            << " extractions landed inside, " << failures << " refused\n";
}

// Walks `path` without following symlinks and returns every entry's lstat, path first.
void LstatTree(const std::string& path, std::vector<std::pair<std::string, struct stat>>* out) {
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0) << path;
  out->emplace_back(path, st);
  if (!S_ISDIR(st.st_mode)) return;
  for (const std::string& name : Listing(path)) LstatTree(path + "/" + name, out);
}

TEST_F(ExtractAtTest, OwnerIsGivenEveryCreatedEntry) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "giving files to uid 65534 needs CAP_CHOWN; running as uid " << geteuid();
  }
  ExtractOptions options;
  options.owner = FileOwner{65534, 65534};
  const std::string tar =
      BuildTar({Dir("d", 0500), File("d/f", "x", 0600), Symlink("d/l", "f"), Hardlink("h", "d/f"),
                Dir("e/none", 0), File("implicit/g", "g")});
  absl::StatusOr<ExtractStats> r = ExtractAt(tar, "p/q/out", options);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::pair<std::string, struct stat>> entries;
  LstatTree(root_ + "/p", &entries);
  ASSERT_EQ(entries.size(), 11u);  // p q out d d/f d/l e e/none h implicit implicit/g
  for (const auto& [path, st] : entries) {
    // The destination's missing parents stay ours: a name a user could swap is never chowned.
    const bool parent = path == root_ + "/p" || path == root_ + "/p/q";
    EXPECT_EQ(st.st_uid, parent ? 0u : 65534u) << path;
    EXPECT_EQ(st.st_gid, parent ? 0u : 65534u) << path;
  }
  struct stat root;
  ASSERT_EQ(lstat(root_.c_str(), &root), 0);
  EXPECT_EQ(root.st_uid, 0u);  // existed before: not ours to give away
  EXPECT_EQ(ModeOf(root_ + "/p/q/out/d") & 07777, 0500u);
}

TEST_F(ExtractAtTest, OwnerWithoutCapChownIsPermissionDenied) {
  ExtractOptions options;
  options.owner = FileOwner{0, 0};
  auto attempt = [&]() -> std::string {
    absl::StatusOr<ExtractStats> r = ExtractAt(BuildTar({File("f", "x")}), "p/out", options);
    if (r.ok()) return "extraction succeeded";
    if (r.status().code() != absl::StatusCode::kPermissionDenied) return r.status().ToString();
    const std::string message(r.status().message());
    if (message.find("cannot give files to uid 0 (a verifier service needs CAP_CHOWN)") ==
        std::string::npos) {
      return message;
    }
    if (!Listing(root_).empty()) return "left something behind";
    return "";
  };
  if (geteuid() != 0) {
    EXPECT_EQ(attempt(), "");
    return;
  }
  // As root, drop to nobody in a child process; the root stays reachable by its descriptor.
  ASSERT_EQ(chmod(root_.c_str(), 0777), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    const std::string problem = attempt();
    if (!problem.empty()) fprintf(stderr, "%s\n", problem.c_str());
    _exit(problem.empty() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace bunker::capsule

// Sealing from an archive refuses what extraction refuses in the raw tar headers
// (capsule/input_archive.h; issue 10, item 2).
#include "capsule/input_archive.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "capsule/archive_builder.h"
#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

std::string Header(const std::string& name, char typeflag, size_t size,
                   const std::string& link = "", bool v7 = false) {
  std::string h(512, '\0');
  std::memcpy(&h[0], name.data(), name.size());
  std::memcpy(&h[100], "0000644", 7);
  std::memcpy(&h[108], "0000000", 7);
  std::memcpy(&h[116], "0000000", 7);
  std::snprintf(&h[124], 12, "%011zo", size);
  std::memcpy(&h[136], "13000000000", 11);
  h[156] = typeflag;
  std::memcpy(&h[157], link.data(), link.size());
  if (!v7) std::memcpy(&h[257], "ustar\0" "00", 8);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(&h[148], 8, "%06o", sum);
  return h;
}

std::string Entry(const std::string& name, char typeflag, const std::string& data) {
  return Header(name, typeflag, data.size()) + data +
         std::string((512 - data.size() % 512) % 512, '\0');
}

absl::Status Seal(const std::string& tar_path) {
  testing::Keys keys;
  WriterOptions opts;
  opts.issuer = &keys.issuer;
  opts.recipients = {keys.alice.public_identity()};
  opts.chunk_size = 4096;
  MemorySink sink;
  auto w = CapsuleWriter::Create(std::move(opts), &sink);
  if (!w.ok()) return w.status();
  auto stats = BuildPayload({DatasetSource::Kind::kArchive, tar_path}, w->get());
  if (!stats.ok()) return stats.status();
  return (*w)->Finish(stats->entries()).status();
}

const std::string kEnd(1024, '\0');

TEST(InputArchiveTest, UnknownTypeflagIsRefusedPlainAndCompressed) {
  const std::string dir = testing::MakeTempDir();
  const std::string tar = dir + "/in.tar";
  testing::WriteFile(tar, Entry("a.txt", '0', "fine") + Entry("z", 'Z', "data") + kEnd);
  absl::Status s = Seal(tar);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("tar type 'Z'"), std::string::npos) << s;
  ASSERT_EQ(std::system(("gzip -kn " + tar).c_str()), 0);
  s = Seal(tar + ".gz");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(InputArchiveTest, SizedHardLinkIsRefused) {
  const std::string dir = testing::MakeTempDir();
  const std::string tar = dir + "/in.tar";
  testing::WriteFile(tar, Entry("a", '0', "abc") + Header("h", '1', 3, "a") + kEnd);
  EXPECT_EQ(Seal(tar).code(), absl::StatusCode::kInvalidArgument);
}

TEST(InputArchiveTest, KnownTypesStillSealPlainAndCompressed) {
  const std::string dir = testing::MakeTempDir();
  const std::string tar = dir + "/in.tar";
  testing::WriteFile(tar, Entry("d/", '5', "") + Entry("d/a", '0', std::string(3000, 'a')) +
                              Entry("d/old", '\0', "x") + Header("d/l", '2', 0, "a") +
                              Header("d/h", '1', 0, "d/a") + kEnd);
  EXPECT_TRUE(Seal(tar).ok()) << Seal(tar);
  ASSERT_EQ(std::system(("gzip -kn " + tar).c_str()), 0);
  EXPECT_TRUE(Seal(tar + ".gz").ok());
}

// A pax record "LEN key=value\n".
std::string Pax(const std::string& key, const std::string& value) {
  const std::string body = " " + key + "=" + value + "\n";
  std::string len = std::to_string(body.size() + 1);
  if (len.size() + body.size() != std::stoul(len)) len = std::to_string(body.size() + 2);
  return len + body;
}

// spec/FORMAT.md "Entries": at most one pax 'x' header per entry. libarchive keeps only the
// second one's records (with a warning); extraction refuses such a tar, so sealing does too.
TEST(InputArchiveTest, TwoPaxHeadersBeforeAnEntryAreRefused) {
  const std::string dir = testing::MakeTempDir();
  const std::string tar = dir + "/in.tar";
  testing::WriteFile(tar, Entry("PaxHeader/x", 'x', Pax("mtime", "5")) +
                              Entry("PaxHeader/x", 'x', Pax("path", "b.txt")) +
                              Entry("a.txt", '0', "hello\n") + kEnd);
  absl::Status s = Seal(tar);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("more than one pax extended header"), std::string::npos) << s;
  // One of them, either one, is fine; so is a global header before it.
  testing::WriteFile(tar, Entry("PaxHeader/g", 'g', Pax("comment", "c")) +
                              Entry("PaxHeader/x", 'x', Pax("path", "b.txt")) +
                              Entry("a.txt", '0', "hello\n") + kEnd);
  EXPECT_TRUE(Seal(tar).ok()) << Seal(tar);
}

// A pax path that is not UTF-8 without hdrcharset (GNU tar --format=posix writes raw bytes so):
// libarchive warns that it cannot convert it; sealing takes its bytes as the name (and writes
// them with hdrcharset=BINARY, which extraction takes: cli.ls_names_one_to_one opens one back).
// Regression: after --from-tar began refusing tar warnings, such archives were refused.
TEST(InputArchiveTest, NonUtf8PaxPathIsSealedAsItsBytes) {
  const std::string dir = testing::MakeTempDir();
  const std::string tar = dir + "/in.tar";
  testing::WriteFile(tar, Entry("PaxHeader/x", 'x', Pax("path", "caf\xe9")) +
                              Entry("a.txt", '0', "hello\n") + kEnd);
  EXPECT_TRUE(Seal(tar).ok()) << Seal(tar);
  // Any other warning of a tar header is still refused: a malformed pax record.
  testing::WriteFile(tar, Entry("PaxHeader/x", 'x', "7 path=b\n") +
                              Entry("a.txt", '0', "hello\n") + kEnd);
  EXPECT_FALSE(Seal(tar).ok());
}

// spec/FORMAT.md "Entries": v7 headers (no ustar magic) are refused.
TEST(InputArchiveTest, V7HeaderIsRefused) {
  const std::string dir = testing::MakeTempDir();
  const std::string tar = dir + "/in.tar";
  testing::WriteFile(tar, Header("a.txt", '0', 5, "", /*v7=*/true) + "hello" +
                              std::string(507, '\0') + kEnd);
  absl::Status s = Seal(tar);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("v7"), std::string::npos) << s;
}

}  // namespace
}  // namespace bunker::capsule

// A permit released as a mount (site/mounted_capsule.h): the tree, reads from authenticated
// chunks only, the cache bound, and the summary record.
#include "site/mounted_capsule.h"

#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "site/gate.h"
#include "verifier/audit_log.h"

namespace bunker::site {
namespace {

using capsule::testing::MakeTempDir;
using capsule::testing::WriteFile;

constexpr int64_t kNow = 1800000000;

struct Fixture {
  capsule::testing::Keys keys;
  std::string root = MakeTempDir();
  std::vector<uint8_t> capsule;
  std::vector<uint8_t> big = capsule::testing::PatternBytes(40000, 7);
  SiteConfig site;

  Fixture() {
    ::mkdir((root + "/data").c_str(), 0755);
    ::mkdir((root + "/data/train").c_str(), 0755);
    WriteFile(root + "/data/train/a.csv", "row 1\n");
    WriteFile(root + "/data/train/big.bin", std::string(big.begin(), big.end()));
    WriteFile(root + "/data/z.txt", "last\n");
    capsule = capsule::testing::SealDirectory(keys, root + "/data");
    site.site = "site-b";
    site.state = root + "/state";
    site.destinations = {root};
  }

  Gate SiteGate() const { return Gate(site, keys.alice, {keys.issuer.public_identity()}); }

  absl::StatusOr<std::unique_ptr<MountedCapsule>> Mount(const Gate& gate,
                                                        std::vector<std::string> only,
                                                        const std::vector<uint8_t>& bytes,
                                                        MountOptions options = {}) {
    absl::StatusOr<std::unique_ptr<OpenCapsule>> c =
        gate.Open(capsule::MemoryFile(bytes), "d.capsule", 2);
    if (!c.ok()) return c.status();
    Want want;
    want.kind = Want::Kind::kMount;
    want.only = std::move(only);
    absl::StatusOr<Permit> permit = gate.Decide(std::move(*c), Requester{}, want, kNow);
    if (!permit.ok()) return permit.status();
    return permit->Mount(options);
  }

  std::vector<verifier::AuditRecord> Log() {
    std::vector<verifier::AuditRecord> out;
    (void)verifier::ForEachAuditRecord(site.state + "/audit.log",
                                       [&out](uint64_t, const verifier::AuditRecord& r) {
                                         out.push_back(r);
                                         return true;
                                       });
    return out;
  }
};

std::string ReadAll(MountedCapsule& m, uint64_t ino, size_t piece) {
  std::string out;
  std::vector<uint8_t> buf(piece);
  for (uint64_t off = 0;;) {
    absl::StatusOr<size_t> n = m.Read(ino, off, absl::MakeSpan(buf), kNow, true);
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || *n == 0) break;
    out.append(buf.begin(), buf.begin() + static_cast<long>(*n));
    off += *n;
  }
  return out;
}

TEST(MountedCapsuleTest, ServesTheTreeFromAuthenticatedChunksAndRecordsTheSummary) {
  Fixture f;
  Gate gate = f.SiteGate();
  MountOptions small;
  small.cache_bytes = 4096;  // one chunk: every read goes through eviction
  absl::StatusOr<std::unique_ptr<MountedCapsule>> m = f.Mount(gate, {}, f.capsule, small);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(f.Log().size(), 1u);
  EXPECT_EQ(f.Log()[0].decision, "permit");

  const MountedCapsule::Node* train = (*m)->Lookup(MountedCapsule::kRootInode, "train");
  ASSERT_NE(train, nullptr);
  EXPECT_EQ(train->type, MountedCapsule::Node::Type::kDirectory);
  EXPECT_EQ((*m)->Lookup(MountedCapsule::kRootInode, "nope"), nullptr);
  const MountedCapsule::Node* big = (*m)->Lookup(train->ino, "big.bin");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->size, f.big.size());
  EXPECT_EQ((*m)->Get(big->ino), big);
  // Pieces that straddle chunk boundaries, through a cache that holds one chunk.
  for (size_t piece : {1000u, 4096u, 7000u, 65536u}) {
    EXPECT_EQ(ReadAll(**m, big->ino, piece), std::string(f.big.begin(), f.big.end())) << piece;
  }
  const MountedCapsule::Node* a = (*m)->Lookup(train->ino, "a.csv");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(ReadAll(**m, a->ino, 100), "row 1\n");
  // Reading a directory is not a file; after the window, nothing.
  std::vector<uint8_t> buf(10);
  EXPECT_TRUE(absl::IsNotFound((*m)->Read(train->ino, 0, absl::MakeSpan(buf), kNow, false).status()));
  EXPECT_EQ((*m)->not_after(), MountedCapsule::kNever);

  // big.bin opened twice (its reads above counted it once already), a.csv only read.
  (*m)->CountOpen(big->ino);
  (*m)->CountOpen(big->ino);
  ASSERT_TRUE((*m)->RecordEnd("unmounted", kNow, kNow + 5).ok());
  std::vector<verifier::AuditRecord> log = f.Log();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1].event, "mount-ended");
  EXPECT_EQ(log[1].uses, 0);
  EXPECT_EQ(log[1].capsule_id, log[0].capsule_id);
  std::string reasons;
  for (const std::string& r : log[1].reasons) reasons += r + ";";
  EXPECT_NE(reasons.find("files opened: 2 (opens: 4)"), std::string::npos) << reasons;
  EXPECT_NE(reasons.find("duration: 5 s"), std::string::npos) << reasons;
}

// The mounting user can answer a mount's opens himself (spec/VERIFIER.md "Mounts"): the server
// then never counts them, but only the mount can answer the reads. A file read without a
// counted open counts as opened once (usage, summary) and is among the files whose page cache
// the mount drops at its end (FilesOpened). Before: such reads left "files opened 0" in
// `capsule mounts` and the audit summary, and their pages were not dropped.
TEST(MountedCapsuleTest, ReadsWithoutAnOpenCountTheFileAndMarkItForTheDrop) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<std::unique_ptr<MountedCapsule>> m = f.Mount(gate, {}, f.capsule);
  ASSERT_TRUE(m.ok()) << m.status();
  const MountedCapsule::Node* train = (*m)->Lookup(MountedCapsule::kRootInode, "train");
  ASSERT_NE(train, nullptr);
  const MountedCapsule::Node* big = (*m)->Lookup(train->ino, "big.bin");
  const MountedCapsule::Node* a = (*m)->Lookup(train->ino, "a.csv");
  const MountedCapsule::Node* z = (*m)->Lookup(MountedCapsule::kRootInode, "z.txt");
  ASSERT_TRUE(big != nullptr && a != nullptr && z != nullptr);
  EXPECT_TRUE((*m)->FilesOpened().empty());

  // No open at all: two reads of big.bin (through both read paths), one of a.csv.
  std::vector<uint8_t> buf(1000);
  ASSERT_TRUE((*m)->Read(big->ino, 0, absl::MakeSpan(buf), kNow, true).ok());
  ASSERT_TRUE((*m)->ReadSlices(big->ino, 1000, 1000, kNow, true).ok());
  ASSERT_TRUE((*m)->Read(a->ino, 0, absl::MakeSpan(buf), kNow, false).ok());
  MountedCapsule::Usage u = (*m)->usage();
  EXPECT_EQ(u.files_opened, 2u);
  EXPECT_EQ(u.opens, 2u);
  std::vector<uint64_t> files = (*m)->FilesOpened();
  std::sort(files.begin(), files.end());
  std::vector<uint64_t> want = {big->ino, a->ino};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(files, want);

  // An open counted before the reads counts once; a read that is refused counts nothing.
  (*m)->CountOpen(z->ino);
  ASSERT_TRUE((*m)->Read(z->ino, 0, absl::MakeSpan(buf), kNow, false).ok());
  EXPECT_FALSE((*m)->Read(train->ino, 0, absl::MakeSpan(buf), kNow, false).ok());
  u = (*m)->usage();
  EXPECT_EQ(u.files_opened, 3u);
  EXPECT_EQ(u.opens, 3u);
  EXPECT_EQ((*m)->FilesOpened().size(), 3u);

  ASSERT_TRUE((*m)->RecordEnd("unmounted", kNow, kNow + 1).ok());
  std::vector<verifier::AuditRecord> log = f.Log();
  ASSERT_EQ(log.size(), 2u);
  std::string reasons;
  for (const std::string& r : log[1].reasons) reasons += r + ";";
  EXPECT_NE(reasons.find("files opened: 3 (opens: 3)"), std::string::npos) << reasons;
}

// ReadSlices hands out views into cached chunks (a FUSE reply is written from them without a
// copy): they must stay valid and unchanged after the cache evicted their chunks.
TEST(MountedCapsuleTest, SlicesOutliveTheirChunksInTheCache) {
  Fixture f;
  Gate gate = f.SiteGate();
  MountOptions small;
  small.cache_bytes = 4096;  // one chunk
  small.read_ahead_chunks = 0;
  absl::StatusOr<std::unique_ptr<MountedCapsule>> m = f.Mount(gate, {}, f.capsule, small);
  ASSERT_TRUE(m.ok()) << m.status();
  const MountedCapsule::Node* train = (*m)->Lookup(MountedCapsule::kRootInode, "train");
  ASSERT_NE(train, nullptr);
  const MountedCapsule::Node* big = (*m)->Lookup(train->ino, "big.bin");
  ASSERT_NE(big, nullptr);
  // 10,000 bytes from 3,000: across at least two chunks.
  absl::StatusOr<MountedCapsule::Slices> held = (*m)->ReadSlices(big->ino, 3000, 10000, kNow, true);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->size(), 10000u);
  EXPECT_GE(held->spans().size(), 2u);
  // Evict everything: read the whole file again, then another file.
  EXPECT_EQ(ReadAll(**m, big->ino, 4096), std::string(f.big.begin(), f.big.end()));
  std::string got;
  for (absl::Span<const uint8_t> s : held->spans()) got.append(s.begin(), s.end());
  EXPECT_EQ(got, std::string(f.big.begin() + 3000, f.big.begin() + 13000));
  // Past the end: nothing; over the end: what is there.
  absl::StatusOr<MountedCapsule::Slices> tail =
      (*m)->ReadSlices(big->ino, f.big.size() - 10, 1000, kNow, false);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->size(), 10u);
  absl::StatusOr<MountedCapsule::Slices> past = (*m)->ReadSlices(big->ino, f.big.size(), 10, kNow, false);
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(past->size(), 0u);
}

TEST(MountedCapsuleTest, OnlyKeepsTheSelectionAndItsDirectories) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<std::unique_ptr<MountedCapsule>> m = f.Mount(gate, {"z.txt"}, f.capsule);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->Lookup(MountedCapsule::kRootInode, "train"), nullptr);
  ASSERT_NE((*m)->Lookup(MountedCapsule::kRootInode, "z.txt"), nullptr);
  EXPECT_EQ((*m)->Get(MountedCapsule::kRootInode)->children.size(), 1u);
}

TEST(MountedCapsuleTest, CorruptChunkFailsOnlyTheReadsThatNeedIt) {
  Fixture f;
  Gate gate = f.SiteGate();
  // A chunk in the middle of big.bin flipped: the table still verifies, the chunk not.
  capsule::testing::Parts p = capsule::testing::MustSplit(f.capsule);
  p.chunks[5 * (4096 + 16) + 100] ^= 0x40;
  absl::StatusOr<std::unique_ptr<MountedCapsule>> m =
      f.Mount(gate, {}, capsule::testing::Join(p));
  ASSERT_TRUE(m.ok()) << m.status();
  const MountedCapsule::Node* train = (*m)->Lookup(MountedCapsule::kRootInode, "train");
  const MountedCapsule::Node* big = (*m)->Lookup(train->ino, "big.bin");
  const MountedCapsule::Node* z = (*m)->Lookup(MountedCapsule::kRootInode, "z.txt");
  ASSERT_NE(big, nullptr);
  ASSERT_NE(z, nullptr);
  std::vector<uint8_t> buf(f.big.size());
  absl::StatusOr<size_t> n = (*m)->Read(big->ino, 0, absl::MakeSpan(buf), kNow, false);
  EXPECT_TRUE(absl::IsDataLoss(n.status())) << n.status();
  // Twice: a failure is not cached as success.
  n = (*m)->Read(big->ino, 0, absl::MakeSpan(buf), kNow, false);
  EXPECT_TRUE(absl::IsDataLoss(n.status())) << n.status();
  EXPECT_EQ(ReadAll(**m, z->ino, 100), "last\n");
}

}  // namespace
}  // namespace bunker::site

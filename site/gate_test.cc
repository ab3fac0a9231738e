// The gate (site/gate.h): what a permit releases, where, and what a failure leaves behind.
#include "site/gate.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "site/chunk_spool.h"
#include "site/release_io.h"
#include "site/request.h"
#include "verifier/audit_log.h"

namespace bunker::site {
namespace {

using capsule::testing::Exists;
using capsule::testing::ListDir;
using capsule::testing::MakeTempDir;
using capsule::testing::ReadFile;
using capsule::testing::WriteFile;

struct Fixture {
  capsule::testing::Keys keys;
  std::string root = MakeTempDir();
  std::vector<uint8_t> capsule;
  SiteConfig site;

  Fixture() {
    ::mkdir((root + "/data").c_str(), 0755);
    ::mkdir((root + "/data/train").c_str(), 0755);
    WriteFile(root + "/data/train/a.csv", "row 1\n");
    // Spans several 4 KiB chunks.
    const std::vector<uint8_t> big = capsule::testing::PatternBytes(40000, 7);
    WriteFile(root + "/data/train/big.bin", std::string(big.begin(), big.end()));
    capsule = capsule::testing::SealDirectory(keys, root + "/data");
    ::mkdir((root + "/landing").c_str(), 0777);
    ::mkdir((root + "/outside").c_str(), 0755);
    site.site = "site-b";
    site.state = root + "/state";
    site.destinations = {root + "/landing"};
  }

  Gate SiteGate() const { return Gate(site, keys.alice, {keys.issuer.public_identity()}); }

  absl::StatusOr<Permit> Decide(const Gate& gate, const Want& want,
                                std::vector<uint8_t> bytes = {}) {
    absl::StatusOr<std::unique_ptr<OpenCapsule>> c =
        gate.Open(capsule::MemoryFile(bytes.empty() ? capsule : bytes), "d.capsule", 2);
    if (!c.ok()) return c.status();
    return gate.Decide(std::move(*c), Requester{}, want, 1800000000);
  }

  uint64_t LoggedEntries() {
    uint64_t n = 0;
    absl::Status s = verifier::ForEachAuditRecord(
        site.state + "/audit.log", [&n](uint64_t, const verifier::AuditRecord&) {
          ++n;
          return true;
        });
    return s.ok() ? n : 0;
  }
};

// The chunk holding payload offset `offset` flipped: the table still verifies, the chunk not.
std::vector<uint8_t> FlipChunkAt(const std::vector<uint8_t>& capsule, size_t chunk) {
  capsule::testing::Parts p = capsule::testing::MustSplit(capsule);
  const size_t at = chunk * (4096 + 16) + 100;
  EXPECT_LT(at, p.chunks.size());
  p.chunks[at] ^= 0x40;
  return capsule::testing::Join(p);
}

TEST(GateTest, ExtractsIntoASiteDestinationAndRecordsTheDecision) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{Want::Kind::kExtract, {"train/a.csv"}, ""});
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_EQ(f.LoggedEntries(), 1u);
  absl::StatusOr<Destination> to = ResolveDestination(f.site, f.root + "/landing/run1");
  ASSERT_TRUE(to.ok()) << to.status();
  absl::StatusOr<capsule::ExtractStats> stats = permit->Extract(*to, ReleaseOptions{});
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->files, 1u);
  EXPECT_EQ(ReadFile(f.root + "/landing/run1/train/a.csv"), "row 1\n");
  EXPECT_FALSE(Exists(f.root + "/landing/run1/train/big.bin"));
  // A permit releases once, and only what it was made for.
  EXPECT_EQ(permit->Extract(*to, {}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(permit->StreamFile(1, {}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(GateTest, DestinationsAreResolvedWithoutFollowingPlantedSymlinks) {
  Fixture f;
  ASSERT_EQ(::symlink("../outside", (f.root + "/landing/evil").c_str()), 0);
  for (const char* dest : {"/landing/evil/x", "/landing/evil/newsub/x"}) {
    absl::StatusOr<Destination> to = ResolveDestination(f.site, f.root + dest);
    ASSERT_TRUE(to.ok()) << to.status();  // lexically under the destination
    Gate gate = f.SiteGate();
    absl::StatusOr<Permit> permit = f.Decide(gate, Want{});
    ASSERT_TRUE(permit.ok()) << permit.status();
    absl::StatusOr<capsule::ExtractStats> stats = permit->Extract(*to, {});
    EXPECT_EQ(stats.status().code(), absl::StatusCode::kPermissionDenied) << dest;
    EXPECT_TRUE(ListDir(f.root + "/outside").empty()) << dest;
  }
  // Outside the destinations, ".." and the destination itself are refused before anything.
  EXPECT_EQ(ResolveDestination(f.site, f.root + "/outside/x").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveDestination(f.site, f.root + "/landing").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveDestination(f.site, f.root + "/landing/a/../../outside").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GateTest, StreamFileWritesNothingWhenALaterChunkIsCorrupt) {
  Fixture f;
  Gate gate = f.SiteGate();
  // big.bin spans chunks well past the first: corrupt one near its end.
  const std::vector<uint8_t> bad = FlipChunkAt(f.capsule, 9);
  absl::StatusOr<Permit> permit =
      f.Decide(gate, Want{Want::Kind::kFile, {}, "train/big.bin"}, bad);
  ASSERT_TRUE(permit.ok()) << permit.status();
  const std::string out = f.root + "/out.bin";
  capsule::Fd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  absl::StatusOr<uint64_t> n = permit->StreamFile(fd.get(), {});
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss) << n.status();
  EXPECT_EQ(ReadFile(out), "");
  // The failure is on record, after the permit.
  EXPECT_EQ(f.LoggedEntries(), 2u);
}

TEST(GateTest, StreamFileWritesTheExactContents) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{Want::Kind::kFile, {}, "train/big.bin"});
  ASSERT_TRUE(permit.ok()) << permit.status();
  const std::string out = f.root + "/out.bin";
  capsule::Fd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  absl::StatusOr<uint64_t> n = permit->StreamFile(fd.get(), {});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 40000u);
  EXPECT_EQ(ReadFile(out), ReadFile(f.root + "/data/train/big.bin"));
}

TEST(GateTest, AFailedExtractionLeavesNothingAndIsRecorded) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{}, FlipChunkAt(f.capsule, 5));
  ASSERT_TRUE(permit.ok()) << permit.status();
  absl::StatusOr<Destination> to = ResolveDestination(f.site, f.root + "/landing/run");
  ASSERT_TRUE(to.ok());
  EXPECT_EQ(permit->Extract(*to, {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ListDir(f.root + "/landing").empty());
  EXPECT_EQ(f.LoggedEntries(), 2u);
}

TEST(GateTest, WriteArchiveIsAtomicAndRefusesToReplace) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Destination> to = ResolveDestination(f.site, f.root + "/landing/sub/d.tar");
  ASSERT_TRUE(to.ok());
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{Want::Kind::kArchive, {}, ""});
  ASSERT_TRUE(permit.ok());
  absl::StatusOr<uint64_t> n = permit->WriteArchive(*to, {});
  ASSERT_TRUE(n.ok()) << n.status();
  struct stat st;
  ASSERT_EQ(::stat((f.root + "/landing/sub/d.tar").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), *n);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(CheckDestinationFree(*to).code(), absl::StatusCode::kAlreadyExists);
}

TEST(GateTest, OfflineDeniesNothingWithoutAPolicyAndRecordsNothing) {
  Fixture f;
  Gate gate(f.keys.alice, {f.keys.issuer.public_identity()});
  SiteRequest r;
  r.command = Command::kLs;
  std::vector<std::string> listed;
  r.entries = [&listed](const std::vector<capsule::FileEntry>& batch) {
    for (const auto& e : batch) listed.push_back(e.path);
    return absl::OkStatus();
  };
  absl::StatusOr<Outcome> o = HandleRequest(gate, capsule::MemoryFile(f.capsule), "d", r);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(listed.size(), 3u);  // train/, train/a.csv, train/big.bin
  EXPECT_FALSE(Exists(f.site.state));
}

TEST(GateTest, ACapsuleForSomeoneElseIsRefusedBeforeAnyDecision) {
  Fixture f;
  Gate gate(f.site, f.keys.bob, {f.keys.issuer.public_identity()});
  absl::StatusOr<std::unique_ptr<OpenCapsule>> c =
      gate.Open(capsule::MemoryFile(f.capsule), "d.capsule", 1);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(Exists(f.site.state + "/audit.log"));
}

// A ustar archive of one file that the capsule's (empty) index does not list.
std::vector<uint8_t> UnlistedFileArchive() {
  std::string h(512, '\0');
  std::memcpy(&h[0], "train/secret.csv", 16);
  std::memcpy(&h[100], "0000644", 7);
  std::memcpy(&h[108], "0000000", 7);
  std::memcpy(&h[116], "0000000", 7);
  std::memcpy(&h[124], "00000000005", 11);
  std::memcpy(&h[136], "00000000000", 11);
  h[156] = '0';
  std::memcpy(&h[257], "ustar\0" "00", 8);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(&h[148], 8, "%06o", sum);
  std::string tar = h + "hush\n" + std::string(507, '\0') + std::string(1024, '\0');
  return std::vector<uint8_t>(tar.begin(), tar.end());
}

// Regression (issue 10, item 1): the policy is decided over the index, so an archive entry the
// index does not list (here: indexEntries = 0) must not be released by any release.
TEST(GateTest, AnArchiveEntryTheIndexDoesNotListIsDataLossForEveryRelease) {
  Fixture f;
  const std::vector<uint8_t> bytes = capsule::testing::SealRaw(f.keys, UnlistedFileArchive());
  Gate gate(f.keys.alice, {f.keys.issuer.public_identity()});
  absl::StatusOr<Destination> to = LocalDestination(f.root + "/outside/run");
  ASSERT_TRUE(to.ok());
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{}, bytes);
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_EQ(permit->Extract(*to, {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ListDir(f.root + "/outside").empty());

  absl::StatusOr<Permit> archive = f.Decide(gate, Want{Want::Kind::kArchive, {}, ""}, bytes);
  ASSERT_TRUE(archive.ok());
  EXPECT_EQ(archive->WriteArchive(*to, {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ListDir(f.root + "/outside").empty());

  archive = f.Decide(gate, Want{Want::Kind::kArchive, {}, ""}, bytes);
  ASSERT_TRUE(archive.ok());
  const std::string out = f.root + "/stream.tar";
  const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(archive->StreamArchive(fd, {}).status().code(), absl::StatusCode::kDataLoss);
  ::close(fd);
  EXPECT_EQ(ReadFile(out), "");
}

// Regression (issue 10, item 13): an empty payload is no archive, for --to-tar as for --to.
TEST(GateTest, AnEmptyPayloadIsDataLossForEveryRelease) {
  Fixture f;
  const std::vector<uint8_t> bytes = capsule::testing::SealRaw(f.keys, {});
  Gate gate(f.keys.alice, {f.keys.issuer.public_identity()});
  absl::StatusOr<Destination> to = LocalDestination(f.root + "/outside/run");
  ASSERT_TRUE(to.ok());
  absl::StatusOr<Permit> archive = f.Decide(gate, Want{Want::Kind::kArchive, {}, ""}, bytes);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_EQ(archive->WriteArchive(*to, {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ListDir(f.root + "/outside").empty());
  absl::StatusOr<Permit> extract = f.Decide(gate, Want{}, bytes);
  ASSERT_TRUE(extract.ok());
  EXPECT_EQ(extract->Extract(*to, {}).status().code(), absl::StatusCode::kDataLoss);
}

// ---------------------------------------------------------------------------------------------
// The release spool (site/chunk_spool.h): a remote capsule's chunks fetched once.

// A capsule in memory that says it is remote (as an s3:// object does) and counts the reads
// of each offset.
class CountingRemoteFile : public capsule::RandomAccessFile {
 public:
  explicit CountingRemoteFile(std::vector<uint8_t> bytes, std::map<uint64_t, int>* reads)
      : inner_(capsule::MemoryFile(std::move(bytes))), reads_(reads) {}
  uint64_t size() const override { return inner_->size(); }
  int parallelism() const override { return 4; }
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++(*reads_)[offset];
    }
    return inner_->ReadAt(offset, out);
  }

 private:
  std::unique_ptr<capsule::RandomAccessFile> inner_;
  std::map<uint64_t, int>* reads_;
  mutable std::mutex mu_;
};

// `payload` sealed by `keys`, opened through a CountingRemoteFile that counts into `reads`.
absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> OpenRemote(
    const capsule::testing::Keys& keys, const std::vector<uint8_t>& payload,
    std::map<uint64_t, int>* reads, uint32_t chunk_size = 4096) {
  const crypto::PublicIdentity issuer = keys.issuer.public_identity();
  return capsule::CapsuleReader::Open(std::make_unique<CountingRemoteFile>(
                                          capsule::testing::SealRaw(keys, payload, chunk_size),
                                          reads),
                                      absl::MakeConstSpan(&issuer, 1));
}

struct RemoteRelease {
  Fixture f;
  Gate gate = f.SiteGate();
  std::map<uint64_t, int> reads;  // capsule offset -> reads, after the decision
  std::string spool_dir = f.root + "/spool";
  std::string out = f.root + "/out.bin";

  RemoteRelease() { ::mkdir(spool_dir.c_str(), 0700); }

  absl::StatusOr<Permit> Decide(const Want& want, std::vector<uint8_t> bytes = {}) {
    absl::StatusOr<std::unique_ptr<OpenCapsule>> c = gate.Open(
        std::make_unique<CountingRemoteFile>(bytes.empty() ? f.capsule : bytes, &reads),
        "s3://b/d.capsule", 2);
    if (!c.ok()) return c.status();
    absl::StatusOr<Permit> p = gate.Decide(std::move(*c), Requester{}, want, 1800000000);
    reads.clear();  // opening read the index; count the release's own reads
    return p;
  }

  ReleaseOptions Options() const {
    ReleaseOptions o;
    o.spool_dir = spool_dir;
    o.held_in_memory = 0;  // every file takes the two-pass path
    return o;
  }

  // Reads of each chunk holding payload [begin, end) (4 KiB chunks).
  std::vector<int> ChunkReads(uint64_t begin, uint64_t end) {
    std::vector<int> n;
    for (uint64_t i = begin / 4096; i <= (end - 1) / 4096; ++i) {
      n.push_back(reads[capsule::kHeaderSize + i * (4096 + 16)]);
    }
    return n;
  }
};

TEST(ChunkSpoolTest, AFileFromARemoteCapsuleFetchesEachChunkOnce) {
  RemoteRelease r;
  absl::StatusOr<Permit> permit = r.Decide(Want{Want::Kind::kFile, {}, "train/big.bin"});
  ASSERT_TRUE(permit.ok()) << permit.status();
  const capsule::FileEntry f = *permit->file();
  capsule::Fd fd(::open(r.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  absl::StatusOr<uint64_t> n = permit->StreamFile(fd.get(), r.Options());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(ReadFile(r.out), ReadFile(r.f.root + "/data/train/big.bin"));
  const std::vector<int> reads = r.ChunkReads(f.offset, f.offset + f.size);
  EXPECT_GE(reads.size(), 10u);
  EXPECT_EQ(std::set<int>(reads.begin(), reads.end()), std::set<int>{1});
  // The spool was unnamed: nothing is left in its folder.
  EXPECT_TRUE(ListDir(r.spool_dir).empty());
}

TEST(ChunkSpoolTest, AnArchiveFromARemoteCapsuleFetchesEachChunkOnce) {
  RemoteRelease r;
  absl::StatusOr<Permit> permit = r.Decide(Want{Want::Kind::kArchive, {}, ""});
  ASSERT_TRUE(permit.ok()) << permit.status();
  const uint64_t payload = permit->manifest().payload_size;
  capsule::Fd fd(::open(r.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  absl::StatusOr<uint64_t> n = permit->StreamArchive(fd.get(), r.Options());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(ReadFile(r.out).size(), *n);
  const std::vector<int> reads = r.ChunkReads(0, payload);
  EXPECT_EQ(std::set<int>(reads.begin(), reads.end()), std::set<int>{1});
}

TEST(ChunkSpoolTest, WithoutASpoolTheFileIsFetchedTwiceAndStillExact) {
  RemoteRelease r;
  absl::StatusOr<Permit> permit = r.Decide(Want{Want::Kind::kFile, {}, "train/big.bin"});
  ASSERT_TRUE(permit.ok()) << permit.status();
  const capsule::FileEntry f = *permit->file();
  ReleaseOptions o;
  o.held_in_memory = 0;
  o.spool_dir = r.f.root + "/no-such-folder";  // no spool can be made: not an error
  capsule::Fd fd(::open(r.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  absl::StatusOr<uint64_t> n = permit->StreamFile(fd.get(), o);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(ReadFile(r.out), ReadFile(r.f.root + "/data/train/big.bin"));
  const std::vector<int> reads = r.ChunkReads(f.offset, f.offset + f.size);
  EXPECT_EQ(std::set<int>(reads.begin(), reads.end()), std::set<int>{2});
}

TEST(ChunkSpoolTest, ACorruptChunkOfARemoteCapsuleReleasesNothing) {
  RemoteRelease r;
  absl::StatusOr<Permit> permit =
      r.Decide(Want{Want::Kind::kFile, {}, "train/big.bin"}, FlipChunkAt(r.f.capsule, 9));
  ASSERT_TRUE(permit.ok()) << permit.status();
  capsule::Fd fd(::open(r.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  absl::StatusOr<uint64_t> n = permit->StreamFile(fd.get(), r.Options());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss) << n.status();
  EXPECT_EQ(ReadFile(r.out), "");
}

TEST(ChunkSpoolTest, ASpoolChangedBetweenThePassesIsCaught) {
  capsule::testing::Keys keys;
  const std::vector<uint8_t> payload = capsule::testing::PatternBytes(50000, 3);
  std::map<uint64_t, int> reads;
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader =
      OpenRemote(keys, payload, &reads);
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::StatusOr<std::unique_ptr<capsule::PayloadKey>> key = (*reader)->Unlock(keys.alice);
  ASSERT_TRUE(key.ok()) << key.status();
  const std::string dir = MakeTempDir();
  std::unique_ptr<ChunkSpool> spool = ChunkSpool::Create(**reader, 0, payload.size(), dir);
  ASSERT_NE(spool, nullptr);
  // Nothing kept yet: the second pass would read the capsule.
  EXPECT_FALSE(spool->complete());
  EXPECT_EQ(spool->replay(), &(*reader)->file());
  capsule::MemorySink first;
  ASSERT_TRUE(CopyPayload(reader->get(), **key, 0, payload.size(), payload.size(), &first, {},
                          spool->recording())
                  .ok());
  ASSERT_TRUE(spool->complete());
  ASSERT_EQ(first.bytes, payload);
  // Until the first pass is declared good, the second reads the capsule again.
  EXPECT_EQ(spool->replay(), &(*reader)->file());
  spool->FirstPassSucceeded();
  // Read back as it was kept: the same bytes, and the capsule is not read again.
  reads.clear();
  capsule::MemorySink second;
  ASSERT_TRUE(CopyPayload(reader->get(), **key, 0, payload.size(), payload.size(), &second, {},
                          spool->replay())
                  .ok());
  EXPECT_EQ(second.bytes, payload);
  EXPECT_TRUE(reads.empty());
  // One byte of the spool's fifth chunk changed (by anyone who could reach it: its owner, through
  // /proc, or root): that chunk fails its AEAD tag.
  const std::string path = "/proc/self/fd/" + std::to_string(spool->fd_for_testing());
  capsule::Fd other(::open(path.c_str(), O_WRONLY | O_CLOEXEC));  // no O_DIRECT: one byte
  ASSERT_GE(other.get(), 0);
  const uint8_t x = 0x5a;
  ASSERT_EQ(::pwrite(other.get(), &x, 1, static_cast<off_t>(spool->offset_for_testing(4) + 7)), 1);
  ASSERT_EQ(::fsync(other.get()), 0);
  capsule::MemorySink third;
  absl::Status s = CopyPayload(reader->get(), **key, 0, payload.size(), payload.size(), &third,
                               {}, spool->replay());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("chunk 4 of"), std::string::npos) << s;
}

TEST(ChunkSpoolTest, ChunksOfAnySizeComeBackExactFromAnyOffset) {
  // Chunks larger than the spool's 256 KiB pieces and not a multiple of its 4 KiB blocks; a
  // range starting and ending inside chunks.
  capsule::testing::Keys keys;
  const uint32_t chunk = 300007;
  const std::vector<uint8_t> payload = capsule::testing::PatternBytes(5 * chunk + 1234, 8);
  std::map<uint64_t, int> reads;
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader =
      OpenRemote(keys, payload, &reads, chunk);
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::StatusOr<std::unique_ptr<capsule::PayloadKey>> key = (*reader)->Unlock(keys.alice);
  ASSERT_TRUE(key.ok()) << key.status();
  const uint64_t begin = chunk - 5, end = 4 * chunk + 77;
  std::unique_ptr<ChunkSpool> spool = ChunkSpool::Create(**reader, begin, end, MakeTempDir());
  ASSERT_NE(spool, nullptr);
  capsule::MemorySink first, second;
  ASSERT_TRUE(
      CopyPayload(reader->get(), **key, begin, end, end, &first, {}, spool->recording()).ok());
  ASSERT_TRUE(spool->complete());
  spool->FirstPassSucceeded();
  reads.clear();
  ASSERT_TRUE(
      CopyPayload(reader->get(), **key, begin, end, end, &second, {}, spool->replay()).ok());
  EXPECT_TRUE(reads.empty());
  const std::vector<uint8_t> want(payload.begin() + begin, payload.begin() + end);
  EXPECT_EQ(first.bytes, want);
  EXPECT_EQ(second.bytes, want);
  // Pieces of a chunk read through the spool at odd offsets match the capsule's bytes.
  const capsule::Geometry& g = (*reader)->geometry();
  for (const auto& [from, size] : std::vector<std::pair<uint64_t, size_t>>{
           {1, 10}, {4095, 2}, {262143, 5000}, {0, chunk + 16}, {299999, 24}}) {
    std::vector<uint8_t> a(size), b(size);
    ASSERT_TRUE((*reader)->file().ReadAt(g.ChunkOffset(2) + from, absl::MakeSpan(a)).ok());
    ASSERT_TRUE(spool->replay()->ReadAt(g.ChunkOffset(2) + from, absl::MakeSpan(b)).ok());
    EXPECT_EQ(a, b) << from;
  }
}

TEST(ChunkSpoolTest, SpoolsTogetherTakeAtMostHalfTheRoomAndLeaveTheReserve) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  const uint64_t r = ChunkSpool::kSpoolReserve;
  // Nothing live: half of what is free beyond the reserve.
  EXPECT_TRUE(ChunkSpool::Fits(r + 200 * kMiB, 0, 100 * kMiB));
  EXPECT_FALSE(ChunkSpool::Fits(r + 200 * kMiB, 0, 100 * kMiB + 1));
  // 100 MiB live (already taken from the free space): all spools together stay within half of
  // the 300 MiB they and the free space make, so only 50 MiB more fits.
  EXPECT_TRUE(ChunkSpool::Fits(r + 200 * kMiB, 100 * kMiB, 50 * kMiB));
  EXPECT_FALSE(ChunkSpool::Fits(r + 200 * kMiB, 100 * kMiB, 50 * kMiB + 1));
  // No more than what is free, never into the reserve, and nothing on a full disk.
  EXPECT_FALSE(ChunkSpool::Fits(r, 0, 1));
  EXPECT_FALSE(ChunkSpool::Fits(r - 1, 0, 0));
  EXPECT_FALSE(ChunkSpool::Fits(0, 0, 1));
  EXPECT_FALSE(ChunkSpool::Fits(UINT64_MAX, 0, UINT64_MAX));
  EXPECT_FALSE(ChunkSpool::Fits(r + 10 * kMiB, 1000 * kMiB, 1));
}

TEST(ChunkSpoolTest, ALiveSpoolCountsUntilItIsGone) {
  capsule::testing::Keys keys;
  const std::vector<uint8_t> payload = capsule::testing::PatternBytes(50000, 3);
  std::map<uint64_t, int> reads;
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader =
      OpenRemote(keys, payload, &reads);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const uint64_t before = ChunkSpool::live_bytes_for_testing();
  {
    std::unique_ptr<ChunkSpool> spool =
        ChunkSpool::Create(**reader, 0, payload.size(), MakeTempDir());
    ASSERT_NE(spool, nullptr);
    // 13 chunks of 4 KiB, each with its 16-byte tag, in a slot of whole 4 KiB blocks.
    EXPECT_EQ(ChunkSpool::live_bytes_for_testing() - before, 13 * 8192);
  }
  EXPECT_EQ(ChunkSpool::live_bytes_for_testing(), before);
}

TEST(ChunkSpoolTest, ALocalCapsuleIsNotSpooled) {
  capsule::testing::Keys keys;
  const crypto::PublicIdentity issuer = keys.issuer.public_identity();
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader = capsule::CapsuleReader::Open(
      capsule::MemoryFile(capsule::testing::SealRaw(keys, capsule::testing::PatternBytes(50000, 3))),
      absl::MakeConstSpan(&issuer, 1));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(ChunkSpool::Create(**reader, 0, 50000, MakeTempDir()), nullptr);
}

}  // namespace
}  // namespace bunker::site

// The release spool (site/chunk_spool.h): a remote capsule's chunks fetched once per release,
// checked on the way in, and a spool that changed or does not fit never trusted.
#include "site/chunk_spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "site/gate_test_fixture.h"
#include "site/release_io.h"

namespace bunker::site {
namespace {

using capsule::testing::ListDir;
using capsule::testing::MakeTempDir;
using capsule::testing::ReadFile;
using gate_testing::Fixture;
using gate_testing::FlipChunkAt;

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

// A payload sealed in chunks of `chunk_size` bytes, opened as a remote capsule that counts its
// reads, and unlocked.
struct RemotePayload {
  capsule::testing::Keys keys;
  std::vector<uint8_t> payload;
  std::map<uint64_t, int> reads;
  std::unique_ptr<capsule::CapsuleReader> reader;
  std::unique_ptr<capsule::PayloadKey> key;

  absl::Status Open(size_t size, uint32_t chunk_size = 4096) {
    payload = capsule::testing::PatternBytes(size, 3);
    absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> r =
        OpenRemote(keys, payload, &reads, chunk_size);
    if (!r.ok()) return r.status();
    reader = std::move(*r);
    absl::StatusOr<std::unique_ptr<capsule::PayloadKey>> k = reader->Unlock(keys.alice);
    if (!k.ok()) return k.status();
    key = std::move(*k);
    return absl::OkStatus();
  }
};

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

// Regression: without room for a spool, a stream fetched the remote object a second time for
// its writing pass, so an object changed between the passes cut the output short after part
// of the file was written (and spent the use). Now a stream from a remote capsule without a
// spool writes nothing and fails before the checking pass; a release into a new file still
// works (nothing is named until all of it is in place).
TEST(ChunkSpoolTest, WithoutASpoolAStreamFromARemoteCapsuleWritesNothing) {
  RemoteRelease r;
  ReleaseOptions o;
  o.held_in_memory = 0;
  o.spool_dir = r.f.root + "/no-such-folder";  // no spool can be made
  capsule::Fd fd(::open(r.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  {
    absl::StatusOr<Permit> permit = r.Decide(Want{Want::Kind::kFile, {}, "train/big.bin"});
    ASSERT_TRUE(permit.ok()) << permit.status();
    absl::StatusOr<uint64_t> n = permit->StreamFile(fd.get(), o);
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(n.status().code(), absl::StatusCode::kResourceExhausted) << n.status();
    EXPECT_NE(std::string(n.status().message()).find("no room in"), std::string::npos);
    EXPECT_TRUE(r.reads.empty()) << "the checking pass started";
  }
  {
    absl::StatusOr<Permit> permit = r.Decide(Want{Want::Kind::kArchive, {}, ""});
    ASSERT_TRUE(permit.ok()) << permit.status();
    absl::StatusOr<uint64_t> n = permit->StreamArchive(fd.get(), o);
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(n.status().code(), absl::StatusCode::kResourceExhausted) << n.status();
  }
  EXPECT_TRUE(ReadFile(r.out).empty());
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
  RemotePayload r;
  absl::Status opened = r.Open(50000);
  ASSERT_TRUE(opened.ok()) << opened;
  const std::string dir = MakeTempDir();
  std::unique_ptr<ChunkSpool> spool = ChunkSpool::Create(*r.reader, 0, r.payload.size(), dir);
  ASSERT_NE(spool, nullptr);
  // Nothing kept yet: the second pass would read the capsule.
  EXPECT_FALSE(spool->complete());
  EXPECT_EQ(spool->replay(), &r.reader->file());
  capsule::MemorySink first;
  ASSERT_TRUE(CopyPayload(r.reader.get(), *r.key, 0, r.payload.size(), r.payload.size(), &first, {},
                          spool->recording())
                  .ok());
  ASSERT_TRUE(spool->complete());
  ASSERT_EQ(first.bytes, r.payload);
  // Until the first pass is declared good, the second reads the capsule again.
  EXPECT_EQ(spool->replay(), &r.reader->file());
  spool->FirstPassSucceeded();
  // Read back as it was kept: the same bytes, and the capsule is not read again.
  r.reads.clear();
  capsule::MemorySink second;
  ASSERT_TRUE(CopyPayload(r.reader.get(), *r.key, 0, r.payload.size(), r.payload.size(), &second, {},
                          spool->replay())
                  .ok());
  EXPECT_EQ(second.bytes, r.payload);
  EXPECT_TRUE(r.reads.empty());
  // One byte of the spool's fifth chunk changed (by anyone who could reach it: its owner, through
  // /proc, or root): that chunk fails its AEAD tag.
  const std::string path = "/proc/self/fd/" + std::to_string(spool->fd_for_testing());
  capsule::Fd other(::open(path.c_str(), O_RDWR | O_CLOEXEC));  // no O_DIRECT: one byte
  ASSERT_GE(other.get(), 0);
  // Flipped, not overwritten with a fixed value: ciphertext holds any byte 1 time in 256.
  const off_t at = static_cast<off_t>(spool->offset_for_testing(4) + 7);
  uint8_t x = 0;
  ASSERT_EQ(::pread(other.get(), &x, 1, at), 1);
  x ^= 0x01;
  ASSERT_EQ(::pwrite(other.get(), &x, 1, at), 1);
  ASSERT_EQ(::fsync(other.get()), 0);
  capsule::MemorySink third;
  absl::Status s = CopyPayload(r.reader.get(), *r.key, 0, r.payload.size(), r.payload.size(), &third,
                               {}, spool->replay());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("chunk 4 of"), std::string::npos) << s;
}

TEST(ChunkSpoolTest, ChunksOfAnySizeComeBackExactFromAnyOffset) {
  // Chunks larger than the spool's pieces (1 MiB and 4 KiB) and not a multiple of its 4 KiB
  // blocks; a range starting and ending inside chunks.
  const uint32_t chunk = 1300007;
  RemotePayload r;
  absl::Status opened = r.Open(5 * chunk + 1234, chunk);
  ASSERT_TRUE(opened.ok()) << opened;
  const uint64_t begin = chunk - 5, end = 4 * chunk + 77;
  std::unique_ptr<ChunkSpool> spool = ChunkSpool::Create(*r.reader, begin, end, MakeTempDir());
  ASSERT_NE(spool, nullptr);
  capsule::MemorySink first, second;
  ASSERT_TRUE(
      CopyPayload(r.reader.get(), *r.key, begin, end, end, &first, {}, spool->recording()).ok());
  ASSERT_TRUE(spool->complete());
  spool->FirstPassSucceeded();
  r.reads.clear();
  ASSERT_TRUE(
      CopyPayload(r.reader.get(), *r.key, begin, end, end, &second, {}, spool->replay()).ok());
  EXPECT_TRUE(r.reads.empty());
  const std::vector<uint8_t> want(r.payload.begin() + begin, r.payload.begin() + end);
  EXPECT_EQ(first.bytes, want);
  EXPECT_EQ(second.bytes, want);
  // Pieces of a chunk read through the spool at odd offsets match the capsule's bytes.
  const capsule::Geometry& g = r.reader->geometry();
  for (const auto& [from, size] : std::vector<std::pair<uint64_t, size_t>>{
           {1, 10}, {4095, 2}, {1048575, 5000}, {0, chunk + 16}, {chunk - 8, 24}}) {
    std::vector<uint8_t> a(size), b(size);
    ASSERT_TRUE(r.reader->file().ReadAt(g.ChunkOffset(2) + from, absl::MakeSpan(a)).ok());
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

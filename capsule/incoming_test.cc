#include "capsule/incoming.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using testing::Keys;

constexpr uint32_t kChunk = 4096;

struct Sent {
  std::vector<uint8_t> capsule;
  std::unique_ptr<CapsuleReader> reader;
  Prelude prelude;
};

Sent MakeCapsule(const Keys& keys, size_t payload) {
  Sent s;
  s.capsule = testing::SealRaw(keys, testing::PatternBytes(payload, 77), kChunk);
  auto r = CapsuleReader::Open(MemoryFile(s.capsule), {keys.issuer.public_identity()});
  EXPECT_TRUE(r.ok()) << r.status();
  s.reader = std::move(*r);
  auto p = ReadPrelude(*s.reader);
  EXPECT_TRUE(p.ok());
  s.prelude = *p;
  return s;
}

std::vector<uint8_t> Chunk(const Sent& s, uint64_t i) {
  const Geometry& g = s.reader->geometry();
  std::vector<uint8_t> out(g.CipherSize(i));
  EXPECT_TRUE(s.reader->ReadRaw(g.ChunkOffset(i), absl::MakeSpan(out)).ok());
  return out;
}

std::vector<crypto::PublicIdentity> Trust(const Keys& keys) {
  return {keys.issuer.public_identity()};
}

TEST(IncomingCapsuleTest, ChunksInAnyOrderGiveAByteIdenticalCapsule) {
  Keys keys;
  const Sent s = MakeCapsule(keys, 9 * kChunk + 123);
  const std::string store = testing::MakeTempDir() + "/store";
  auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
  ASSERT_TRUE(in.ok()) << in.status();
  std::vector<uint64_t> order = (*in)->Missing();
  ASSERT_EQ(order.size(), 10u);
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  for (uint64_t i : order) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
  EXPECT_EQ((*in)->Finish().status().code(), absl::StatusCode::kFailedPrecondition)
      << "chunks written but not synced are not received";
  auto synced = (*in)->Sync();
  ASSERT_TRUE(synced.ok());
  EXPECT_EQ(synced->size(), 10u);
  EXPECT_TRUE((*in)->Missing().empty());
  auto path = (*in)->Finish();
  ASSERT_TRUE(path.ok()) << path.status();
  const std::string got = testing::ReadFile(*path);
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), s.capsule);
  EXPECT_TRUE(testing::ListDir(store + "/.incoming").empty());
  // Receiving it again is refused: it is already there.
  EXPECT_EQ(LocalIncoming::Begin(store, s.prelude, Trust(keys)).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(IncomingCapsuleTest, ResumeAfterACrashNeedsOnlyTheUnjournaledChunks) {
  Keys keys;
  const Sent s = MakeCapsule(keys, 8 * kChunk);
  const std::string store = testing::MakeTempDir();
  {
    auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
    ASSERT_TRUE(in.ok());
    for (uint64_t i : {0, 1, 2}) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
    ASSERT_TRUE((*in)->Sync().ok());
    for (uint64_t i : {3, 4}) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
    // "Crash": destroyed without Sync; chunks 3 and 4 were never acknowledged.
  }
  // A torn journal record from the crash is ignored.
  const std::string journal = store + "/.incoming/" + s.reader->manifest().IdHex() + ".journal";
  {
    FILE* f = std::fopen(journal.c_str(), "ab");
    std::fputc(0, f);
    std::fputc(0, f);
    std::fclose(f);
  }
  auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ((*in)->Missing(), (std::vector<uint64_t>{3, 4, 5, 6, 7}));
  for (uint64_t i : (*in)->Missing()) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
  ASSERT_TRUE((*in)->Sync().ok());
  auto path = (*in)->Finish();
  ASSERT_TRUE(path.ok()) << path.status();
  const std::string got = testing::ReadFile(*path);
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), s.capsule);
}

// Regression: after a restart, a journal naming chunks that were never written (edited by
// hand, or restored from a backup newer than the partial file) was believed; the chunks were
// never asked for, and Finish stored a capsule that fails verification, recorded as received.
// Now the journaled chunks of files this process did not write are checked once at Begin, and
// those that fail are missing again; the capsule then completes as signed.
TEST(IncomingCapsuleTest, JournaledChunksNeverWrittenAreMissingAfterARestart) {
  Keys keys;
  const Sent s = MakeCapsule(keys, 8 * kChunk);
  const std::string store = testing::MakeTempDir();
  {
    auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
    ASSERT_TRUE(in.ok());
    for (uint64_t i : {0, 1}) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
    ASSERT_TRUE((*in)->Sync().ok());
  }
  const std::string base = store + "/.incoming/" + s.reader->manifest().IdHex();
  {
    FILE* f = std::fopen((base + ".journal").c_str(), "ab");
    ASSERT_NE(f, nullptr);
    for (uint8_t i : {4, 5, 6}) {  // big-endian u64 records of chunks never written
      const uint8_t record[8] = {0, 0, 0, 0, 0, 0, 0, i};
      std::fwrite(record, 1, 8, f);
    }
    std::fclose(f);
  }
  {
    // The same process reopening its own files takes its journal at its word.
    auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
    ASSERT_TRUE(in.ok()) << in.status();
    EXPECT_EQ((*in)->Missing(), (std::vector<uint64_t>{2, 3, 7}));
  }
  ForgetCheckedIncomingForTesting();  // "restart"
  auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ((*in)->Missing(), (std::vector<uint64_t>{2, 3, 4, 5, 6, 7}));
  for (uint64_t i : (*in)->Missing()) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
  ASSERT_TRUE((*in)->Sync().ok());
  auto path = (*in)->Finish();
  ASSERT_TRUE(path.ok()) << path.status();
  const std::string got = testing::ReadFile(*path);
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), s.capsule);
}

// A journal that outlived its capsule file (the file deleted to free disk, or a crash between
// Finish's two unlinks) must not make the chunks of a new, empty file count as received.
TEST(IncomingCapsuleTest, AJournalWithoutItsFileCountsNothing) {
  Keys keys;
  const Sent s = MakeCapsule(keys, 6 * kChunk);
  const std::string store = testing::MakeTempDir();
  const std::string partial = store + "/.incoming/" + s.reader->manifest().IdHex() + ".capsule";
  {
    auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
    ASSERT_TRUE(in.ok());
    for (uint64_t i : {0, 1, 2, 3}) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
    ASSERT_TRUE((*in)->Sync().ok());
  }
  ASSERT_EQ(::unlink(partial.c_str()), 0);
  {
    auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
    ASSERT_TRUE(in.ok()) << in.status();
    EXPECT_EQ((*in)->Missing().size(), 6u);
    EXPECT_EQ((*in)->Finish().status().code(), absl::StatusCode::kFailedPrecondition);
  }
  // And after a restart with the file now there, still nothing counts.
  auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ((*in)->Missing().size(), 6u);
  for (uint64_t i : (*in)->Missing()) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
  ASSERT_TRUE((*in)->Sync().ok());
  auto path = (*in)->Finish();
  ASSERT_TRUE(path.ok()) << path.status();
  const std::string got = testing::ReadFile(*path);
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), s.capsule);
}

// Regression (#12): a chunk found damaged after it was durably received (an S3 store checks it
// again as it leaves its spool) is taken back: missing again, also after a restart, and
// received anew.
TEST(IncomingCapsuleTest, ForgottenChunksAreMissingAgainAcrossARestart) {
  Keys keys;
  const Sent s = MakeCapsule(keys, 6 * kChunk);
  const std::string store = testing::MakeTempDir();
  {
    auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
    ASSERT_TRUE(in.ok());
    for (uint64_t i = 0; i < 6; ++i) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
    ASSERT_TRUE((*in)->Sync().ok());
    EXPECT_TRUE((*in)->Missing().empty());
    ASSERT_TRUE((*in)->Forget({2, 4}).ok());
    EXPECT_EQ((*in)->Missing(), (std::vector<uint64_t>{2, 4}));
    EXPECT_EQ((*in)->received_count(), 4u);
    EXPECT_EQ((*in)->Finish().status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ((*in)->Forget({6}).code(), absl::StatusCode::kInvalidArgument);
    // Chunk 4 comes back before the "crash".
    ASSERT_TRUE((*in)->PutChunk(4, Chunk(s, 4)).ok());
    ASSERT_TRUE((*in)->Sync().ok());
  }
  auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ((*in)->Missing(), (std::vector<uint64_t>{2}));
  ASSERT_TRUE((*in)->PutChunk(2, Chunk(s, 2)).ok());
  ASSERT_TRUE((*in)->Sync().ok());
  auto path = (*in)->Finish();
  ASSERT_TRUE(path.ok()) << path.status();
  const std::string got = testing::ReadFile(*path);
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), s.capsule);
}

TEST(IncomingCapsuleTest, BadChunkIsRefusedAndCanBeSentAgain) {
  Keys keys;
  const Sent s = MakeCapsule(keys, 3 * kChunk);
  auto in = LocalIncoming::Begin(testing::MakeTempDir(), s.prelude, Trust(keys));
  ASSERT_TRUE(in.ok());
  auto bad = Chunk(s, 1);
  bad[10] ^= 1;
  EXPECT_TRUE(absl::IsDataLoss((*in)->PutChunk(1, bad)));
  EXPECT_TRUE(absl::IsDataLoss((*in)->PutChunk(2, Chunk(s, 1))));  // a chunk for the wrong index
  EXPECT_EQ((*in)->PutChunk(9, Chunk(s, 1)).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*in)->Sync().ok());
  EXPECT_EQ((*in)->Missing(), (std::vector<uint64_t>{0, 1, 2}));
  for (uint64_t i : {0, 1, 2}) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
  ASSERT_TRUE((*in)->Sync().ok());
  EXPECT_TRUE((*in)->Finish().ok());
}

TEST(IncomingCapsuleTest, FinishDoesNotReadTheCapsuleBack) {
  // Every chunk was checked before it was written; Finish trusts the journal and the daemon's
  // own folder (spec/TRANSFER.md "Push"). A change made behind the daemon's back is caught by
  // every reader, which checks each chunk it reads.
  Keys keys;
  const Sent s = MakeCapsule(keys, 3 * kChunk);
  const std::string store = testing::MakeTempDir();
  auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
  ASSERT_TRUE(in.ok());
  for (uint64_t i : {0, 1, 2}) ASSERT_TRUE((*in)->PutChunk(i, Chunk(s, i)).ok());
  ASSERT_TRUE((*in)->Sync().ok());
  const std::string partial = store + "/.incoming/" + s.reader->manifest().IdHex() + ".capsule";
  FILE* f = std::fopen(partial.c_str(), "r+b");
  // Flipped, not overwritten with a fixed value: ciphertext holds any byte 1 time in 256.
  const long at = static_cast<long>(s.reader->geometry().ChunkOffset(1) + 5);
  std::fseek(f, at, SEEK_SET);
  const int was = std::fgetc(f);
  ASSERT_NE(was, EOF);
  std::fseek(f, at, SEEK_SET);
  std::fputc(was ^ 0x01, f);
  std::fclose(f);
  auto path = (*in)->Finish();
  ASSERT_TRUE(path.ok()) << path.status();
  auto file = OpenFile(*path);
  ASSERT_TRUE(file.ok());
  auto reader = CapsuleReader::Open(std::move(*file), Trust(keys));
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE(absl::IsDataLoss((*reader)->VerifyChunks(0, nullptr)));
}

// Offers made at once are checked against the room the others were promised, not each against
// the whole free space (which shows only what they have written so far). Before: two offers
// that each fitted alone were both accepted, and filled the disk together.
TEST(IncomingCapsuleTest, OffersAtOnceShareTheFreeSpace) {
  Keys keys;
  const Sent a = MakeCapsule(keys, 8 * kChunk);
  const Sent b = MakeCapsule(keys, 8 * kChunk);
  const uint64_t size = a.reader->geometry().FileSize();
  ASSERT_EQ(b.reader->geometry().FileSize(), size);
  // A disk whose free space stays 1.5 capsules whatever is written (what is written is taken
  // off the promise, as the real free space would show it).
  SetFreeSpaceForTesting([size](const std::string&) { return size + size / 2; });
  struct Reset {
    ~Reset() { SetFreeSpaceForTesting(nullptr); }
  } reset;
  const std::string store = testing::MakeTempDir();
  auto in_a = LocalIncoming::Begin(store, a.prelude, Trust(keys), 0);
  ASSERT_TRUE(in_a.ok()) << in_a.status();
  auto in_b = LocalIncoming::Begin(store, b.prelude, Trust(keys), 0);
  EXPECT_EQ(in_b.status().code(), absl::StatusCode::kResourceExhausted) << in_b.status();
  // Half of a's chunks written: still no room for all of b.
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE((*in_a)->PutChunk(i, Chunk(a, i)).ok());
  // The same chunks again take nothing more off the promise, and nothing back.
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE((*in_a)->PutChunk(i, Chunk(a, i)).ok());
  EXPECT_EQ(LocalIncoming::Begin(store, b.prelude, Trust(keys), 0).status().code(),
            absl::StatusCode::kResourceExhausted);
  // All of a's chunks written: a promises nothing more, so b fits.
  for (uint64_t i = 4; i < 8; ++i) ASSERT_TRUE((*in_a)->PutChunk(i, Chunk(a, i)).ok());
  in_b = LocalIncoming::Begin(store, b.prelude, Trust(keys), 0);
  EXPECT_TRUE(in_b.ok()) << in_b.status();
  in_b = absl::CancelledError("gone");
  // A capsule that goes gives back what it was promised: b, begun again, fits beside a fresh c.
  const Sent c = MakeCapsule(keys, 8 * kChunk);
  auto in_c = LocalIncoming::Begin(store, c.prelude, Trust(keys), 0);
  ASSERT_TRUE(in_c.ok()) << in_c.status();
  EXPECT_EQ(LocalIncoming::Begin(store, b.prelude, Trust(keys), 0).status().code(),
            absl::StatusCode::kResourceExhausted);
  in_c = absl::CancelledError("gone");
  EXPECT_TRUE(LocalIncoming::Begin(store, b.prelude, Trust(keys), 0).ok());
}

TEST(IncomingCapsuleTest, DamagedJournalOrHalfCreatedFileStartsOver) {
  Keys keys;
  const Sent s = MakeCapsule(keys, 3 * kChunk);
  const std::string store = testing::MakeTempDir();
  const std::string base = store + "/.incoming/" + s.reader->manifest().IdHex();
  {
    auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
    ASSERT_TRUE(in.ok());
    ASSERT_TRUE((*in)->PutChunk(0, Chunk(s, 0)).ok());
    ASSERT_TRUE((*in)->Sync().ok());
  }
  testing::WriteFile(base + ".journal", std::string(8, '\xff'), 0600);  // index out of range
  auto in = LocalIncoming::Begin(store, s.prelude, Trust(keys));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ((*in)->Missing().size(), 3u) << "a damaged journal costs a resend, not the transfer";
  in->reset();
  // A crash right after the file was sized: zeros where the prelude goes.
  testing::WriteFile(base + ".capsule", std::string(s.capsule.size(), '\0'), 0600);
  auto again = LocalIncoming::Begin(store, s.prelude, Trust(keys));
  ASSERT_TRUE(again.ok()) << again.status();
  for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE((*again)->PutChunk(i, Chunk(s, i)).ok());
  ASSERT_TRUE((*again)->Sync().ok());
  auto path = (*again)->Finish();
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*(*again)->Finish(), *path) << "a second Finish returns the same capsule";
}

TEST(IncomingCapsuleTest, UntrustedTamperedOrDifferentPreludesAreRefused) {
  Keys keys;
  const Sent s = MakeCapsule(keys, 2 * kChunk);
  const std::string store = testing::MakeTempDir();
  EXPECT_EQ(LocalIncoming::Begin(store, s.prelude, {keys.mallory.public_identity()})
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
  Prelude flipped = s.prelude;
  flipped.tail[flipped.tail.size() / 2] ^= 1;
  EXPECT_FALSE(LocalIncoming::Begin(store, flipped, Trust(keys)).ok());
  Prelude cut = s.prelude;
  cut.tail.resize(cut.tail.size() - 1);
  EXPECT_TRUE(absl::IsDataLoss(LocalIncoming::Begin(store, cut, Trust(keys)).status()));
  Prelude table = s.prelude;
  table.tail[3] ^= 1;  // in the chunk table
  EXPECT_TRUE(absl::IsDataLoss(LocalIncoming::Begin(store, table, Trust(keys)).status()));
  // Nothing was left behind by the refusals.
  EXPECT_TRUE(testing::ListDir(store).empty() ||
              testing::ListDir(store + "/.incoming").empty());
}

}  // namespace
}  // namespace bunker::capsule

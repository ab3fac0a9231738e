// Round trips and attacks on the capsule container: every region flipped, truncations at and
// between chunk boundaries, appended bytes, swapped/duplicated chunks, spliced manifests,
// moved recipient entries, forged chunks, downgrades, oversized lengths.
#include <unistd.h>

#include <algorithm>

#include "capsule/capsule_test_util.h"
#include "capsule/reader.h"
#include "capsule/writer.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using testing::Keys;
using testing::PatternBytes;
using testing::MustResign;
using testing::SealRaw;

constexpr uint32_t kChunk = 4096;

// Opens trusting the test issuer.
absl::StatusOr<std::unique_ptr<CapsuleReader>> OpenBytes(const Keys& keys,
                                                         std::vector<uint8_t> bytes) {
  const crypto::PublicIdentity issuer = keys.issuer.public_identity();
  return CapsuleReader::Open(MemoryFile(std::move(bytes)), absl::MakeConstSpan(&issuer, 1));
}

// Reads payload [begin, end) through the public API.
absl::StatusOr<std::vector<uint8_t>> ReadRange(const CapsuleReader& r, const PayloadKey& key,
                                               uint64_t begin, uint64_t end, int threads = 2) {
  auto stream = r.Stream(key, begin, end, threads);
  if (!stream.ok()) return stream.status();
  std::vector<uint8_t> out;
  while (true) {
    auto piece = (*stream)->Next();
    if (!piece.ok()) return piece.status();
    if (piece->empty()) break;
    out.insert(out.end(), piece->begin(), piece->end());
  }
  return out;
}

// Opens, checks every chunk, unlocks as alice and reads everything: the full reader path.
absl::Status ReadAll(std::vector<uint8_t> bytes, const Keys& keys) {
  auto r = OpenBytes(keys, std::move(bytes));
  if (!r.ok()) return r.status();
  auto key = (*r)->Unlock(keys.alice);
  if (!key.ok()) return key.status();
  return ReadRange(**r, **key, 0, (*r)->manifest().payload_size).status();
}

class RoundTripTest : public ::testing::TestWithParam<std::tuple<size_t, crypto::Suite>> {};

TEST_P(RoundTripTest, PayloadSurvivesAndEveryRangeReads) {
  Keys keys;
  const auto [size, suite] = GetParam();
  const auto payload = PatternBytes(size, static_cast<uint32_t>(size));
  const auto capsule = SealRaw(keys, payload, kChunk, suite);
  auto r = OpenBytes(keys, capsule);
  ASSERT_TRUE(r.ok()) << r.status();
  const Manifest& m = (*r)->manifest();
  EXPECT_EQ(m.payload_size, size);
  EXPECT_EQ(m.chunk_count, ChunkCountFor(size, kChunk));
  EXPECT_EQ(m.suite, suite);
  EXPECT_EQ((*r)->file_size(), capsule.size());
  EXPECT_TRUE((*r)->VerifyChunks(2, nullptr).ok());
  for (const crypto::Identity* who : {&keys.alice, &keys.bob}) {
    auto key = (*r)->Unlock(*who);
    ASSERT_TRUE(key.ok()) << key.status();
    auto all = ReadRange(**r, **key, 0, size, 3);
    ASSERT_TRUE(all.ok()) << all.status();
    EXPECT_EQ(*all, payload);
  }
  auto key = (*r)->Unlock(keys.alice);
  ASSERT_TRUE(key.ok());
  const uint64_t cuts[] = {0, 1, kChunk - 1, kChunk, kChunk + 1, 2 * kChunk + 5, size / 2, size};
  for (uint64_t a : cuts) {
    for (uint64_t b : cuts) {
      if (a > b || b > size) continue;
      auto part = ReadRange(**r, **key, a, b, 1);
      ASSERT_TRUE(part.ok()) << part.status();
      EXPECT_EQ(*part, std::vector<uint8_t>(payload.begin() + a, payload.begin() + b))
          << a << ".." << b;
    }
  }
  EXPECT_FALSE((*r)->Stream(**key, 0, size + 1, 1).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, RoundTripTest,
    ::testing::Combine(::testing::Values(0, 1, kChunk - 1, kChunk, kChunk + 1, 3 * kChunk,
                                         10 * kChunk + 7),
                       ::testing::Values(crypto::Suite::kAes256Gcm,
                                         crypto::Suite::kChaCha20Poly1305)));

TEST(CapsuleTest, ThreadCountDoesNotChangeThePayload) {
  Keys keys;
  const auto payload = PatternBytes(37 * kChunk + 11, 7);
  for (int threads : {1, 2, 5}) {
    const auto capsule = SealRaw(keys, payload, kChunk, crypto::Suite::kAes256Gcm, threads);
    EXPECT_TRUE(ReadAll(capsule, keys).ok()) << threads;
  }
}

TEST(CapsuleTest, StrangerIsNotARecipient) {
  Keys keys;
  auto r = OpenBytes(keys, SealRaw(keys, PatternBytes(100, 1)));
  ASSERT_TRUE(r.ok());
  auto key = (*r)->Unlock(keys.mallory);
  EXPECT_EQ(key.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(key.status().message().find(keys.mallory.fingerprint().ToString()), std::string::npos);
}

TEST(CapsuleTest, UntrustedIssuerIsRefusedBeforeTheChunkTable) {
  Keys keys;
  const auto capsule = SealRaw(keys, PatternBytes(100, 1));
  const std::vector<crypto::PublicIdentity> alice = {keys.alice.public_identity()};
  EXPECT_EQ(CapsuleReader::Open(MemoryFile(capsule), alice).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CapsuleReader::Open(MemoryFile(capsule), {}).status().code(),
            absl::StatusCode::kPermissionDenied);
  const std::vector<crypto::PublicIdentity> both = {keys.alice.public_identity(),
                                                    keys.issuer.public_identity()};
  EXPECT_TRUE(CapsuleReader::Open(MemoryFile(capsule), both).ok());
  // An untrusted reader shows the manifest but releases no chunk and no key.
  auto untrusted = CapsuleReader::OpenUntrusted(MemoryFile(capsule));
  ASSERT_TRUE(untrusted.ok());
  EXPECT_FALSE((*untrusted)->trusted());
  EXPECT_EQ((*untrusted)->VerifyChunks(1, nullptr).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*untrusted)->Unlock(keys.alice).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Flipping any single byte anywhere must be detected by Open (structure, signature, table) or,
// for chunk bytes, by VerifyChunks and by the payload stream, never silently accepted.
TEST(CorruptionTest, EveryFlippedByteIsDetected) {
  Keys keys;
  const auto capsule = SealRaw(keys, PatternBytes(3 * kChunk + 100, 3));
  const testing::Parts parts = testing::MustSplit(capsule);
  const uint64_t chunks_end = kHeaderSize + parts.chunks.size();
  // Every byte outside the chunks, and a stride through the chunks.
  for (uint64_t i = 0; i < capsule.size(); i += (i >= kHeaderSize && i < chunks_end) ? 97 : 1) {
    auto bad = capsule;
    bad[i] ^= 0x01;
    auto r = OpenBytes(keys, bad);
    if (!r.ok()) {
      EXPECT_TRUE(absl::IsDataLoss(r.status()) || absl::IsInvalidArgument(r.status()))
          << "offset " << i << ": " << r.status();
      continue;
    }
    ASSERT_TRUE(i >= kHeaderSize && i < chunks_end) << "flip at " << i << " not detected by Open";
    absl::Status v = (*r)->VerifyChunks(2, nullptr);
    EXPECT_TRUE(absl::IsDataLoss(v)) << "offset " << i;
    const uint64_t chunk = (i - kHeaderSize) / (kChunk + kTagSize);
    EXPECT_NE(v.message().find("chunk " + std::to_string(chunk) + " of 4"), std::string::npos)
        << v.message();
    EXPECT_TRUE(absl::IsDataLoss(ReadAll(bad, keys))) << "offset " << i;
  }
}

TEST(CorruptionTest, TruncationAnywhereIsDetected) {
  Keys keys;
  const auto capsule = SealRaw(keys, PatternBytes(4 * kChunk, 4));
  std::vector<uint64_t> cuts = {0, 1, 8, kHeaderSize, capsule.size() - 1, capsule.size() - 16,
                                capsule.size() - 17, capsule.size() - 80};
  for (uint64_t c = 0; c <= 4; ++c) {
    const uint64_t boundary = kHeaderSize + c * (kChunk + kTagSize);
    cuts.push_back(boundary);
    cuts.push_back(boundary + 1);
    cuts.push_back(boundary - 1);
  }
  for (uint64_t cut : cuts) {
    std::vector<uint8_t> bad(capsule.begin(), capsule.begin() + static_cast<std::ptrdiff_t>(cut));
    auto r = OpenBytes(keys, bad);
    EXPECT_TRUE(absl::IsDataLoss(r.status())) << "cut at " << cut << ": " << r.status();
  }
}

// A capsule file that shrinks after it was opened (a writer racing the reader) fails closed,
// verified or streamed, with an error that says so rather than "truncated".
TEST(CorruptionTest, FileShrunkAfterOpenIsReportedAsChangedWhileBeingRead) {
  Keys keys;
  const std::vector<uint8_t> capsule = SealRaw(keys, PatternBytes(8 * kChunk, 41), kChunk);
  const std::string path = testing::MakeTempDir() + "/c.capsule";
  testing::WriteFile(path, std::string(capsule.begin(), capsule.end()));
  const crypto::PublicIdentity issuer = keys.issuer.public_identity();
  auto file = OpenFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto r = CapsuleReader::Open(std::move(*file), absl::MakeConstSpan(&issuer, 1));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>((*r)->geometry().ChunkOffset(3))), 0);
  const absl::Status verified = (*r)->VerifyChunks(2, nullptr);
  EXPECT_EQ(verified.code(), absl::StatusCode::kDataLoss) << verified;
  EXPECT_EQ(verified.message(), "capsule file changed while being read (it ends before chunk 3 now)");
  auto key = (*r)->Unlock(keys.alice);
  ASSERT_TRUE(key.ok()) << key.status();
  const absl::StatusOr<std::vector<uint8_t>> read =
      ReadRange(**r, **key, 0, (*r)->manifest().payload_size);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_EQ(read.status().message(),
            "capsule file changed while being read (it ends before chunk 3 now)");
}

TEST(CorruptionTest, ChunksCutAtABoundaryWithTheTailKeptAreDetected) {
  Keys keys;
  const auto capsule = SealRaw(keys, PatternBytes(4 * kChunk, 4));
  testing::Parts p = testing::MustSplit(capsule);
  p.chunks.resize(2 * (kChunk + kTagSize));  // drop the last two chunks, keep table+manifest
  auto r = OpenBytes(keys, testing::Join(p));
  EXPECT_TRUE(absl::IsDataLoss(r.status())) << r.status();
}

TEST(CorruptionTest, AppendedBytesAreDetected) {
  Keys keys;
  auto capsule = SealRaw(keys, PatternBytes(2 * kChunk, 5));
  for (size_t extra : {1, 16, 4096}) {
    auto bad = capsule;
    bad.insert(bad.end(), extra, 0);
    EXPECT_TRUE(absl::IsDataLoss(OpenBytes(keys, bad).status())) << extra;
  }
  // Appending a whole copy of the tail (footer included) keeps the footer valid but not the size.
  auto bad = capsule;
  bad.insert(bad.end() - kFooterSize, capsule.end() - 200, capsule.end() - kFooterSize);
  EXPECT_TRUE(absl::IsDataLoss(OpenBytes(keys, bad).status()));
}

TEST(CorruptionTest, SwappedAndDuplicatedChunksAreDetected) {
  Keys keys;
  const auto capsule = SealRaw(keys, PatternBytes(4 * kChunk, 6));
  const size_t c = kChunk + kTagSize;
  auto swapped = capsule;
  std::swap_ranges(swapped.begin() + kHeaderSize + c, swapped.begin() + kHeaderSize + 2 * c,
                   swapped.begin() + kHeaderSize + 2 * c);
  auto r = OpenBytes(keys, swapped);
  ASSERT_TRUE(r.ok());
  absl::Status v = (*r)->VerifyChunks(1, nullptr);
  EXPECT_TRUE(absl::IsDataLoss(v));
  EXPECT_NE(v.message().find("chunk 1 of 4"), std::string::npos) << v.message();
  EXPECT_TRUE(absl::IsDataLoss(ReadAll(swapped, keys)));

  auto duplicated = capsule;
  std::copy(capsule.begin() + kHeaderSize, capsule.begin() + kHeaderSize + c,
            duplicated.begin() + kHeaderSize + c);
  EXPECT_TRUE(absl::IsDataLoss(ReadAll(duplicated, keys)));
}

TEST(CorruptionTest, ManifestFromAnotherCapsuleIsDetected) {
  Keys keys;
  const auto a = SealRaw(keys, PatternBytes(3 * kChunk, 7));
  const auto b = SealRaw(keys, PatternBytes(3 * kChunk, 8));
  testing::Parts pa = testing::MustSplit(a), pb = testing::MustSplit(b);
  testing::Parts spliced = pa;
  spliced.manifest = pb.manifest;
  spliced.signature = pb.signature;
  spliced.footer = pb.footer;
  EXPECT_TRUE(absl::IsDataLoss(OpenBytes(keys, testing::Join(spliced)).status()));
  // Even with b's chunk table, a's chunks do not match b's signed table.
  spliced.table = pb.table;
  auto r = OpenBytes(keys, testing::Join(spliced));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(absl::IsDataLoss((*r)->VerifyChunks(1, nullptr)));
  EXPECT_TRUE(absl::IsDataLoss(ReadAll(testing::Join(spliced), keys)));
}

TEST(CorruptionTest, RecipientEntryMovedFromAnotherCapsuleDoesNotUnwrap) {
  Keys keys;
  const auto a = SealRaw(keys, PatternBytes(kChunk, 9));
  const auto b = SealRaw(keys, PatternBytes(kChunk, 10));
  auto mb = DecodeManifest(testing::MustSplit(b).manifest);
  ASSERT_TRUE(mb.ok());
  // Without the issuer's key the swap breaks the signature...
  testing::Parts p = testing::MustSplit(a);
  auto ma = DecodeManifest(p.manifest);
  ma->recipients[0] = mb->recipients[0];
  p.manifest = *EncodeManifest(*ma);
  EXPECT_TRUE(absl::IsDataLoss(OpenBytes(keys, testing::Join(p)).status()));
  // ...and even re-signed by the issuer, the entry is bound to b's id and does not unwrap.
  const auto moved = MustResign(a, keys.issuer, [&](Manifest& m) { m.recipients[0] = mb->recipients[0]; });
  auto r = OpenBytes(keys, moved);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(absl::IsDataLoss((*r)->Unlock(keys.alice).status()));
}

TEST(CorruptionTest, PolicySwapInvalidatesTheKeyWrap) {
  Keys keys;
  const auto a = SealRaw(keys, PatternBytes(kChunk, 9), kChunk, crypto::Suite::kAes256Gcm, 2,
                         "{\"version\": 1}");
  const auto swapped = MustResign(a, keys.issuer, [](Manifest& m) { m.policy = "{}"; });
  auto r = OpenBytes(keys, swapped);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(absl::IsDataLoss((*r)->Unlock(keys.alice).status()));
}

TEST(CorruptionTest, ForgedRecipientFailsKeyCommitment) {
  Keys keys;
  const auto a = SealRaw(keys, PatternBytes(kChunk, 11));
  // An entry that unwraps to a different data key for mallory, re-signed by the issuer.
  const auto forged = MustResign(a, keys.issuer, [&](Manifest& m) {
    const auto other = crypto::SecretBytes::Random(kDataKeySize);
    auto wrapped = crypto::WrapKey(keys.mallory.public_identity().box_key, other, WrapContext(m));
    m.recipients.push_back({keys.mallory.fingerprint(), *wrapped});
  });
  auto r = OpenBytes(keys, forged);
  ASSERT_TRUE(r.ok());
  auto key = (*r)->Unlock(keys.mallory);
  EXPECT_TRUE(absl::IsDataLoss(key.status()));
  EXPECT_NE(key.status().message().find("commitment"), std::string::npos);
}

TEST(CorruptionTest, SuiteOrChunkSizeDowngradeFails) {
  Keys keys;
  const auto a = SealRaw(keys, PatternBytes(2 * kChunk, 12));
  const auto downgraded = MustResign(a, keys.issuer, [](Manifest& m) {
    m.suite = crypto::Suite::kChaCha20Poly1305;
  });
  auto r = OpenBytes(keys, downgraded);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(absl::IsDataLoss((*r)->Unlock(keys.alice).status()));
}

TEST(CorruptionTest, RecipientCannotForgeAChunk) {
  Keys keys;
  const auto payload = PatternBytes(2 * kChunk, 13);
  auto capsule = SealRaw(keys, payload);
  auto r = OpenBytes(keys, capsule);
  ASSERT_TRUE(r.ok());
  auto key = (*r)->Unlock(keys.alice);
  ASSERT_TRUE(key.ok());
  // Alice re-encrypts chunk 0 with altered plaintext under the real key.
  std::vector<uint8_t> forged(payload.begin(), payload.begin() + kChunk);
  forged[0] ^= 0xff;
  std::vector<uint8_t> ct(kChunk + kTagSize);
  const auto nonce = ChunkNonce(0, false);
  ASSERT_TRUE((*key)->aead().Seal(nonce, (*r)->manifest().capsule_id, forged, absl::MakeSpan(ct)).ok());
  std::copy(ct.begin(), ct.end(), capsule.begin() + kHeaderSize);
  absl::Status s = ReadAll(capsule, keys);
  EXPECT_TRUE(absl::IsDataLoss(s));
  EXPECT_NE(s.message().find("signed chunk table"), std::string::npos) << s.message();
}

TEST(CorruptionTest, OversizedLengthsAreRefusedBeforeAllocation) {
  Keys keys;
  const auto capsule = SealRaw(keys, PatternBytes(kChunk, 14));
  for (uint64_t m : {uint64_t{1} << 40, uint64_t{kMaxManifestSize} + 8, uint64_t{7}, uint64_t{0},
                     ~uint64_t{0}}) {
    auto bad = capsule;
    StoreBigEndian64(m, bad.data() + bad.size() - kFooterSize);
    EXPECT_TRUE(absl::IsDataLoss(OpenBytes(keys, bad).status())) << m;
  }
  // A signed manifest claiming a huge chunk count still cannot make the reader allocate it:
  // the count must match the file's real size, which is checked before the table is read.
  const auto huge = MustResign(capsule, keys.issuer, [](Manifest& m) {
    m.chunk_count = uint64_t{1} << 31;
    m.payload_size = m.chunk_count * m.chunk_size;
    m.archive_size = m.payload_size;
  });
  EXPECT_TRUE(absl::IsDataLoss(OpenBytes(keys, huge).status()));
}

TEST(CorruptionTest, NotACapsule) {
  Keys keys;
  auto r = OpenBytes(keys, std::vector<uint8_t>(1000, 'x'));
  EXPECT_TRUE(absl::IsDataLoss(r.status()));
  EXPECT_NE(r.status().message().find("not a capsule"), std::string::npos);
  EXPECT_TRUE(absl::IsDataLoss(OpenBytes(keys, {}).status()));
}

TEST(CorruptionTest, ForeignSignerIsNotTheIssuer) {
  Keys keys;
  const auto capsule = SealRaw(keys, PatternBytes(kChunk, 15));
  // Mallory re-signs but keeps the issuer field: signature fails. If she names herself as
  // issuer, the signature holds but trust fails.
  const auto resigned = MustResign(capsule, keys.mallory, [](Manifest&) {});
  EXPECT_TRUE(absl::IsDataLoss(OpenBytes(keys, resigned).status()));
  const auto impostor = MustResign(capsule, keys.mallory, [&](Manifest& m) {
    m.issuer = keys.mallory.public_identity();
  });
  EXPECT_EQ(OpenBytes(keys, impostor).status().code(), absl::StatusCode::kPermissionDenied);
  // Even where mallory is trusted too, her re-attributed copy does not unwrap for anyone: the
  // issuer's key is bound into every recipient entry.
  const std::vector<crypto::PublicIdentity> both = {keys.issuer.public_identity(),
                                                    keys.mallory.public_identity()};
  auto r = CapsuleReader::Open(MemoryFile(impostor), both);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(absl::IsDataLoss((*r)->Unlock(keys.alice).status()));
}

// Fails (as a full disk would) once more than `limit` bytes were appended.
class FullDisk : public WritableFile {
 public:
  explicit FullDisk(uint64_t limit) : limit_(limit) {}
  absl::Status Append(absl::Span<const uint8_t> data) override {
    if (bytes_ + data.size() > limit_) return absl::ResourceExhaustedError("test disk full");
    bytes_ += data.size();
    return absl::OkStatus();
  }

 private:
  uint64_t bytes_ = 0;
  uint64_t limit_;
};

// The workers write their chunks in order, each waiting for its turn: a write that fails must
// fail the seal with its own error, and the chunks after it must not wait forever.
TEST(WriterTest, AFailedChunkWriteFailsTheSealWithoutHanging) {
  Keys keys;
  const auto payload = PatternBytes(200 * kChunk + 5, 3);
  for (int threads : {1, 2, 4}) {
    WriterOptions o;
    o.issuer = &keys.issuer;
    o.recipients = {keys.alice.public_identity()};
    o.chunk_size = kChunk;
    o.threads = threads;
    FullDisk disk(20 * kChunk);
    auto w = CapsuleWriter::Create(std::move(o), &disk);
    ASSERT_TRUE(w.ok()) << w.status();
    absl::Status s;
    for (size_t at = 0; at < payload.size() && s.ok(); at += 3 * kChunk) {
      s = (*w)->Append(absl::MakeConstSpan(payload).subspan(at, 3 * kChunk));
    }
    if (s.ok()) s = (*w)->Finish(0).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << threads << ": " << s;
    EXPECT_NE(s.message().find("test disk full"), std::string::npos) << s;
  }
}

TEST(WriterTest, RejectsBadOptions) {
  Keys keys;
  MemorySink sink;
  WriterOptions none;
  none.issuer = &keys.issuer;
  EXPECT_EQ(CapsuleWriter::Create(none, &sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  WriterOptions dup;
  dup.issuer = &keys.issuer;
  dup.recipients = {keys.alice.public_identity(), keys.alice.public_identity()};
  EXPECT_EQ(CapsuleWriter::Create(dup, &sink).status().code(), absl::StatusCode::kInvalidArgument);
  WriterOptions small;
  small.issuer = &keys.issuer;
  small.recipients = {keys.alice.public_identity()};
  small.chunk_size = 100;
  EXPECT_EQ(CapsuleWriter::Create(small, &sink).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bunker::capsule

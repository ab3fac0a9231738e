// The S3 store's completion paths (spec/STORE.md "Receiving" 4) against a fake bucket that
// speaks the multipart flow and misbehaves at the completion on request: whether the object a
// completion produced is accepted as this capsule, what is sent, and what is left behind.
#include <sys/statvfs.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "capsule/capsule_test_util.h"
#include "capsule/reader.h"
#include "capsule/s3_store.h"
#include "capsule/s3_test_server.h"
#include "capsule/store.h"
#include "gtest/gtest.h"

namespace bunker::capsule {
namespace {

using s3::FakeBucket;
using Reply = FakeBucket::Completion;
using Requests = std::vector<std::string>;

constexpr uint32_t kChunk = 4096;

class S3CompletionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    capsule_ = testing::SealRaw(keys_, testing::PatternBytes(5 * kChunk + 77, 12), kChunk);
    auto reader = CapsuleReader::Open(MemoryFile(capsule_), Trust());
    ASSERT_TRUE(reader.ok()) << reader.status();
    reader_ = std::move(*reader);
    auto prelude = ReadPrelude(*reader_);
    ASSERT_TRUE(prelude.ok()) << prelude.status();
    prelude_ = *prelude;
    id_ = reader_->manifest().IdHex();
    key_ = "site/" + id_ + ".capsule";
    marker_ = "site/.incoming/d1/" + id_ + ".upload";
    spool_ = testing::MakeTempDir() + "/spool";
    auto client = s3::Client::Create(s3::FakeConfig(bucket_.endpoint()));
    ASSERT_TRUE(client.ok()) << client.status();
    S3StoreOptions o;
    o.client = std::move(*client);
    o.bucket = "bucket";
    o.prefix = "site/";
    o.spool = spool_;
    o.daemon_id = "d1";
    o.min_part_size = uint64_t{5} << 20;  // the whole capsule is one part
    o.upload_threads = 1;
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.push_back(line);
    };
    auto store = MakeS3Store(std::move(o));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *store;
  }

  std::vector<crypto::PublicIdentity> Trust() const { return {keys_.issuer.public_identity()}; }
  std::string Capsule() const { return std::string(capsule_.begin(), capsule_.end()); }

  // Begins the capsule in the store and receives every chunk durably: ready to finish.
  std::unique_ptr<IncomingCapsule> Receive() {
    auto in = store_->Begin(prelude_, Trust());
    EXPECT_TRUE(in.ok()) << in.status();
    if (!in.ok()) return nullptr;
    const Geometry& g = reader_->geometry();
    for (uint64_t i = 0; i < g.chunk_count; ++i) {
      std::vector<uint8_t> c(g.CipherSize(i));
      EXPECT_TRUE(reader_->ReadRaw(g.ChunkOffset(i), absl::MakeSpan(c)).ok());
      EXPECT_TRUE((*in)->PutChunk(i, c).ok());
    }
    auto synced = (*in)->Sync();
    EXPECT_TRUE(synced.ok()) << synced.status();
    return std::move(*in);
  }

  // Finishes `in`, counting the receipts put on record before the completion.
  absl::StatusOr<std::string> Finish(IncomingCapsule& in) {
    return in.Finish([this] {
      ++receipts_;
      return absl::OkStatus();
    });
  }

  // The requests from the last completion on, as "METHOD capsule|marker|PATH[?FIRST-PARAM]".
  Requests SinceCompletion() const {
    const Requests all = bucket_.requests();
    size_t from = all.size();
    for (size_t i = 0; i < all.size(); ++i) {
      if (absl::StartsWith(all[i], "POST /bucket/" + key_ + "?uploadId=")) from = i;
    }
    return RequestsFrom(from);
  }

  // The requests after the last part upload (Finish waits for the background uploads, so the
  // first of these is Finish's own), as SinceCompletion shows them.
  Requests SinceLastPart() const {
    const Requests all = bucket_.requests();
    size_t from = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      if (absl::StrContains(all[i], "?partNumber=")) from = i + 1;
    }
    return RequestsFrom(from);
  }

  // The requests from the `from`th on (0-based), as SinceCompletion shows them.
  Requests RequestsFrom(size_t from) const {
    const Requests all = bucket_.requests();
    Requests out;
    for (size_t i = from; i < all.size(); ++i) {
      const size_t sp = all[i].find(' '), q = all[i].find('?', sp);
      std::string what = all[i].substr(sp + 1, q == std::string::npos ? q : q - sp - 1);
      if (what == "/bucket/" + key_) what = "capsule";
      if (what == "/bucket/" + marker_) what = "marker";
      if (q != std::string::npos) what += all[i].substr(q, all[i].find_first_of("=&", q) - q);
      out.push_back(all[i].substr(0, sp + 1) + what);
    }
    return out;
  }

  bool Logged(const std::string& text) const {
    std::lock_guard<std::mutex> lock(log_mu_);
    for (const std::string& line : log_) {
      if (absl::StrContains(line, text)) return true;
    }
    return false;
  }

  // The spool's files for capsules being received (the partial capsule, its journals).
  std::vector<std::string> Spooled() const { return testing::ListDir(spool_ + "/.incoming"); }

  // Everything of the upload is gone: spool, journals, marker, upload.
  void ExpectCleanedUp() const {
    EXPECT_TRUE(Spooled().empty()) << Spooled().front();
    EXPECT_FALSE(bucket_.Has(marker_));
    EXPECT_EQ(bucket_.open_uploads(), 0u);
  }

  testing::Keys keys_;
  std::vector<uint8_t> capsule_;
  std::unique_ptr<CapsuleReader> reader_;
  Prelude prelude_;
  std::string id_, key_, marker_, spool_;
  FakeBucket bucket_;
  std::shared_ptr<Store> store_;
  int receipts_ = 0;
  mutable std::mutex log_mu_;
  std::vector<std::string> log_;
};

// The spool lives on the daemon's own disk, beside its state and audit log: a peer that sends
// chunks and never completes a part cannot fill it. Each chunk is written only while the disk
// keeps its reserve (a twentieth, at most 1 GiB) free.
TEST_F(S3CompletionTest, TheSpoolLeavesItsReserveFree) {
  const uint64_t kReserve = uint64_t{1} << 30;  // the test's temporary disk is over 20 GiB
  struct statvfs vfs;
  ASSERT_EQ(::statvfs(testing::MakeTempDir().c_str(), &vfs), 0);
  if (static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize / 20 < kReserve) {
    GTEST_SKIP() << "needs a temporary disk of at least 20 GiB for a 1 GiB reserve";
  }
  uint64_t free_bytes = kReserve + 2 * kChunk + 100;  // room for two chunks, then none
  SetFreeSpaceForTesting([&free_bytes](const std::string&) { return free_bytes; });
  auto in = store_->Begin(prelude_, Trust());
  ASSERT_TRUE(in.ok()) << in.status();
  const Geometry& g = reader_->geometry();
  auto chunk = [&](uint64_t i) {
    std::vector<uint8_t> c(g.CipherSize(i));
    EXPECT_TRUE(reader_->ReadRaw(g.ChunkOffset(i), absl::MakeSpan(c)).ok());
    return c;
  };
  EXPECT_TRUE((*in)->PutChunk(0, chunk(0)).ok());
  free_bytes -= g.CipherSize(0);
  EXPECT_TRUE((*in)->PutChunk(1, chunk(1)).ok());
  free_bytes -= g.CipherSize(1);
  const absl::Status full = (*in)->PutChunk(2, chunk(2));
  SetFreeSpaceForTesting(nullptr);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_NE(full.message().find("no room for capsule"), std::string::npos) << full;
  EXPECT_FALSE((*in)->IsReceived(2));
  // Room again: the same chunk is taken.
  EXPECT_TRUE((*in)->PutChunk(2, chunk(2)).ok());
}

TEST_F(S3CompletionTest, ACompletionNamingTheObjectsETagIsAccepted) {
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(Spooled().size(), 3u) << "the partial capsule, its chunk journal, its parts journal";
  EXPECT_TRUE(bucket_.Has(marker_));
  auto url = Finish(*in);
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(*url, "s3://bucket/" + key_);
  EXPECT_EQ(bucket_.Get(key_).bytes, Capsule());
  EXPECT_EQ(receipts_, 1);
  // One HEAD: the ETag is the completion's and the size the capsule's; nothing read back.
  EXPECT_EQ(SinceCompletion(),
            (Requests{"POST capsule?uploadId", "HEAD capsule", "DELETE marker"}));
  EXPECT_TRUE(Logged("s3: capsule " + id_ + " stored as s3://bucket/" + key_));
  ExpectCleanedUp();
  EXPECT_EQ(*Finish(*in), *url) << "a second Finish returns the same place";
  EXPECT_EQ(receipts_, 1);
}

// Before the completion: another capsule claiming this id is already stored. The upload can
// never complete: it is aborted, nothing is put on record, nothing local is left.
TEST_F(S3CompletionTest, AnotherCapsuleStoredBeforeTheCompletionAbortsTheUpload) {
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  std::string other = Capsule();
  other[5] ^= 1;
  bucket_.Put(key_, other, "\"theirs-1\"");
  auto url = Finish(*in);
  ASSERT_TRUE(absl::IsDataLoss(url.status())) << url.status();
  EXPECT_EQ(url.status().message(),
            "a different capsule with id " + id_ + " is already stored here");
  EXPECT_EQ(receipts_, 0);
  EXPECT_EQ(SinceLastPart(), (Requests{"HEAD capsule", "GET capsule", "GET capsule",
                                            "DELETE capsule?uploadId", "DELETE marker"}));
  EXPECT_EQ(bucket_.Get(key_).bytes, other);
  EXPECT_TRUE(Logged("s3: upload of capsule " + id_ + " aborted: another capsule with that id "
                     "is stored"));
  ExpectCleanedUp();
}

// Before the completion: the very same capsule is already stored (another receiver). This
// daemon completes its own upload all the same, so that its receipt names what it verified.
TEST_F(S3CompletionTest, AnIdenticalCapsuleStoredBeforeTheCompletionIsReplaced) {
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  bucket_.Put(key_, Capsule(), "\"theirs-1\"");
  auto url = Finish(*in);
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(receipts_, 1);
  EXPECT_EQ(SinceLastPart(), (Requests{"HEAD capsule", "GET capsule", "GET capsule",
                                            "POST capsule?uploadId", "HEAD capsule",
                                            "DELETE marker"}));
  EXPECT_NE(bucket_.Get(key_).etag, "\"theirs-1\"") << "the object is this daemon's completion";
  EXPECT_EQ(bucket_.Get(key_).bytes, Capsule());
  EXPECT_TRUE(Logged("(replacing an identical copy another receiver stored meanwhile)"));
  ExpectCleanedUp();
}

// Path 1 of issue 12: which completion made the object cannot be told; it has this capsule's
// size, header and tail, so it is accepted.
TEST_F(S3CompletionTest, ACompletionNamingNoETagIsAcceptedWhenTheObjectIsThisCapsule) {
  bucket_.set_completion(Reply::kResultWithoutETag);
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  auto url = Finish(*in);
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(*url, "s3://bucket/" + key_);
  EXPECT_EQ(bucket_.Get(key_).bytes, Capsule());
  // The HEAD after the completion, then the check of size (HEAD), header and tail (GETs).
  EXPECT_EQ(SinceCompletion(), (Requests{"POST capsule?uploadId", "HEAD capsule", "HEAD capsule",
                                         "GET capsule", "GET capsule", "DELETE marker"}));
  EXPECT_TRUE(Logged("(the completion named no ETag; the object has this capsule's size, "
                     "header and tail)"));
  ExpectCleanedUp();
}

// What another writer put under the key right after the completion.
enum class Replaced { kLonger, kOtherHeader, kOtherTail };

class S3CompletionReplacedTest : public S3CompletionTest,
                                 public ::testing::WithParamInterface<Replaced> {};

// Path 2 of issue 12: the completion named no ETag and the object under the key is not this
// capsule: refused, the receipt void, nothing deleted, the local state cleaned up.
TEST_P(S3CompletionReplacedTest, ACompletionNamingNoETagOfAnotherObjectVoidsTheReceipt) {
  const Replaced how = GetParam();
  bucket_.set_completion(Reply::kResultWithoutETag);
  bucket_.set_after_complete([how](FakeBucket::Object& o) {
    if (how == Replaced::kLonger) o.bytes += "x";
    if (how == Replaced::kOtherHeader) o.bytes[5] ^= 1;
    if (how == Replaced::kOtherTail) o.bytes.back() ^= 1;
    o.etag = "\"theirs-1\"";
  });
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  auto url = Finish(*in);
  ASSERT_TRUE(absl::IsDataLoss(url.status())) << url.status();
  EXPECT_EQ(url.status().message(),
            "capsule " + id_ + " was replaced in the store right after it was completed, by "
            "another object (its receipt is void)");
  EXPECT_EQ(receipts_, 1);
  // Nothing is deleted: the object is not this daemon's to remove.
  const Requests checks = how == Replaced::kLonger
                              ? Requests{"HEAD capsule"}  // the size differs: nothing read
                              : Requests{"HEAD capsule", "GET capsule", "GET capsule"};
  Requests expected{"POST capsule?uploadId", "HEAD capsule"};
  expected.insert(expected.end(), checks.begin(), checks.end());
  expected.push_back("DELETE marker");
  EXPECT_EQ(SinceCompletion(), expected);
  EXPECT_EQ(bucket_.Get(key_).etag, "\"theirs-1\"");
  EXPECT_TRUE(Logged("s3: capsule " + id_ + " was replaced right after this daemon completed "
                     "it, by an object that is not this capsule"));
  ExpectCleanedUp();
}

INSTANTIATE_TEST_SUITE_P(Objects, S3CompletionReplacedTest,
                         ::testing::Values(Replaced::kLonger, Replaced::kOtherHeader,
                                           Replaced::kOtherTail),
                         [](const ::testing::TestParamInfo<Replaced>& p) -> std::string {
                           return p.param == Replaced::kLonger        ? "Longer"
                                  : p.param == Replaced::kOtherHeader ? "OtherHeader"
                                                                      : "OtherTail";
                         });

// Another receiver completed an identical copy right after this daemon: another ETag, the
// same bytes. Accepted.
TEST_F(S3CompletionTest, AnIdenticalCopyCompletedRightAfterIsAccepted) {
  bucket_.set_after_complete([](FakeBucket::Object& o) { o.etag = "\"theirs-1\""; });
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  auto url = Finish(*in);
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(SinceCompletion(), (Requests{"POST capsule?uploadId", "HEAD capsule", "HEAD capsule",
                                         "GET capsule", "GET capsule", "DELETE marker"}));
  EXPECT_TRUE(Logged("; another receiver completed an identical copy right after"));
  ExpectCleanedUp();
}

// Path 3 of issue 12: the completion's own object (its ETag) has another size: deleted.
TEST_F(S3CompletionTest, AnObjectOfOurETagAndAnotherSizeIsDeleted) {
  const size_t size = capsule_.size();
  bucket_.set_after_complete([](FakeBucket::Object& o) { o.bytes.resize(o.bytes.size() - 100); });
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  auto url = Finish(*in);
  ASSERT_TRUE(absl::IsDataLoss(url.status())) << url.status();
  const std::string sizes =
      std::to_string(size - 100) + " bytes instead of " + std::to_string(size);
  EXPECT_EQ(url.status().message(), "the object store assembled capsule " + id_ + " as " + sizes +
                                        " (its receipt is void); the object was deleted");
  EXPECT_EQ(receipts_, 1);
  EXPECT_EQ(SinceCompletion(), (Requests{"POST capsule?uploadId", "HEAD capsule",
                                         "DELETE capsule", "DELETE marker"}));
  EXPECT_FALSE(bucket_.Has(key_));
  EXPECT_TRUE(Logged("s3: capsule " + id_ + " was assembled as " + sizes +
                     "; the object was deleted"));
  ExpectCleanedUp();
}

// Path 4 of issue 12: S3 reports a failed completion inside a 200. Nothing is accepted or
// checked; the upload and the local state stay, so that a later Finish completes it.
TEST_F(S3CompletionTest, AnErrorInsideA200CompletionAcceptsNothing) {
  bucket_.set_completion(Reply::kErrorInA200);
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  auto url = Finish(*in);
  ASSERT_TRUE(absl::IsUnavailable(url.status())) << url.status();
  EXPECT_TRUE(absl::StrContains(url.status().message(), "(HTTP 200 with an error (InternalError))"))
      << url.status();
  EXPECT_EQ(SinceCompletion(), (Requests{"POST capsule?uploadId"}));
  EXPECT_FALSE(bucket_.Has(key_));
  EXPECT_EQ(bucket_.open_uploads(), 1u);
  EXPECT_TRUE(bucket_.Has(marker_));
  EXPECT_EQ(Spooled().size(), 3u);
  EXPECT_FALSE(Logged("stored as"));

  bucket_.set_completion(Reply::kResult);
  url = Finish(*in);
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(bucket_.Get(key_).bytes, Capsule());
  EXPECT_EQ(receipts_, 2) << "the receipt is put on record again before the second completion";
  ExpectCleanedUp();
}

// Path 5 of issue 12: the completion's reply was lost and the retry finds no upload: the object
// under the key is this capsule, so it is accepted.
TEST_F(S3CompletionTest, ALostCompletionReplyIsAcceptedWhenTheObjectIsThisCapsule) {
  bucket_.set_completion(Reply::kNoSuchUpload);
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  auto url = Finish(*in);
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(bucket_.Get(key_).bytes, Capsule());
  // Is it this capsule? Then, as for a completion naming no ETag: HEAD, and the check again.
  EXPECT_EQ(SinceCompletion(),
            (Requests{"POST capsule?uploadId", "HEAD capsule", "GET capsule", "GET capsule",
                      "HEAD capsule", "HEAD capsule", "GET capsule", "GET capsule",
                      "DELETE marker"}));
  EXPECT_TRUE(Logged("s3: capsule " + id_ + " stored as s3://bucket/" + key_));
  ExpectCleanedUp();
}

// Path 5 of issue 12, the other way: the upload is gone and the object under the key is not
// this capsule. Refused, the receipt void, nothing deleted; the spool, journals and marker are
// removed, since that upload can never be completed nor the capsule received again (its key is
// taken). Regression: they were left behind for good, and the error named only the upload.
TEST_F(S3CompletionTest, ALostCompletionReplyIsRefusedWhenTheObjectIsAnother) {
  bucket_.set_completion(Reply::kNoSuchUpload);
  bucket_.set_after_complete([](FakeBucket::Object& o) {
    o.bytes[5] ^= 1;
    o.etag = "\"theirs-1\"";
  });
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  auto url = Finish(*in);
  ASSERT_TRUE(absl::IsDataLoss(url.status())) << url.status();
  EXPECT_EQ(url.status().message(),
            "the upload of capsule " + id_ + " is gone and another object is stored under its "
            "key (its receipt is void)");
  EXPECT_EQ(receipts_, 1);
  EXPECT_EQ(SinceCompletion(), (Requests{"POST capsule?uploadId", "HEAD capsule", "GET capsule",
                                         "GET capsule", "DELETE marker"}));
  EXPECT_EQ(bucket_.Get(key_).etag, "\"theirs-1\"");
  EXPECT_TRUE(Logged("s3: the upload of capsule " + id_ + " is gone (NoSuchUpload) and the "
                     "object under its key is not this capsule"));
  ExpectCleanedUp();
}

// The upload was aborted by someone else and nothing is under the key: refused, and the local
// state is kept: a re-offer finds the upload gone and receives the capsule afresh.
TEST_F(S3CompletionTest, ACompletionThatFindsNoUploadAndNoObjectIsRefused) {
  bucket_.set_completion(Reply::kNoSuchUpload, /*assemble=*/false);
  auto in = Receive();
  ASSERT_NE(in, nullptr);
  auto url = Finish(*in);
  ASSERT_TRUE(absl::IsNotFound(url.status())) << url.status();
  EXPECT_TRUE(absl::StrContains(url.status().message(), "no multipart upload upload-1"))
      << url.status();
  EXPECT_EQ(SinceCompletion(), (Requests{"POST capsule?uploadId", "HEAD capsule"}));
  EXPECT_FALSE(bucket_.Has(key_));
  EXPECT_EQ(Spooled().size(), 3u);
  in.reset();

  bucket_.set_completion(Reply::kResult);
  in = Receive();
  ASSERT_NE(in, nullptr);
  EXPECT_TRUE(Logged("s3: upload of capsule " + id_ + " is gone or disagrees with its journal; "
                     "receiving it afresh"));
  url = Finish(*in);
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(bucket_.Get(key_).bytes, Capsule());
  ExpectCleanedUp();
}

}  // namespace
}  // namespace bunker::capsule

// Leftovers of a completed upload (issue 12): a completion that succeeded but whose check failed
// (its HEAD), or a daemon that stopped before cleaning up, leaves the spool, the journals and
// the marker of a capsule that is stored. The next start (Recover), or a new offer of the
// capsule, removes them; what belongs to an upload that still exists, or to another daemon, is
// left alone (spec/STORE.md "Receiving" 6). Against a fake bucket, with real stores.
#include <unistd.h>

#include <filesystem>
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

constexpr uint32_t kChunk = 4096;

class S3LeftoverTest : public ::testing::Test {
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
    dir_ = testing::MakeTempDir();
  }

  std::vector<crypto::PublicIdentity> Trust() const { return {keys_.issuer.public_identity()}; }
  std::string Capsule() const { return std::string(capsule_.begin(), capsule_.end()); }
  std::string Spool(const std::string& name) const { return dir_ + "/" + name; }
  std::string Marker(const std::string& daemon) const {
    return "site/.incoming/" + daemon + "/" + id_ + ".upload";
  }
  std::vector<std::string> Spooled(const std::string& spool) const {
    return testing::ListDir(Spool(spool) + "/.incoming");
  }

  // A store of daemon `daemon` on spool `spool` (its boots file beside it), as a daemon start
  // makes one: every call is a new process's store.
  std::shared_ptr<Store> MakeStore(const std::string& daemon, const std::string& spool) {
    auto client = s3::Client::Create(s3::FakeConfig(bucket_.endpoint()));
    EXPECT_TRUE(client.ok()) << client.status();
    S3StoreOptions o;
    o.client = std::move(*client);
    o.bucket = "bucket";
    o.prefix = "site/";
    o.spool = Spool(spool);
    o.daemon_id = daemon;
    o.min_part_size = uint64_t{5} << 20;  // the whole capsule is one part
    o.upload_threads = 1;
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.push_back(line);
    };
    auto store = MakeS3Store(std::move(o));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *store : nullptr;
  }

  // Begins the capsule in `store` and receives every chunk durably: ready to finish.
  std::unique_ptr<IncomingCapsule> Receive(Store& store) {
    auto in = store.Begin(prelude_, Trust());
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

  // Daemon `daemon` receives the capsule into `spool` and completes it, but the HEAD right
  // after the completion fails: the object is stored, the receipt void, the local state left.
  void CompleteWithAFailedCheck(const std::string& daemon, const std::string& spool) {
    std::shared_ptr<Store> store = MakeStore(daemon, spool);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Recover().ok());
    auto in = Receive(*store);
    ASSERT_NE(in, nullptr);
    bucket_.set_failing_heads_after_complete(1);
    int receipts = 0;
    auto url = in->Finish([&receipts] {
      ++receipts;
      return absl::OkStatus();
    });
    ASSERT_TRUE(absl::IsUnavailable(url.status())) << url.status();
    EXPECT_TRUE(absl::StrContains(url.status().message(),
                                  "capsule " + id_ + " was completed but cannot be checked "
                                  "(its receipt is void)"))
        << url.status();
    EXPECT_EQ(receipts, 1);
    EXPECT_EQ(bucket_.Get(key_).bytes, Capsule());
    EXPECT_EQ(bucket_.open_uploads(), 0u);
    EXPECT_EQ(Spooled(spool).size(), 3u) << "the partial capsule, its chunk and parts journals";
    EXPECT_TRUE(bucket_.Has(Marker(daemon)));
  }

  // Daemon d1 starts after a crash that left its pending marker and a stray upload of the
  // capsule, beside daemon d2's marker for it of 5000 bytes (`deny`: one d1 may not read).
  void RecoverBesideAnUnreadableMarker(bool deny) {
    auto first = MakeStore("d1", "spool")->Recover();  // records this run's boot nonce
    ASSERT_TRUE(first.ok()) << first.status();
    std::string boot = testing::ReadFile(Spool("spool") + ".boots");
    ASSERT_EQ(boot.size(), 17u) << boot;
    boot.pop_back();
    bucket_.Put(Marker("d1"), "pending " + boot, "\"p1\"");
    bucket_.StartUpload(key_);
    bucket_.Put(Marker("d2"), deny ? "upload-9 0123456789abcdef" : std::string(5000, 'x'),
                "\"o\"");
    if (deny) bucket_.Deny(Marker("d2"));

    auto lines = MakeStore("d1", "spool")->Recover();
    ASSERT_TRUE(lines.ok()) << lines.status();
    ASSERT_EQ(lines->size(), 1u);
    EXPECT_TRUE(absl::StartsWith(lines->front(), "s3: the marker object s3://bucket/" +
                                                     Marker("d2") + " cannot be read ("))
        << lines->front();
    EXPECT_TRUE(absl::EndsWith(lines->front(), "): it is skipped and left in place; an upload "
                                               "of capsule " + id_ + " that this daemon may "
                                               "have left is kept"))
        << lines->front();
    EXPECT_EQ(bucket_.open_uploads(), 1u) << "nothing is aborted";
    EXPECT_TRUE(bucket_.Has(Marker("d2")));
  }

  static bool Has(const std::vector<std::string>& lines, const std::string& text) {
    for (const std::string& line : lines) {
      if (absl::StrContains(line, text)) return true;
    }
    return false;
  }
  bool Logged(const std::string& text) const {
    std::lock_guard<std::mutex> lock(log_mu_);
    return Has(log_, text);
  }
  std::string Removed() const {
    return "s3: capsule " + id_ + " is stored (the object has this capsule's size, header and "
           "tail) and its upload is gone: removed what this daemon had left of it (its spool "
           "and journals";
  }

  testing::Keys keys_;
  std::vector<uint8_t> capsule_;
  std::unique_ptr<CapsuleReader> reader_;
  Prelude prelude_;
  std::string id_, key_, dir_;
  FakeBucket bucket_;
  mutable std::mutex log_mu_;
  std::vector<std::string> log_;
};

// Regression (issue 12): they stayed for good; a new offer got AlreadyExists before looking at
// local state, and Recover kept a marker whose upload a journal named.
TEST_F(S3LeftoverTest, TheNextStartRemovesTheLeftoversOfACompletionWhoseCheckFailed) {
  CompleteWithAFailedCheck("d1", "spool");
  std::shared_ptr<Store> restarted = MakeStore("d1", "spool");
  ASSERT_NE(restarted, nullptr);
  auto lines = restarted->Recover();
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_EQ(lines->front(), Removed() + " and its marker); no receipt is recorded for it");
  EXPECT_TRUE(Spooled("spool").empty()) << Spooled("spool").front();
  EXPECT_FALSE(bucket_.Has(Marker("d1")));
  EXPECT_EQ(bucket_.Get(key_).bytes, Capsule()) << "the stored capsule is never touched";
  // Nothing is left to do at the start after.
  lines = MakeStore("d1", "spool")->Recover();
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_TRUE(lines->empty()) << lines->front();
}

// A cleanup that removed the upload journal but failed on the spool (Cleanup goes on after a
// failed step): a spool without an upload journal, of a stored capsule. Removed; the marker,
// which no journal names any more, goes as abandoned markers go.
TEST_F(S3LeftoverTest, ASpoolLeftWithoutItsUploadJournalIsRemoved) {
  CompleteWithAFailedCheck("d1", "spool");
  ASSERT_EQ(::unlink((Spool("spool") + "/.incoming/" + id_ + ".parts").c_str()), 0);
  auto lines = MakeStore("d1", "spool")->Recover();
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_EQ(lines->front(),
            "s3: capsule " + id_ + " is stored (the object has this capsule's size, header and "
            "tail) and no upload of it is journaled: removed what this daemon had left of it "
            "(its spool and journals); no receipt is recorded for it");
  EXPECT_TRUE(Spooled("spool").empty()) << Spooled("spool").front();
  EXPECT_FALSE(bucket_.Has(Marker("d1")));
}

// The same, found by a new offer of the capsule (the daemon still runs): the offer is told the
// capsule is stored, and the leftovers go. Not while the incoming capsule is still open.
TEST_F(S3LeftoverTest, ANewOfferRemovesTheLeftoversOnceTheIncomingCapsuleIsGone) {
  std::shared_ptr<Store> store = MakeStore("d1", "spool");
  ASSERT_NE(store, nullptr);
  auto in = Receive(*store);
  ASSERT_NE(in, nullptr);
  bucket_.set_failing_heads_after_complete(1);
  ASSERT_TRUE(absl::IsUnavailable(in->Finish().status()));

  auto again = store->Begin(prelude_, Trust());
  ASSERT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
  EXPECT_EQ(Spooled("spool").size(), 3u) << "its incoming capsule is live: a Finish may retry";
  EXPECT_TRUE(bucket_.Has(Marker("d1")));

  in.reset();
  again = store->Begin(prelude_, Trust());
  ASSERT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
  EXPECT_TRUE(Logged(Removed() + " and its marker); no receipt is recorded for it"));
  EXPECT_TRUE(Spooled("spool").empty()) << Spooled("spool").front();
  EXPECT_FALSE(bucket_.Has(Marker("d1")));
}

// A daemon stopped (kill -9) after its upload had all its parts, and another daemon stored the
// capsule meanwhile: this daemon's upload still exists, so nothing of it is removed.
TEST_F(S3LeftoverTest, TheStateOfAnUploadThatStillExistsIsLeftAlone) {
  std::shared_ptr<Store> store = MakeStore("d1", "spool");
  ASSERT_NE(store, nullptr);
  auto in = Receive(*store);
  ASSERT_NE(in, nullptr);
  in.reset();  // no Finish: as a crash leaves it
  bucket_.Put(key_, Capsule(), "\"theirs-1\"");
  ASSERT_EQ(bucket_.open_uploads(), 1u);

  auto lines = MakeStore("d1", "spool")->Recover();
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_TRUE(lines->empty()) << lines->front();
  EXPECT_EQ(Spooled("spool").size(), 3u);
  EXPECT_TRUE(bucket_.Has(Marker("d1")));
  EXPECT_EQ(bucket_.open_uploads(), 1u);
  EXPECT_TRUE(absl::IsAlreadyExists(store->Begin(prelude_, Trust()).status()));
  EXPECT_EQ(Spooled("spool").size(), 3u);
  EXPECT_FALSE(Logged("removed what this daemon had left"));
}

// Another daemon's leftovers (its own spool, its own marker) are its own to remove: a daemon
// recovering beside it touches neither, nor another daemon's live upload of the capsule.
TEST_F(S3LeftoverTest, AnotherDaemonsLeftoversAndUploadsAreLeftAlone) {
  CompleteWithAFailedCheck("d2", "spool-d2");
  const std::string live = bucket_.StartUpload(key_);
  bucket_.Put(Marker("d3"), live + " 0123456789abcdef", "\"m3\"");

  auto lines = MakeStore("d1", "spool-d1")->Recover();
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_TRUE(lines->empty()) << lines->front();
  EXPECT_EQ(Spooled("spool-d2").size(), 3u);
  EXPECT_TRUE(bucket_.Has(Marker("d2")));
  EXPECT_TRUE(bucket_.Has(Marker("d3")));
  EXPECT_EQ(bucket_.open_uploads(), 1u);

  lines = MakeStore("d2", "spool-d2")->Recover();
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_TRUE(Has(*lines, Removed() + " and its marker)"));
  EXPECT_TRUE(Spooled("spool-d2").empty());
  EXPECT_FALSE(bucket_.Has(Marker("d2")));
  EXPECT_TRUE(bucket_.Has(Marker("d3"))) << "another daemon's marker";
  EXPECT_EQ(bucket_.open_uploads(), 1u) << "another daemon's upload";
}

// A copy of this daemon's state folder running elsewhere (the same daemon id, boot nonces this
// one never had): its copy of the spool is its own, but the marker is the other run's.
TEST_F(S3LeftoverTest, AMarkerOfACopiedStateFolderIsLeftAlone) {
  CompleteWithAFailedCheck("d1", "spool");
  std::filesystem::copy(Spool("spool"), Spool("copy"), std::filesystem::copy_options::recursive);

  auto lines = MakeStore("d1", "copy")->Recover();  // its boots file is "copy.boots"
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_TRUE(Has(*lines, Removed() + "); no receipt is recorded for it")) << lines->front();
  EXPECT_TRUE(Spooled("copy").empty());
  EXPECT_TRUE(bucket_.Has(Marker("d1"))) << "written by a run the copy never had";
  EXPECT_EQ(Spooled("spool").size(), 3u);
}

// A key under PREFIX.incoming/ that is not PREFIX.incoming/<daemon id>/<id>.upload (anyone with
// write access to the bucket may put one) is no marker: recovery neither reads it (its ".."
// segments would be resolved into another key) nor fails on it, and an upload only it would
// name is aborted as unnamed.
TEST_F(S3LeftoverTest, AKeyOfAnotherFormUnderIncomingIsNoMarker) {
  auto first = MakeStore("d1", "spool")->Recover();  // records this run's boot nonce
  ASSERT_TRUE(first.ok()) << first.status();
  std::string boot = testing::ReadFile(Spool("spool") + ".boots");
  ASSERT_EQ(boot.size(), 17u) << boot;  // one nonce and its newline
  boot.pop_back();
  bucket_.Put(Marker("d1"), "pending " + boot, "\"p1\"");
  const std::string stray = bucket_.StartUpload(key_);
  bucket_.Put("site/.incoming/x/../../elsewhere/" + id_ + ".upload", stray + " 0123456789abcdef",
              "\"h1\"");

  auto lines = MakeStore("d1", "spool")->Recover();
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_EQ(bucket_.open_uploads(), 0u) << "the stray upload is named by no marker";
  EXPECT_FALSE(bucket_.Has(Marker("d1")));
  for (const std::string& r : bucket_.requests()) {
    EXPECT_EQ(r.find("elsewhere"), std::string::npos) << r;
  }
}

// Regression: a marker object that could not be read (anyone who may write to the bucket can
// put one of 5000 bytes, or one this account may not read) or parsed made Recover fail, and so
// the daemon's start ("marker object is too large", naming no key). Now each is named in the log
// and skipped, never deleted; the markers that can be read are recovered as before.
TEST_F(S3LeftoverTest, MarkersThatCannotBeReadOrParsedAreNamedAndSkipped) {
  auto first = MakeStore("d1", "spool")->Recover();  // records this run's boot nonce
  ASSERT_TRUE(first.ok()) << first.status();
  std::string boot = testing::ReadFile(Spool("spool") + ".boots");
  ASSERT_EQ(boot.size(), 17u) << boot;
  boot.pop_back();
  const std::string other_id(32, 'a');
  auto marker_of = [](const std::string& daemon, const std::string& id) {
    return "site/.incoming/" + daemon + "/" + id + ".upload";
  };
  // Of this daemon: too large, unreadable, garbage; and one that is fine (an abandoned upload).
  const std::string large = marker_of("d1", std::string(32, 'b'));
  const std::string denied = marker_of("d1", std::string(32, 'c'));
  const std::string garbage = marker_of("d1", std::string(32, 'd'));
  bucket_.Put(large, std::string(5000, 'x'), "\"l\"");
  bucket_.Put(denied, "upload-x " + boot, "\"d\"");
  bucket_.Deny(denied);
  bucket_.Put(garbage, "\x1b[31m two three", "\"g\"");
  const std::string abandoned = bucket_.StartUpload("site/" + other_id + ".capsule");
  bucket_.Put(marker_of("d1", other_id), abandoned + " " + boot, "\"a\"");

  auto lines = MakeStore("d1", "spool")->Recover();
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_TRUE(Has(*lines, "s3: the marker object s3://bucket/" + large + " cannot be read (an "
                          "object of 5000 bytes is no marker (at most 4096)): it is skipped "
                          "and left in place"));
  // The object's own refusal, not a hint at the credentials (which read everything else).
  EXPECT_TRUE(Has(*lines, "s3: the marker object s3://bucket/" + denied + " cannot be read (the "
                          "server refuses this account access to it, though it lists the "
                          "bucket)"));
  for (const std::string& line : *lines) {
    EXPECT_EQ(line.find("wrong key or secret"), std::string::npos) << line;
  }
  EXPECT_TRUE(Has(*lines, "s3: the marker object s3://bucket/" + garbage + " cannot be parsed"));
  EXPECT_TRUE(Has(*lines, "s3: aborted an abandoned upload of capsule " + other_id));
  for (const std::string& line : *lines) {
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << line;
  }
  EXPECT_TRUE(bucket_.Has(large));
  EXPECT_TRUE(bucket_.Has(denied));
  EXPECT_TRUE(bucket_.Has(garbage));
  EXPECT_FALSE(bucket_.Has(marker_of("d1", other_id)));
  EXPECT_EQ(bucket_.open_uploads(), 0u);
}

// The same for another daemon's marker, read while this daemon recovers from a crash after its
// pending marker: too large or unreadable, it may name any upload of the capsule, so the start
// goes on and nothing is aborted.
TEST_F(S3LeftoverTest, AnotherDaemonsMarkerThatIsTooLargeKeepsTheUploadsOfItsCapsule) {
  RecoverBesideAnUnreadableMarker(false);
}
TEST_F(S3LeftoverTest, AnotherDaemonsMarkerThatCannotBeReadKeepsTheUploadsOfItsCapsule) {
  RecoverBesideAnUnreadableMarker(true);
}

}  // namespace
}  // namespace bunker::capsule

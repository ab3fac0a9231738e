// Receipts and crashes: a receipt whose append was cut short (the entry written, its checkpoint
// not) is reported exactly by the auditor's check and completed when the daemon starts.
#include "site/receipts.h"

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "verifier/audit_log.h"
#include "verifier/state_binding.h"

namespace bunker::site {
namespace {

constexpr int64_t kNow = 1800000000;

struct Fixture {
  crypto::Identity identity = crypto::Identity::Generate();
  SiteConfig site;
  Fixture() {
    site.site = "site-b";
    site.state = capsule::testing::MakeTempDir() + "/state";
  }
  std::string log() const { return site.state + "/audit.log"; }
  transfer::DepotEvent Receipt(const std::string& id) const {
    return {"received", id, "bk1:issuer", "bk1:peer", "9 chunks verified and stored"};
  }
  int ReceiptsInLog(const std::string& id) const {
    int n = 0;
    EXPECT_TRUE(verifier::ForEachAuditRecord(log(), [&](uint64_t, const verifier::AuditRecord& r) {
                  n += r.event == "received" && r.capsule_id == id;
                  return true;
                }).ok());
    return n;
  }
};

TEST(ReceiptsTest, EnsureRecordsOnceAndLoadRemembers) {
  Fixture f;
  auto r = Receipts::Load(f.site, f.identity, kNow);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Ensure(f.Receipt("aa"), kNow).ok());
  ASSERT_TRUE((*r)->Ensure(f.Receipt("aa"), kNow).ok());
  EXPECT_EQ(f.ReceiptsInLog("aa"), 1);
  auto again = Receipts::Load(f.site, f.identity, kNow);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)->Holds("bk1:issuer", "aa"));
  EXPECT_FALSE((*again)->Holds("bk1:other", "aa"));
  ASSERT_TRUE((*again)->Ensure(f.Receipt("aa"), kNow).ok());
  EXPECT_EQ(f.ReceiptsInLog("aa"), 1);
}

// Regression: the daemon killed while appending a receipt left the entry without its
// checkpoint; `audit verify` failed even after a restart, and the next append's recovery
// deleted the entry. Now the entry is pending in the state database first, `audit verify` names
// the unsigned entry, and the daemon's start completes it.
TEST(ReceiptsTest, ReceiptCutShortIsNamedByVerifyAndCompletedAtStart) {
  Fixture f;
  {
    auto r = Receipts::Load(f.site, f.identity, kNow);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->Ensure(f.Receipt("aa"), kNow).ok());
  }
  const std::string checkpoints = verifier::AuditCheckpointsPath(f.log());
  const std::string signed_before = capsule::testing::ReadFile(checkpoints);
  // The receipt of "bb", killed after its entry was written and before its checkpoint.
  {
    auto state = verifier::SiteState::Open(
        f.site.state, f.site.site, f.identity, kNow, [](std::string_view point) {
          return point == "appended" ? absl::AbortedError("killed") : absl::OkStatus();
        });
    ASSERT_TRUE(state.ok()) << state.status();
    verifier::AuditRecord rec;
    rec.time = kNow;
    rec.event = "received";
    rec.decision = "permit";
    rec.capsule_id = "bb";
    rec.issuer = "bk1:issuer";
    rec.site = f.site.site;
    ASSERT_EQ((*state)->Record(rec, kNow).status().code(), absl::StatusCode::kAborted);
  }
  // Its checkpoint never reached the disk.
  capsule::testing::WriteFile(checkpoints, signed_before);
  ASSERT_EQ(verifier::ReadLatestCheckpoint(f.log())->size, 1u);

  auto verified = verifier::VerifyAuditLog(f.log(), f.identity.public_identity(), std::nullopt);
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(verified.status().message().find(
                "audit log entry 1 is not covered by a signed checkpoint"),
            std::string::npos)
      << verified.status();

  // The daemon starts: the pending entry is completed, not deleted.
  auto r = Receipts::Load(f.site, f.identity, kNow + 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->Holds("bk1:issuer", "bb"));
  verified = verifier::VerifyAuditLog(f.log(), f.identity.public_identity(), std::nullopt);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->entries, 2u);
  EXPECT_EQ(f.ReceiptsInLog("bb"), 1);
  ASSERT_TRUE((*r)->Ensure(f.Receipt("bb"), kNow).ok());
  EXPECT_EQ(f.ReceiptsInLog("bb"), 1);
}

}  // namespace
}  // namespace bunker::site

// RecordReleaseFailed: a permitted release that failed before anything was released gives its
// use back, on record.
#include <unistd.h>

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"
#include "verifier/state_binding.h"
#include "verifier/verifier.h"

namespace bunker::verifier {
namespace {

using ::testing::HasSubstr;

constexpr char kIssuer[] = "bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kCapsule[] = "00112233445566778899aabbccddeeff";

class ReleaseFailedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    site_.state = bunker::test_temp::MakeTempDir("refund");
    site_.site = "site-b";
  }

  // What Authorize returns for a permit it recorded (it needs a capsule; the recording part is
  // SiteState's, so this builds the same Authorization from the same steps).
  Authorization Permit(bool counts_use) {
    AuditRecord rec;
    rec.time = 1700000000;
    rec.decision = "permit";
    rec.capsule_id = kCapsule;
    rec.issuer = kIssuer;
    rec.site = "site-b";
    rec.requester = "bk1:bbbbbbbbbbbbbbbbbbbbbbbbba";
    rec.purpose = "training";
    rec.paths = {"train/**"};
    rec.rules = {"once"};
    rec.uses = counts_use ? 1 : 0;
    rec.uid = 1000;
    rec.pid = 4242;
    auto st = SiteState::Open(site_.state, site_.site, identity_, rec.time);
    EXPECT_TRUE(st.ok()) << st.status();
    absl::StatusOr<Checkpoint> cp = (*st)->Record(rec, rec.time);
    EXPECT_TRUE(cp.ok()) << cp.status();
    Authorization a;
    a.decision.permit = true;
    a.decision.counts_use = counts_use;
    a.decision.rules = rec.rules;
    a.checkpoint = *cp;
    a.counted_use = counts_use;
    a.record = rec;
    return a;
  }

  uint64_t Uses() {
    auto st = SiteState::Open(site_.state, site_.site, identity_, 1700000999);
    EXPECT_TRUE(st.ok()) << st.status();
    return st.ok() ? (*st)->UseCount(UseCountKey(kIssuer, kCapsule)) : UINT64_MAX;
  }

  AuditRecord Last() {
    AuditRecord last;
    EXPECT_TRUE(ForEachAuditRecord(site_.state + "/audit.log", [&](uint64_t, const AuditRecord& r) {
                  last = r;
                  return true;
                }).ok());
    return last;
  }

  SiteFacts site_;
  crypto::Identity identity_ = crypto::Identity::Generate();
};

TEST_F(ReleaseFailedTest, GivesTheUseBackOnRecord) {
  const Authorization permit = Permit(/*counts_use=*/true);
  EXPECT_EQ(Uses(), 1u);
  ASSERT_TRUE(RecordReleaseFailed(site_, identity_, permit, "chunk 3 failed its check",
                                  1700000060)
                  .ok());
  EXPECT_EQ(Uses(), 0u);
  const AuditRecord r = Last();
  EXPECT_EQ(r.event, "release-failed");
  EXPECT_EQ(r.decision, "failed");
  EXPECT_EQ(r.uses, -1);
  EXPECT_EQ(r.time, 1700000060);
  EXPECT_EQ(r.capsule_id, kCapsule);
  EXPECT_EQ(r.issuer, kIssuer);
  EXPECT_EQ(r.requester, permit.record->requester);
  EXPECT_EQ(r.uid, std::optional<uint32_t>(1000));
  EXPECT_EQ(r.pid, std::optional<int32_t>(4242));
  EXPECT_THAT(r.reasons, ::testing::ElementsAre("chunk 3 failed its check",
                                                HasSubstr("release of audit log entry 0")));
  // A second refund of the same permit would regain a use that was never spent.
  EXPECT_EQ(RecordReleaseFailed(site_, identity_, permit, "again", 1700000070).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Uses(), 0u);
}

TEST_F(ReleaseFailedTest, APermitThatCountedNothingRefundsNothing) {
  const Authorization permit = Permit(/*counts_use=*/false);
  ASSERT_TRUE(RecordReleaseFailed(site_, identity_, permit, "disk full", 1700000060).ok());
  EXPECT_EQ(Last().uses, 0);
  EXPECT_EQ(Last().event, "release-failed");
  EXPECT_EQ(Uses(), 0u);
}

TEST_F(ReleaseFailedTest, OnlyARecordedPermit) {
  Authorization deny = Permit(true);
  deny.decision.permit = false;
  EXPECT_EQ(RecordReleaseFailed(site_, identity_, deny, "x", 1).code(),
            absl::StatusCode::kInvalidArgument);
  Authorization offline;  // offline mode: no record
  offline.decision.permit = true;
  EXPECT_EQ(RecordReleaseFailed(site_, identity_, offline, "x", 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Uses(), 1u);
}

}  // namespace
}  // namespace bunker::verifier

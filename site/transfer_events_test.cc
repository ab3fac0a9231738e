// The audit records of transfer events in a real site state: what the daemon's recorder writes
// (off its event loop) is a log that verifies, whose records account for every event.
#include "site/transfer_events.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "verifier/audit_log.h"

namespace bunker::site {
namespace {

constexpr int64_t kNow = 1800000000;

// The number of events an entry stands for (spec/TRANSFER.md "Events on record").
uint64_t CountOf(const verifier::AuditRecord& r) {
  uint64_t n = 1;
  if (r.reasons.size() > 1 && absl::StartsWith(r.reasons.back(), "count: ")) {
    std::string digits = r.reasons.back().substr(7);
    digits = digits.substr(0, digits.find(' '));
    EXPECT_TRUE(absl::SimpleAtoi(digits, &n)) << r.reasons.back();
  }
  return n;
}

TEST(TransferEventsTest, RepeatedRefusalsAreFewEntriesThatCountThemAll) {
  crypto::Identity identity = crypto::Identity::Generate();
  SiteConfig site;
  site.site = "site-b";
  site.state = capsule::testing::MakeTempDir() + "/state";
  constexpr int kRefusals = 500;
  {
    transfer::EventRecorderOptions o;
    o.now = [] { return kNow; };
    o.write = [&](const std::vector<transfer::EventRecord>& records) {
      return RecordTransferEvents(site, identity, records, kNow);
    };
    transfer::EventRecorder recorder(std::move(o));
    for (int i = 0; i < kRefusals; ++i) {
      transfer::DepotEvent e{"refused", "", "", "bk1:peer", "issuer bk1:x is not trusted"};
      if (TransferEventOnRecord(e)) recorder.Add(e);
      // Distinct refusals too (another capsule each): bounded per peer, counted beyond.
      transfer::DepotEvent other{"refused", std::string(30, 'a') + std::to_string(10 + i % 90),
                                 "bk1:issuer", "bk1:peer", "not admitted"};
      recorder.Add(other);
    }
    // Not on record: an offer, a receipt (recorded before the capsule is named).
    EXPECT_FALSE(TransferEventOnRecord({"offer", "", "", "bk1:peer", ""}));
    EXPECT_FALSE(TransferEventOnRecord({"received", "", "", "bk1:peer", ""}));
  }  // the recorder writes what waits
  uint64_t entries = 0, events = 0;
  ASSERT_TRUE(verifier::ForEachAuditRecord(site.state + "/audit.log",
                                           [&](uint64_t, const verifier::AuditRecord& r) {
                                             ++entries;
                                             EXPECT_EQ(r.event, "refused");
                                             EXPECT_EQ(r.decision, "deny");
                                             EXPECT_EQ(r.requester, "bk1:peer");
                                             events += CountOf(r);
                                             return true;
                                           })
                  .ok());
  EXPECT_EQ(events, uint64_t{2 * kRefusals});
  EXPECT_LE(entries, transfer::EventRecorderOptions().max_records_per_peer + 2);
  auto verified = verifier::VerifyAuditLog(site.state + "/audit.log", identity.public_identity(),
                                           std::nullopt);
  EXPECT_TRUE(verified.ok()) << verified.status();
}

}  // namespace
}  // namespace bunker::site

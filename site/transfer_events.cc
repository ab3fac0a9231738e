#include "site/transfer_events.h"

#include "absl/strings/str_cat.h"
#include "capsule/utc.h"
#include "verifier/verifier.h"

namespace bunker::site {

bool TransferEventOnRecord(const transfer::DepotEvent& e) {
  return e.kind != "offer" && e.kind != "witnessed" && e.kind != "received";
}

verifier::AuditRecord TransferAuditRecord(const std::string& site,
                                          const transfer::EventRecord& r) {
  verifier::AuditRecord rec;
  rec.time = r.last;
  rec.event = r.event.kind;
  rec.decision = r.event.kind == "refused" ? "deny" : "permit";
  rec.capsule_id = r.event.capsule_id;
  rec.issuer = r.event.issuer;
  rec.site = site;
  rec.requester = r.event.peer;
  rec.reasons = {r.event.detail.substr(0, 1000)};
  if (r.count > 1 || r.unitemized) {
    rec.reasons.push_back(absl::StrCat(
        "count: ", r.count, " (",
        r.unitemized ? "events of this peer, counted" : "identical events", " from ",
        capsule::FormatUtc(r.first), " to ", capsule::FormatUtc(r.last), ")"));
  }
  return rec;
}

absl::Status RecordTransferEvents(const SiteConfig& site, const crypto::Identity& identity,
                                  const std::vector<transfer::EventRecord>& records,
                                  int64_t now) {
  std::vector<verifier::AuditRecord> recs;
  recs.reserve(records.size());
  for (const transfer::EventRecord& r : records) recs.push_back(TransferAuditRecord(site.site, r));
  return verifier::RecordSiteEvents(site.Facts(), identity, recs, now);
}

}  // namespace bunker::site

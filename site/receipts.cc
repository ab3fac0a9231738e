#include "site/receipts.h"

#include "verifier/audit_log.h"
#include "verifier/state_binding.h"
#include "verifier/verifier.h"

namespace bunker::site {

absl::StatusOr<std::unique_ptr<Receipts>> Receipts::Load(const SiteConfig& site,
                                                         const crypto::Identity& identity,
                                                         int64_t now) {
  std::unique_ptr<Receipts> r(new Receipts(site, identity));
  {
    absl::StatusOr<std::unique_ptr<verifier::SiteState>> state =
        verifier::SiteState::Open(site.state, site.site, identity, now);
    if (!state.ok()) return state.status();
  }  // unlocked again: the state is locked only while it is written
  absl::Status s = verifier::ForEachAuditRecord(
      site.state + "/audit.log", [&r](uint64_t, const verifier::AuditRecord& rec) {
        if (rec.event == "received") {
          r->held_.insert(verifier::UseCountKey(rec.issuer, rec.capsule_id));
        }
        return true;
      });
  if (!s.ok() && !absl::IsNotFound(s)) return s;
  return r;
}

bool Receipts::Holds(const std::string& issuer, const std::string& capsule_id) const {
  return held_.count(verifier::UseCountKey(issuer, capsule_id)) != 0;
}

absl::Status Receipts::Ensure(const transfer::DepotEvent& e, int64_t now) {
  if (Holds(e.issuer, e.capsule_id)) return absl::OkStatus();
  verifier::AuditRecord rec;
  rec.time = now;
  rec.event = "received";
  rec.decision = "permit";
  rec.capsule_id = e.capsule_id;
  rec.issuer = e.issuer;
  rec.site = site_.site;
  rec.requester = e.peer;
  rec.reasons = {e.detail.substr(0, 1000)};
  absl::Status s = verifier::RecordSiteEvent(site_.Facts(), identity_, rec);
  if (!s.ok()) return s;
  held_.insert(verifier::UseCountKey(e.issuer, e.capsule_id));
  return absl::OkStatus();
}

}  // namespace bunker::site

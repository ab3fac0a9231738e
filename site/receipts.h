// The receipts of a site's store (spec/TRANSFER.md "Push"): the audit log entry, event
// "received", that accounts for each capsule the store holds. The transfer daemon puts a
// capsule's receipt on record before the capsule gets its name in the store
// (transfer::DepotOptions::record_receipt), so a crash between the two leaves a receipt and an
// unnamed file, never a stored capsule the log does not account for.
//
// Threading: one thread (the daemon's event loop). Other processes may append to the log
// meanwhile: every append goes through verifier::SiteState, which locks the state folder.
#ifndef BUNKER_SITE_RECEIPTS_H_
#define BUNKER_SITE_RECEIPTS_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "crypto/keys.h"
#include "site/site_config.h"
#include "transfer/depot.h"

namespace bunker::site {

class Receipts {
 public:
  // Opens the site's state once, which completes an audit entry that a crash left pending (so
  // that the log verifies again at once, not only at the next append), then reads which
  // capsules the log holds receipts for. `site` and `identity` must outlive the result. Errors
  // as verifier::SiteState::Open (kDataLoss: the state and the log disagree).
  static absl::StatusOr<std::unique_ptr<Receipts>> Load(const SiteConfig& site,
                                                        const crypto::Identity& identity,
                                                        int64_t now);

  // transfer::DepotOptions::record_receipt: OK at once when the log holds a receipt of
  // `e.capsule_id` from `e.issuer`; otherwise appends one (event "received", decision "permit",
  // the peer as requester, the event's detail as reason), durably, and remembers it.
  absl::Status Ensure(const transfer::DepotEvent& e, int64_t now);

  bool Holds(const std::string& issuer, const std::string& capsule_id) const;

 private:
  Receipts(const SiteConfig& site, const crypto::Identity& identity)
      : site_(site), identity_(identity) {}
  const SiteConfig& site_;
  const crypto::Identity& identity_;
  std::set<std::string> held_;  // verifier::UseCountKey(issuer, capsule id)
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_RECEIPTS_H_

// The audit records of a transfer daemon's events (spec/TRANSFER.md "Events on record"): which
// events go on record, the entry each record becomes, and the writer the daemon's
// transfer::EventRecorder calls (off its event loop).
#ifndef BUNKER_SITE_TRANSFER_EVENTS_H_
#define BUNKER_SITE_TRANSFER_EVENTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "crypto/keys.h"
#include "site/site_config.h"
#include "transfer/event_recorder.h"
#include "verifier/audit_log.h"

namespace bunker::site {

// Whether `e` goes into the audit log as an event of its own: outcomes do ("refused", "sent",
// "witness-reset", "witness-conflict"); an offer, a peer's first checkpoint held (routine) and
// a receipt ("received": site/receipts.h records it before the capsule is named) do not.
bool TransferEventOnRecord(const transfer::DepotEvent& e);

// The audit log entry of `r` at `site`: event = the kind, decision "deny" for "refused" else
// "permit", the capsule, its issuer, the peer as requester, the detail (at most 1000 bytes) as
// first reason, time = when the last event it stands for happened. A record of more than one
// event gets a second reason "count: N (...)" saying how many it stands for and since when.
verifier::AuditRecord TransferAuditRecord(const std::string& site,
                                          const transfer::EventRecord& r);

// Appends `records` to the site's audit log (verifier::RecordSiteEvents: its state opened once
// for them all).
absl::Status RecordTransferEvents(const SiteConfig& site, const crypto::Identity& identity,
                                  const std::vector<transfer::EventRecord>& records, int64_t now);

}  // namespace bunker::site

#endif  // BUNKER_SITE_TRANSFER_EVENTS_H_

// The site's side of witnessing (spec/TRANSFER.md "Witnessing", spec/VERIFIER.md "Witnesses"):
// what transfer/witness.h needs of the audit log, made from verifier/audit_log.h, and the
// site file's "witnesses".
#ifndef BUNKER_SITE_WITNESSING_H_
#define BUNKER_SITE_WITNESSING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/keys.h"
#include "site/site_config.h"
#include "transfer/witness.h"
#include "transfer/witness_client.h"

namespace bunker::site {

// verifier::Checkpoint::Parse (kInvalidArgument when malformed, or longer than
// transfer::kMaxCheckpointText) then Verify under the key (kDataLoss).
transfer::CheckpointVerifier VerifyCheckpoint();

// The site's own log at <state>/audit.log: its newest checkpoint, verified under `self`
// (nullopt while there is none), and consistency proofs over it. `site` must outlive the result.
transfer::OwnLog OwnLogOf(const SiteConfig& site, const crypto::PublicIdentity& self);

// <state>/witness: what the site holds of its peers.
std::string WitnessDir(const SiteConfig& site);

// The site file's "witnesses", each key loaded; kInvalidArgument naming an entry whose key is
// not among `peers` (the channel could not authenticate it).
absl::StatusOr<std::vector<transfer::WitnessPeer>> WitnessPeersOf(
    const SiteConfig& site, const std::vector<crypto::PublicIdentity>& peers);

// Appends to the site's audit log an entry (event "witness-loss", decision "permit") saying
// that `lost`, the checkpoint of this site that `peer` holds, is lost and accepted as such by
// the operator; its reasons give the lost checkpoint's size, root, time and full text.
absl::Status RecordWitnessedLoss(const SiteConfig& site, const crypto::Identity& identity,
                                 const std::string& peer, const transfer::CheckpointFacts& lost,
                                 int64_t now);

}  // namespace bunker::site

#endif  // BUNKER_SITE_WITNESSING_H_

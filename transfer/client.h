// Blocking entry points for the programs: push a capsule to a site, or fetch one from it, each
// in an event loop of its own over the pinned TLS channel (spec/TRANSFER.md).
#ifndef BUNKER_TRANSFER_CLIENT_H_
#define BUNKER_TRANSFER_CLIENT_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/keys.h"
#include "transfer/sender.h"
#include "capsule/manifest.h"

namespace bunker::transfer {

struct ClientOptions {
  const crypto::Identity* self = nullptr;    // this site's identity
  std::vector<crypto::PublicIdentity> peers; // sites this site talks to
  // The peer listening at the address; may be left unset when `peers` has exactly one entry.
  std::optional<crypto::PublicIdentity> server;
  int streams = 1;
  uint64_t rate = 0;  // bytes per second, 0: unlimited
  // Send: called as chunks go. Fetch: called about every 100 ms with total_bytes (the
  // capsule's payload, once the server offered it) and sent_bytes (what was received so far).
  std::function<void(const SendProgress&)> progress;
  // Polled about every 100 ms while the peer is waited for, whatever the peer does, and by the
  // threads reading an s3:// capsule (so thread-safe): true stops with kCancelled (what the
  // receiver holds is kept for a resume).
  std::function<bool()> cancelled;
  // A peer that moves no byte either way for this long, over all connections (a stalled link,
  // a peer that stopped reading or answering), fails the run with kUnavailable; running it
  // again resumes. The daemon drops its own idle sessions after ChannelOptions::idle_timeout,
  // the same default.
  int idle_seconds = 120;
};

// Pushes the capsule at `capsule_path` to the site at `address` ("host:port").
absl::StatusOr<SendSummary> SendCapsule(const std::string& capsule_path,
                                        const std::string& address, const ClientOptions& options);

// Fetches capsule `capsule_id` from the site at `address` into `output` (which must not exist),
// checking it as a receiver does: `trusted` issuers, and `admit` (DepotOptions::admit).
// Resumable: partial data waits in `output`'s folder under .bunker-fetch/.
absl::StatusOr<SendSummary> FetchCapsule(const std::string& capsule_id, const std::string& address,
                                         const std::string& output, const ClientOptions& options,
                                         const std::vector<crypto::PublicIdentity>& trusted,
                                         std::function<absl::Status(const capsule::Manifest&)> admit);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_CLIENT_H_

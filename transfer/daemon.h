// capsuled's service loop: listens on the site's address, serves the transfer protocol to
// authenticated peers (transfer/depot.h), logs one line per event, and stops cleanly on
// SIGTERM or SIGINT.
#ifndef BUNKER_TRANSFER_DAEMON_H_
#define BUNKER_TRANSFER_DAEMON_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "crypto/keys.h"
#include "transfer/depot.h"
#include "transfer/event_recorder.h"
#include "transfer/witness.h"
#include "transfer/witness_client.h"

namespace bunker::transfer {

struct DaemonOptions {
  std::string site;    // the site's name, for the log
  std::string listen;  // host:port
  std::shared_ptr<capsule::Store> store;  // received capsules (capsule/store.h)
  std::function<absl::Status(const capsule::Manifest&)> admit;  // DepotOptions::admit
  const crypto::Identity* identity = nullptr;
  std::vector<crypto::PublicIdentity> peers;    // who may connect
  std::vector<crypto::PublicIdentity> trusted;  // whose capsules are accepted
  std::function<void(const std::string&)> log;  // one line per event
  // Events put on record (the site's audit log): those `on_record` accepts go to a
  // transfer::EventRecorder (its default bounds), which calls `record_events` off the event
  // loop, identical events counted (spec/TRANSFER.md "Events on record"); what waits is
  // written when the daemon stops. Without `record_events` nothing is recorded.
  std::function<bool(const DepotEvent&)> on_record;
  std::function<absl::Status(const std::vector<EventRecord>&)> record_events;
  // DepotOptions::record_receipt: a capsule's receipt, on record before the capsule gets its
  // name in the store. Also called at start for every capsule in the store; an error there
  // stops the start.
  std::function<absl::Status(const DepotEvent&)> record_receipt;

  // Witnessing (spec/TRANSFER.md "Witnessing", spec/VERIFIER.md "Witnesses"). Without
  // `witness_dir` the daemon keeps no copies of its peers' checkpoints (and answers newestOf and
  // witness with an error); without `witness_state` it neither hands its own to `witnesses`
  // nor judges what they hold.
  std::string witness_dir;                 // <state>/witness
  CheckpointVerifier verify_checkpoint;    // required with either
  OwnLog own_log;                          // required with witness_state
  std::vector<WitnessPeer> witnesses;      // peers (in `peers`) to hand our checkpoints to
  // This site's standing, owned by the caller, which may share it (e.g. with the site's
  // verifier service, which checks it before every decision). While its Check() fails, the
  // daemon refuses offers and fetches; it goes bad at the first witness that holds a
  // checkpoint of us our log does not contain, and stays bad until the process ends.
  WitnessState* witness_state = nullptr;
  // How often to hand our newest checkpoint to every witness (and once at start).
  kj::Duration witness_interval = 5 * kj::SECONDS;
};

// Blocks the signals it stops on before anything else (call it before starting threads), then
// serves until SIGTERM or SIGINT. kInvalidArgument for a bad listen address, kUnavailable if it
// cannot listen.
absl::Status RunDaemon(const DaemonOptions& options);

// The operator's way back after a lost state folder (spec/VERIFIER.md "Witnesses"): one
// exchange with each of options.witnesses; where a witness holds a checkpoint of us that our log
// does not contain, `record_loss` appends to our log an entry acknowledging it, and the witness
// is told so and starts over from our new checkpoint. Logs one line per witness. OK when every
// witness now holds our newest checkpoint; otherwise the first failure (run it again).
absl::Status AcceptWitnessedLoss(
    const DaemonOptions& options,
    std::function<absl::Status(const std::string& peer, const CheckpointFacts& lost)> record_loss);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_DAEMON_H_

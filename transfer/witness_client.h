// The calling side of witnessing (spec/TRANSFER.md "Witnessing"): hand our newest checkpoint to
// a witness and judge what it holds of us.
//
// One exchange with a witness, in this order:
//   1. newestOf(): what the witness holds of us. A text that does not verify under our own key is
//      ignored (a witness cannot make us look behind with a checkpoint we never signed).
//   2. WitnessState::Judge against our log: if our log does not contain it (behind, or grown on
//      another branch) the state goes bad and we hand nothing over, so the witness keeps the
//      evidence. With `accept_loss` set (the operator's way back, spec/VERIFIER.md "Witnesses")
//      the loss is recorded in our log instead and acknowledged in step 3.
//   3. witness(ours, consistency proof from the held size, acknowledgement): the answer is
//      judged again.
//
// Threading: the event loop's thread; the callbacks may block briefly (they read our log).
#ifndef BUNKER_TRANSFER_WITNESS_CLIENT_H_
#define BUNKER_TRANSFER_WITNESS_CLIENT_H_

#include <kj/async.h>
#include <kj/async-io.h>

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "crypto/keys.h"
#include "spec/transfer.capnp.h"
#include "transfer/secure_channel.h"
#include "transfer/witness.h"

namespace bunker::transfer {

// A peer this site hands its checkpoints to, and where it listens.
struct WitnessPeer {
  crypto::PublicIdentity key;
  std::string address;  // host:port
};

struct WitnessClientOptions {
  crypto::PublicIdentity self;  // our own public identity: what witnesses hold must verify
  CheckpointVerifier verify;
  OwnLog own;
  WitnessState* state = nullptr;  // judged into; required
  // Set only to accept a loss (spec/VERIFIER.md "Witnesses"): records in our audit log that
  // `lost`, held by `peer` (a fingerprint), is lost, so that own.newest() afterwards names a
  // checkpoint of the log that says so. Empty: a loss makes `state` bad.
  std::function<absl::Status(const std::string& peer, const CheckpointFacts& lost)> accept_loss;
  kj::Duration timeout = 15 * kj::SECONDS;  // for a whole exchange, connection included
};

// What one exchange found.
struct WitnessResult {
  absl::Status status;      // OK: the witness now holds our newest; else why not
  bool loss_accepted = false;
  uint64_t held_size = 0;   // what the witness holds of us afterwards (0: nothing)
};

// Steps 1-3 over an established capability to `peer`. Never breaks: failures are in the result.
kj::Promise<WitnessResult> WitnessWith(schema::Transfer::Client peer,
                                       const crypto::PublicIdentity& peer_key,
                                       const WitnessClientOptions& options);

// Connects to `peer` over `channel` (which must pin it), then WitnessWith. Never breaks.
// `options` and `channel` must outlive the promise.
kj::Promise<WitnessResult> WitnessAt(SecureChannel& channel, kj::Network& network,
                                     const WitnessPeer& peer, const WitnessClientOptions& options);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_WITNESS_CLIENT_H_

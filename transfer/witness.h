// Peers witness each other's audit checkpoints (spec/TRANSFER.md "Witnessing", spec/VERIFIER.md
// "Witnesses"), so that a site whose whole state folder was replaced by an older copy, or
// emptied, finds out from a peer that it has seen a newer checkpoint of it.
//
// Two halves, both free of I/O except WitnessStore's own files:
//   WitnessStore  what this site holds of its peers: per peer the newest checkpoint it has been
//                 handed, which only ever moves forward along a verified consistency proof.
//   WitnessState  this site's own standing: good until some witness holds a checkpoint of us
//                 that our audit log does not contain; then bad for the life of the process.
//
// transfer/ knows no checkpoint format: the site layer passes a CheckpointVerifier (parse the
// six-line text of spec/AUDIT.md "Checkpoints" and verify its signature) and an OwnLog (our
// newest checkpoint and consistency proofs over our log).
#ifndef BUNKER_TRANSFER_WITNESS_H_
#define BUNKER_TRANSFER_WITNESS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "crypto/keys.h"
#include "crypto/sha256.h"

namespace bunker::transfer {

// The longest checkpoint text accepted from the wire or a file (spec/TRANSFER.md "Witnessing"):
// the six lines of spec/AUDIT.md "Checkpoints" with a 256-byte site name take 544 bytes.
inline constexpr size_t kMaxCheckpointText = 1024;
// The longest consistency proof accepted: one hash per level of a tree of 2^64 entries.
inline constexpr size_t kMaxConsistencyProof = 64;

// A checkpoint whose signature has been checked, with the fields witnessing compares.
struct CheckpointFacts {
  std::string text;  // the six lines exactly as signed (spec/AUDIT.md "Checkpoints")
  uint64_t size = 0;
  crypto::Sha256Digest root{};
  int64_t time = 0;  // seconds since the epoch, as signed
};

// Parses `text` and verifies its signature under `key`: kInvalidArgument when malformed,
// kDataLoss when the signature does not verify. Must be callable from any thread.
using CheckpointVerifier = std::function<absl::StatusOr<CheckpointFacts>(
    std::string_view text, const crypto::PublicIdentity& key)>;

// An RFC 9162 consistency proof between two trees of our log, with both roots as our log
// gives them.
struct ConsistencyFacts {
  crypto::Sha256Digest old_root{}, new_root{};
  std::vector<crypto::Sha256Digest> path;
};

// This site's own audit log, as witnessing needs it. Both callable from any thread.
struct OwnLog {
  // Our newest checkpoint, verified; nullopt while the log is empty.
  std::function<absl::StatusOr<std::optional<CheckpointFacts>>()> newest;
  // The proof from the tree of the first `old_size` entries to that of the first `new_size`;
  // kInvalidArgument unless old_size <= new_size <= entries.
  std::function<absl::StatusOr<ConsistencyFacts>(uint64_t old_size, uint64_t new_size)> prove;
};

// What WitnessStore::Witness did with a checkpoint.
enum class WitnessOutcome {
  kFirst,      // the first checkpoint held of this peer
  kAdvanced,   // newer, and a proven extension of the one held: it replaced it
  kUnchanged,  // the one held
  kOlder,      // smaller than the one held, which is kept (the caller learns it is behind)
  kReset,      // the peer acknowledged the loss of the one held (spec/VERIFIER.md "Witnesses"):
               // that one went to the history file and this one replaced it
};

// What this site holds of its peers, in `dir` (normally <state>/witness):
//   <fingerprint>.checkpoint  the newest checkpoint held of that peer (written atomically)
//   <fingerprint>.history     checkpoints the peer acknowledged as lost, appended in order
// Thread-safe.
class WitnessStore {
 public:
  // Creates `dir` (and its parent) if needed and reads the file of each of `peers` that has one; each must verify
  // under its peer's key (kDataLoss naming the file otherwise: an operator should look).
  static absl::StatusOr<std::unique_ptr<WitnessStore>> Open(
      std::string dir, std::vector<crypto::PublicIdentity> peers, CheckpointVerifier verify);

  // The newest checkpoint held of `peer`; nullopt if none.
  std::optional<CheckpointFacts> Newest(const crypto::PublicIdentity& peer) const;

  // `peer` (authenticated by the channel) hands us `text`, its newest checkpoint, with
  // `consistency`, a proof from the size of the one we hold to the size of `text`, and perhaps
  // `acknowledged_loss`, the exact text of the checkpoint we hold that it declares lost.
  // Returns what we hold of it afterwards and sets `*outcome`. Errors (nothing changes):
  //   kInvalidArgument  malformed text, too long, a proof longer than kMaxConsistencyProof
  //   kDataLoss         bad signature; same size as the one held with another root
  //                     (equivocation: the first one is kept); a larger size whose proof does
  //                     not verify (a fork)
  //   kFailedPrecondition `acknowledged_loss` is not what we hold
  //   others            the file could not be written (the message may name a local path)
  absl::StatusOr<CheckpointFacts> Witness(const crypto::PublicIdentity& peer, std::string_view text,
                                          absl::Span<const crypto::Sha256Digest> consistency,
                                          std::string_view acknowledged_loss,
                                          WitnessOutcome* outcome);

 private:
  WitnessStore(std::string dir, CheckpointVerifier verify);
  std::string PathOf(const crypto::PublicIdentity& peer, const char* suffix) const;

  const std::string dir_;
  const CheckpointVerifier verify_;
  mutable std::mutex mu_;
  std::map<std::string, CheckpointFacts> held_;  // by fingerprint; guarded by mu_
};

// This site's standing with its witnesses. Starts good; the first finding that a witness holds a
// checkpoint of us that our log does not contain makes it bad, and it stays bad (with that
// finding's text) until the process ends: the operator acts (spec/VERIFIER.md "Witnesses") and
// restarts. Thread-safe: Check() may be called before every decision.
class WitnessState {
 public:
  // OK, or kDataLoss: "the site's audit log (size N) is behind the checkpoint of size M that
  // peer bk1:... witnessed at TIME; refusing to serve until an operator acts (spec/VERIFIER.md
  // "Witnesses")" (or "... does not contain ..." when the log has grown on another branch).
  // The text carries no local path: it may be sent to peers.
  absl::Status Check() const;

  // Compares `held`, what `peer` (a fingerprint) holds of us, with our log (`ours` its newest
  // checkpoint, nullopt for an empty log). OK with the consistency proof from held to ours when
  // our log contains `held`; kDataLoss (Check()'s text) when it is behind or has diverged;
  // another error when our log could not be read (nothing is decided). Changes nothing.
  static absl::StatusOr<std::vector<crypto::Sha256Digest>> Compare(
      const std::string& peer, const std::optional<CheckpointFacts>& ours,
      const CheckpointFacts& held, const OwnLog& own);

  // Compare(), and a kDataLoss verdict makes this state bad (the first one is kept).
  absl::StatusOr<std::vector<crypto::Sha256Digest>> Judge(
      const std::string& peer, const std::optional<CheckpointFacts>& ours,
      const CheckpointFacts& held, const OwnLog& own);

  // Makes the state bad with `status` (kDataLoss) unless it is bad already.
  void MarkBad(const absl::Status& status);

  // Whether a first round of exchanges with every witness has ended (answered or not): until
  // then a restarted site does not know yet whether a witness holds a newer checkpoint, and its
  // verifier service holds requests.
  void MarkRoundDone();
  bool FirstRoundDone() const;

 private:
  mutable std::mutex mu_;
  absl::Status bad_;  // guarded by mu_
  bool round_done_ = false;  // guarded by mu_
};

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_WITNESS_H_

// The receiving side of the transfer protocol (spec/TRANSFER.md "Push", "Pull"): a site's store
// of capsules, served to authenticated peers as a schema::Transfer capability.
//
// On offer: the prelude is checked (structure, signature, trusted issuer) and the capsule's
// policy must admit this site (site, region, storage, time: verifier::AdmitsSite) before any
// chunk moves. Chunks are checked against the signed chunk table before they are written; a
// capsule appears in the store (a local folder or S3: capsule/store.h) only complete and
// verified (capsule/incoming.h). Offers of the same capsule over several connections share one
// incoming capsule, so several streams can fill it at once and a re-offer resumes.
//
// Threading: the event loop's thread only. Checking, writing, syncing and naming chunks run
// on the depot's workers, and store calls that wait on the network (beginning an incoming
// capsule, opening a stored one, reading chunks to send onward) on its store-call threads, so
// a slow disk or object store never stalls other sessions. An incoming capsule is destroyed on
// a thread of the depot's own whoever lets go of it last (a session that drops, a worker), since
// its destructor may wait for the store (an S3 part upload being cancelled).
#ifndef BUNKER_TRANSFER_DEPOT_H_
#define BUNKER_TRANSFER_DEPOT_H_

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "capsule/incoming.h"
#include "capsule/parallel.h"
#include "capsule/store.h"
#include "transfer/memory_budget.h"
#include "transfer/write_meter.h"
#include "crypto/keys.h"
#include "spec/transfer.capnp.h"
#include "transfer/witness.h"

namespace bunker::transfer {

// One event of the depot, for the daemon's log and the site's audit log.
struct DepotEvent {
  // "offer", "received", "refused", "sent"; witnessing (spec/TRANSFER.md "Witnessing"):
  // "witnessed" (first checkpoint held of a peer), "witness-reset" (a peer acknowledged the loss
  // of the one held), "witness-conflict" (equivocation or a fork: refused, the first is kept).
  std::string kind;
  std::string capsule_id;  // hex, "" when unknown
  std::string issuer;      // fingerprint, "" when unknown
  std::string peer;        // the peer's fingerprint
  std::string detail;      // one line
};

struct DepotOptions {
  std::shared_ptr<capsule::Store> store;        // received capsules (capsule/store.h)
  std::vector<crypto::PublicIdentity> trusted;  // issuers whose capsules are accepted
  // Admission of a capsule at this site by its policy (site, region, storage, time), asked
  // after the signature and trust checks and before anything is written: OK admits, any
  // error refuses with its message (sent to the peer: no secrets or local paths). Empty
  // admits all. The site layer decides; transfer/ knows no policy.
  std::function<absl::Status(const capsule::Manifest&)> admit;
  std::function<int64_t()> now;                     // seconds since the epoch
  // Called on the event loop's thread for every event: it must not wait (the daemon hands
  // events for the audit log to a transfer::EventRecorder). May be empty.
  std::function<void(const DepotEvent&)> on_event;
  // Puts the receipt of a stored capsule on record, durably (the site's audit log), unless it
  // is there already: must be idempotent. Called with a "received" event: after the capsule
  // verified and before it gets its name in the store (an error leaves it unnamed and fails
  // `finish`; a resend completes it), when an offer finds the capsule already stored, and by
  // RecordStoredReceipts for every capsule in a store only its daemon writes (not S3:
  // capsule::Store::OnlyItsDaemonWrites). So such a store never holds a capsule the record does
  // not account for. Empty: nothing is recorded. transfer/ knows no audit log.
  // Called from the event loop's thread or from a worker, never two calls at once.
  std::function<absl::Status(const DepotEvent&)> record_receipt;
  // A client receiving one fetched capsule: offers of any other id are refused, and the
  // capability it serves cannot be asked to fetch.
  std::string expected_id;
  // Witnessing (spec/TRANSFER.md "Witnessing"), both optional and owned by the caller:
  // what this site holds of its peers (without it newestOf and witness are refused), and this
  // site's own standing (while its Check() fails, offers and fetches are refused with
  // kFailedPrecondition and its text).
  WitnessStore* witness_store = nullptr;
  const WitnessState* witness_state = nullptr;
  // A capsule being received is made durable (data, then journal: IncomingCapsule::Sync) by
  // the receiver itself each time this many bytes were written to it since its last such sync,
  // whatever its senders commit: what a crash of either side makes a sender send again stays
  // within this plus what was in flight. 0: only at the senders' commits.
  uint64_t sync_every = 16u << 20;
  // What the chunks of all the fetches this depot serves may hold in memory at once, over all
  // sessions (SendOptions::budget): a chunk waits for room before it is read, and gives it
  // back once its put was written to the connection. A fetch whose peer stops reading keeps
  // what it holds (at most about two chunks) until its session ends (the idle timeout).
  uint64_t fetch_memory = 64u << 20;
  // Fetches served at once, over all sessions: each holds an open capsule and its prelude (the
  // chunk table: 32 bytes a chunk), which fetch_memory does not count. A fetch beyond it is
  // refused at once with kResourceExhausted (the peer may try again later).
  int max_fetches = 32;
  // One peer's share of the two above: a peer that stops reading holds at most this many
  // places and bytes until its sessions end, and the other peers' fetches go on (a fetch beyond
  // a peer's places is refused like one beyond max_fetches; its chunks wait for its own room).
  int max_fetches_per_peer = 8;
  uint64_t fetch_memory_per_peer = 16u << 20;
};

// Threads of Depot::store_calls().
inline constexpr int kStoreCallThreads = 8;

class Depot {
 public:
  explicit Depot(DepotOptions options);
  ~Depot();

  // The capability an authenticated `peer` gets. With `connection` (what the connection it is
  // served on has written), a capsule it fetches is sent with at most about two chunks waiting
  // in this process (SendOptions::meters); without, with a whole flow control window.
  schema::Transfer::Client ServeFor(const crypto::PublicIdentity& peer,
                                    WriteMeter* connection = nullptr);

  // Calls options.record_receipt for every capsule in the store (at start: a receipt lost to a
  // crash of an older version, or an operator's copy into the store, is recorded now). Files
  // that are not readable capsules are skipped. The first error.
  absl::Status RecordStoredReceipts();

  // Internal, used by the capability implementations.
  // The receiver's own syncs of one capsule being received (DepotOptions::sync_every), shared
  // by the connections filling it.
  struct SyncPace {
    std::mutex mu;
    uint64_t unsynced = 0;  // bytes written since the last sync started here
    bool syncing = false;   // one at a time
    absl::Status failed;    // of a sync started here; reported (and cleared) by the next commit
    // The failure of a sync started here since the last call, if any.
    absl::Status TakeFailure();
  };
  std::shared_ptr<SyncPace> PaceOf(const std::shared_ptr<capsule::IncomingCapsule>& in);
  // Counts `bytes` written to `in` and, past sync_every, starts a sync of it on a worker.
  void Wrote(const std::shared_ptr<SyncPace>& pace,
             const std::shared_ptr<capsule::IncomingCapsule>& in, uint64_t bytes);
  // Checks an offer and begins (or joins) its incoming capsule; the store's Begin runs on
  // store_calls(), and offers of one capsule that arrive meanwhile wait for its outcome.
  kj::Promise<absl::StatusOr<std::shared_ptr<capsule::IncomingCapsule>>> Receive(
      const capsule::Prelude& prelude, const std::string& peer);
  void Finished(const std::string& capsule_id);
  void Emit(DepotEvent event);
  // options.record_receipt(receipt), OK without one.
  absl::Status RecordReceipt(const DepotEvent& receipt);
  // OK, or kFailedPrecondition while this site's witness state is bad (emits "refused").
  absl::Status CheckServing(const std::string& peer, const std::string& what);
  // Emits a "witness-conflict" event unless the last one for `peer` had the same text.
  void Conflict(const std::string& peer, const std::string& detail);
  const DepotOptions& options() const { return options_; }
  // Shared by the fetches this depot serves (DepotOptions::fetch_memory).
  MemoryBudget& fetch_budget() { return fetch_budget_; }
  // Shared by the fetches this depot serves to `peer` (DepotOptions::fetch_memory_per_peer), on
  // top of fetch_budget().
  MemoryBudget& peer_fetch_budget(const std::string& peer);
  // Fetches being served now, and the most ever served at once (DepotOptions::max_fetches).
  int fetches() const { return fetches_; }
  int fetches_peak() const { return fetches_peak_; }
  // A place among the fetches served at once (and among its peer's), given back when dropped.
  class FetchPlace {
   public:
    FetchPlace(int& count, int& peer_count) : count_(count), peer_count_(peer_count) {}
    ~FetchPlace() {
      --count_;
      --peer_count_;
    }
    FetchPlace(const FetchPlace&) = delete;
    FetchPlace& operator=(const FetchPlace&) = delete;

   private:
    int& count_;
    int& peer_count_;
  };
  // A place for a fetch by `peer`, or nothing while max_fetches are served, or
  // max_fetches_per_peer to that peer.
  kj::Maybe<kj::Own<FetchPlace>> TakeFetchPlace(const std::string& peer);
  // Workers that check (SHA-256), write, sync and finish chunks off the event loop's thread.
  capsule::ThreadPool& workers() { return *workers_; }
  // Threads for store calls that wait on the network or on other sessions (beginning an
  // incoming capsule, opening a stored one, reading chunks to send onward): a stalled object
  // store holds these, never the event loop or the workers.
  capsule::ThreadPool& store_calls() { return *store_calls_; }

 private:
  DepotOptions options_;
  MemoryBudget fetch_budget_;  // outlives the sessions, whose pushes hold leases of it
  int fetches_ = 0;
  int fetches_peak_ = 0;
  // Per peer: fetches served now and its share of the fetch memory. Kept for the depot's life
  // (one entry per peer that ever fetched: the site's pinned peers), so that the leases and
  // places that refer to them never outlive them.
  struct PeerFetches {
    int fetches = 0;
    std::unique_ptr<MemoryBudget> budget;
  };
  std::map<std::string, PeerFetches> peer_fetches_;
  PeerFetches& PeerFetchesOf(const std::string& peer);
  std::mutex receipt_mu_;  // around options_.record_receipt; outlives the workers' jobs
  // Destroys incoming capsules (Receive gives them a deleter that hands them here). Declared
  // before the pools whose jobs may let go of a capsule, so it is let go after them; shared
  // with those deleters, since a capability of a session may outlive the depot.
  std::shared_ptr<capsule::ThreadPool> releases_;
  std::unique_ptr<capsule::ThreadPool> workers_;
  std::unique_ptr<capsule::ThreadPool> store_calls_;
  // Capsules being received, by id: shared by every connection offering them.
  std::map<std::string, std::weak_ptr<capsule::IncomingCapsule>> incoming_;
  // Capsules whose store Begin is running, by id: resolves when it is done.
  std::map<std::string, kj::ForkedPromise<void>> beginning_;
  std::map<std::string, std::string> last_conflict_;  // by peer fingerprint
  // By incoming capsule (alive while a pace is: its holders hold the capsule too).
  std::map<const capsule::IncomingCapsule*, std::weak_ptr<SyncPace>> paces_;
};

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_DEPOT_H_

// GCC 12 at -O2 and above warns of a maybe-uninitialized absl::Status inside kj's Maybe<T>
// storage when a kj::Promise<absl::StatusOr<...>> is made from a value (a false positive: the
// union member is constructed before it is read).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "transfer/depot.h"
#include "transfer/depot_internal.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capnp/capability.h"
#include "capsule/format.h"
#include "capsule/io.h"
#include "transfer/errors.h"
#include "transfer/off_loop.h"
#include "transfer/sender.h"

namespace bunker::transfer {
namespace {

capsule::Prelude PreludeFrom(schema::Prelude::Reader p) {
  // Each get() of a field is charged against the message's traversal limit (64 MiB): read
  // once, not once for begin() and again for end(), which halved the offer a capsule can make.
  const capnp::Data::Reader header = p.getHeader();
  const capnp::Data::Reader tail = p.getTail();
  capsule::Prelude out;
  out.header.assign(header.begin(), header.end());
  out.tail.assign(tail.begin(), tail.end());
  return out;
}

class TransferImpl final : public schema::Transfer::Server {
 public:
  TransferImpl(Depot& depot, crypto::PublicIdentity peer, WriteMeter* connection)
      : depot_(depot),
        peer_id_(peer),
        peer_(peer.fingerprint().ToString()),
        meter_(connection == nullptr ? kj::Own<WriteMeter>() : kj::addRef(*connection)) {}

  // Echoes at most 1 KiB: an answer waits in memory until the peer reads it, and a peer that
  // does not read could otherwise park a message-sized answer (64 MiB) in each of its sessions.
  kj::Promise<void> ping(PingContext context) override {
    constexpr size_t kMaxNonce = 1024;
    const capnp::Data::Reader nonce = context.getParams().getNonce();
    if (nonce.size() > kMaxNonce) {
      return ToException(absl::InvalidArgumentError("a ping nonce holds at most 1024 bytes"));
    }
    context.getResults().setNonce(nonce);
    return kj::READY_NOW;
  }

  kj::Promise<void> offer(OfferContext context) override {
    absl::Status serving = depot_.CheckServing(peer_, "offer");
    if (!serving.ok()) return ToException(serving);
    capsule::Prelude prelude = PreludeFrom(context.getParams().getPrelude());
    // Beginning (in an object store: HEAD, a marker, CreateMultipartUpload) runs off the event
    // loop, so a slow store stalls only this offer.
    kj::Promise<absl::StatusOr<std::shared_ptr<capsule::IncomingCapsule>>> in =
        depot_.Receive(prelude, peer_);
    return in.then([this, context, prelude = std::move(prelude)](
                       absl::StatusOr<std::shared_ptr<capsule::IncomingCapsule>> in) mutable
                   -> kj::Promise<void> {
      if (absl::IsAlreadyExists(in.status())) return AlreadyStored(context, std::move(prelude));
      if (!in.ok()) return ToException(PeerSafe(in.status()));
      auto results = context.getResults();
      const std::vector<uint64_t> missing = (*in)->Missing();
      SetRanges(missing, [&results](unsigned n) { return results.initMissing(n); });
      results.setUpload(NewUpload(depot_, *in, peer_));
      return kj::READY_NOW;
    });
  }

  // An offer of a capsule the store holds: "already stored" only for the very same capsule,
  // not any capsule claiming its id. Reading the stored prelude and recording a missing receipt
  // (the audit log: a write and a sync) run off the event loop.
  kj::Promise<void> AlreadyStored(OfferContext context, capsule::Prelude prelude) {
    absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> r =
        capsule::CheckPrelude(prelude, depot_.options().trusted);
    if (!r.ok()) return ToException(r.status());
    const std::string id = (*r)->manifest().IdHex();
    auto receipt = std::make_shared<DepotEvent>(
        DepotEvent{"received", id, (*r)->manifest().issuer.fingerprint().ToString(), peer_,
                   "offered again; already stored, its receipt was missing"});
    std::shared_ptr<capsule::Store> store = depot_.options().store;
    auto offered = std::make_shared<capsule::Prelude>(std::move(prelude));
    // The store-call threads are joined before the depot's receipt lock and options go.
    Depot* depot = &depot_;
    return OffLoop<absl::Status>(
               depot_.store_calls(),
               [store, id, offered, depot, receipt]() -> absl::Status {
                 absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> file = store->Open(id);
                 absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> stored =
                     file.ok() ? capsule::CapsuleReader::OpenUntrusted(std::move(*file))
                               : absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>>(
                                     file.status());
                 absl::StatusOr<capsule::Prelude> stored_prelude =
                     stored.ok() ? capsule::ReadPrelude(**stored)
                                 : absl::StatusOr<capsule::Prelude>(stored.status());
                 if (!stored_prelude.ok() || stored_prelude->header != offered->header ||
                     stored_prelude->tail != offered->tail) {
                   return absl::DataLossError(
                       absl::StrCat("a different capsule with id ", id, " is already stored here"));
                 }
                 // A capsule stored without its receipt (a crash between the two in an older
                 // version, a copy into the store) gets it now.
                 return depot->RecordReceipt(*receipt);
               })
        .then([this, context, id, receipt](absl::Status same) mutable -> kj::Promise<void> {
          if (!same.ok()) {
            // Put on record like every refused offer (spec/TRANSFER.md 5.6): a capsule
            // claiming a stored one's id is what a forger sends.
            const absl::Status safe = PeerSafe(same);
            depot_.Emit({"refused", id, receipt->issuer, peer_, std::string(safe.message())});
            return ToException(safe);
          }
          auto results = context.getResults();
          results.setUpload(NewStoredUpload(id));
          results.initMissing(0);
          return kj::READY_NOW;
        });
  }

  kj::Promise<void> fetch(FetchContext context) override {
    if (!depot_.options().expected_id.empty()) {
      return ToException(absl::PermissionDeniedError("this receiver serves no fetches"));
    }
    absl::Status serving = depot_.CheckServing(peer_, "fetch");
    if (!serving.ok()) return ToException(serving);
    const std::string id = absl::AsciiStrToLower(context.getParams().getCapsuleId().cStr());
    if (id.size() != 2 * capsule::kCapsuleIdSize ||
        id.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return ToException(absl::InvalidArgumentError("a capsule id is 32 hex characters"));
    }
    kj::Own<Depot::FetchPlace> place;
    KJ_IF_MAYBE(p, depot_.TakeFetchPlace(peer_)) {
      place = kj::mv(*p);
    } else {
      depot_.Emit({"refused", id, "", peer_, "fetch refused: too many fetches at once"});
      return ToException(absl::ResourceExhaustedError(
          "the sender serves too many fetches at once; try again later"));
    }
    // Opening (in an object store: HEAD and ranged GETs) and reading chunks run off the event
    // loop.
    std::shared_ptr<capsule::Store> store = depot_.options().store;
    using Opened = absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>>;
    return OffLoop<Opened>(depot_.store_calls(),
                           [store, id]() -> Opened {
                             absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> file =
                                 store->Open(id);
                             if (absl::IsNotFound(file.status())) {
                               return absl::NotFoundError(
                                   absl::StrCat("capsule ", id, " is not in the store"));
                             }
                             if (!file.ok()) return file.status();
                             return capsule::CapsuleReader::OpenUntrusted(std::move(*file));
                           })
        .then([this, context, id](Opened reader) mutable -> kj::Promise<void> {
          if (!reader.ok()) {
            const absl::Status safe = PeerSafe(reader.status(), "the sending site");
            depot_.Emit({"refused", id, "", peer_, absl::StrCat("fetch failed: ", safe.message())});
            return ToException(safe);
          }
          auto receiver = context.getParams().getReceiver();
          SendOptions options;
          options.for_fetch = true;
          options.read_pool = &depot_.store_calls();
          options.budget = &depot_.fetch_budget();
          options.peer_budget = &depot_.peer_fetch_budget(peer_);
          // The receiver is served on this connection: its meter paces the puts.
          if (meter_.get() != nullptr) options.meters = {meter_.get()};
          // The push shares the reader with its reads on the store-call threads.
          return Push(std::shared_ptr<const capsule::CapsuleReader>(std::move(*reader)), receiver,
                      std::move(options))
              .then([this, context, id](SendSummary summary) mutable {
                auto s = context.getResults().initSummary();
                s.setCapsuleId(summary.capsule_id);
                s.setChunksTotal(summary.chunks_total);
                s.setChunksSent(summary.chunks_sent);
                s.setChunksSkipped(summary.chunks_skipped);
                s.setBytesSent(summary.bytes_sent);
                s.setSeconds(summary.seconds);
                depot_.Emit({"sent", id, "", peer_,
                             absl::StrCat(summary.chunks_sent, " chunks sent, ",
                                          summary.chunks_skipped, " already there")});
              })
              // A failure reading the store (a local path, an S3 endpoint, bucket and key)
              // reaches the peer only as PeerSafe lets it.
              .catch_([this, id](kj::Exception&& e) -> kj::Promise<void> {
                const absl::Status safe = PeerSafe(FromException(e), "the sending site");
                depot_.Emit({"refused", id, "", peer_, absl::StrCat("fetch failed: ", safe.message())});
                return ToException(safe);
              });
        })
        .attach(kj::mv(place));
  }

  kj::Promise<void> newestOf(NewestOfContext context) override {
    WitnessStore* store = depot_.options().witness_store;
    if (store == nullptr) {
      return ToException(absl::FailedPreconditionError("this site keeps no witness copies"));
    }
    std::optional<CheckpointFacts> held = store->Newest(peer_id_);
    context.getResults().setCheckpoint(held ? held->text : std::string());
    return kj::READY_NOW;
  }

  kj::Promise<void> witness(WitnessContext context) override {
    WitnessStore* store = depot_.options().witness_store;
    if (store == nullptr) {
      return ToException(absl::FailedPreconditionError("this site keeps no witness copies"));
    }
    auto params = context.getParams();
    const auto text = params.getCheckpoint();
    const auto lost = params.getAcknowledgedLoss();
    const auto proof = params.getConsistency();
    // Sizes are checked before anything is copied.
    if (text.size() > kMaxCheckpointText || lost.size() > kMaxCheckpointText) {
      return ToException(absl::InvalidArgumentError(
          absl::StrCat("a checkpoint is at most ", kMaxCheckpointText, " bytes")));
    }
    if (proof.size() > kMaxConsistencyProof) {
      return ToException(absl::InvalidArgumentError(
          absl::StrCat("a consistency proof has at most ", kMaxConsistencyProof, " hashes")));
    }
    std::vector<crypto::Sha256Digest> path;
    for (auto hash : proof) {
      if (hash.size() != crypto::kSha256Size) {
        return ToException(absl::InvalidArgumentError("a consistency proof hash is 32 bytes"));
      }
      path.emplace_back();
      std::copy(hash.begin(), hash.end(), path.back().begin());
    }
    WitnessOutcome outcome;
    absl::StatusOr<CheckpointFacts> held =
        store->Witness(peer_id_, std::string_view(text.cStr(), text.size()), path,
                       std::string_view(lost.cStr(), lost.size()), &outcome);
    if (!held.ok()) {
      const absl::Status safe = PeerSafe(held.status());
      if (absl::IsDataLoss(held.status())) depot_.Conflict(peer_, std::string(safe.message()));
      return ToException(safe);
    }
    if (outcome == WitnessOutcome::kFirst) {
      depot_.Emit({"witnessed", "", "", peer_, absl::StrCat("first checkpoint held: size ",
                                                           held->size)});
    }
    if (outcome == WitnessOutcome::kReset) {
      depot_.Emit({"witness-reset", "", "", peer_,
                   absl::StrCat("the peer acknowledged the loss of its checkpoint held here; ",
                                "now holding size ", held->size, "; the lost one is kept in ",
                                "the history")});
    }
    context.getResults().setNewest(held->text);
    return kj::READY_NOW;
  }

 private:
  Depot& depot_;
  crypto::PublicIdentity peer_id_;
  std::string peer_;
  kj::Own<WriteMeter> meter_;  // the connection's, if known
};

}  // namespace

Depot::Depot(DepotOptions options)
    : options_(std::move(options)),
      fetch_budget_(options_.fetch_memory),
      releases_(std::make_shared<capsule::ThreadPool>(1)),
      workers_(std::make_unique<capsule::ThreadPool>(0)),
      store_calls_(std::make_unique<capsule::ThreadPool>(kStoreCallThreads)) {}
// The pool's destructor runs what is queued and joins its threads first: the jobs hold their
// own references to what they touch.
Depot::~Depot() = default;

schema::Transfer::Client Depot::ServeFor(const crypto::PublicIdentity& peer,
                                         WriteMeter* connection) {
  return kj::heap<TransferImpl>(*this, peer, connection);
}

Depot::PeerFetches& Depot::PeerFetchesOf(const std::string& peer) {
  PeerFetches& p = peer_fetches_[peer];
  if (p.budget == nullptr) {
    p.budget = std::make_unique<MemoryBudget>(options_.fetch_memory_per_peer);
  }
  return p;
}

MemoryBudget& Depot::peer_fetch_budget(const std::string& peer) {
  return *PeerFetchesOf(peer).budget;
}

kj::Maybe<kj::Own<Depot::FetchPlace>> Depot::TakeFetchPlace(const std::string& peer) {
  PeerFetches& p = PeerFetchesOf(peer);
  if (fetches_ >= options_.max_fetches || p.fetches >= options_.max_fetches_per_peer) {
    return nullptr;
  }
  ++p.fetches;
  fetches_peak_ = std::max(fetches_peak_, ++fetches_);
  return kj::heap<FetchPlace>(fetches_, p.fetches);
}

void Depot::Emit(DepotEvent event) {
  if (options_.on_event) options_.on_event(event);
}

absl::Status Depot::RecordReceipt(const DepotEvent& receipt) {
  if (!options_.record_receipt) return absl::OkStatus();
  // Finishing runs on workers: one receipt at a time.
  std::lock_guard<std::mutex> lock(receipt_mu_);
  absl::Status s = options_.record_receipt(receipt);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("the receipt of capsule ", receipt.capsule_id,
                                             " could not be recorded, so it is not stored: ",
                                             s.message()));
}

absl::Status Depot::RecordStoredReceipts() {
  // A store others may write to (S3) holds nothing this daemon can vouch for by finding it:
  // its receipts are those recorded as capsules are received (spec/STORE.md "Receipts").
  if (!options_.record_receipt || !options_.store->OnlyItsDaemonWrites()) {
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::string>> ids = options_.store->List();
  if (!ids.ok()) return ids.status();
  for (const std::string& id : *ids) {
    absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> file = options_.store->Open(id);
    if (absl::IsUnavailable(file.status()) || absl::IsPermissionDenied(file.status())) {
      return file.status();  // the store cannot be read: starting would leave capsules unaccounted
    }
    if (!file.ok()) continue;
    absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> r =
        capsule::CapsuleReader::OpenUntrusted(std::move(*file));
    if (!r.ok() || (*r)->manifest().IdHex() != id) continue;
    absl::Status s = RecordReceipt({"received", id, (*r)->manifest().issuer.fingerprint().ToString(),
                                    "", "found in the store without a receipt (recorded at start)"});
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Depot::CheckServing(const std::string& peer, const std::string& what) {
  if (options_.witness_state == nullptr) return absl::OkStatus();
  absl::Status s = options_.witness_state->Check();
  if (s.ok()) return s;
  Emit({"refused", "", "", peer, absl::StrCat(what, " refused: ", s.message())});
  return absl::FailedPreconditionError(s.message());
}

void Depot::Conflict(const std::string& peer, const std::string& detail) {
  std::string& last = last_conflict_[peer];
  if (last == detail) return;
  last = detail;
  Emit({"witness-conflict", "", "", peer, detail});
}

void Depot::Finished(const std::string& capsule_id) { incoming_.erase(capsule_id); }

kj::Promise<absl::StatusOr<std::shared_ptr<capsule::IncomingCapsule>>> Depot::Receive(
    const capsule::Prelude& prelude, const std::string& peer) {
  using Result = absl::StatusOr<std::shared_ptr<capsule::IncomingCapsule>>;
  // Everything that can refuse the capsule runs before anything is written.
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> checked =
      capsule::CheckPrelude(prelude, options_.trusted);
  if (!checked.ok()) {
    Emit({"refused", "", "", peer, std::string(checked.status().message())});
    return Result(checked.status());
  }
  const capsule::Manifest& m = (*checked)->manifest();
  const std::string id = m.IdHex();
  const std::string issuer = m.issuer.fingerprint().ToString();
  if (!options_.expected_id.empty() && id != options_.expected_id) {
    return Result(absl::PermissionDeniedError(
        absl::StrCat("offered capsule ", id, " is not the one asked for")));
  }
  if (options_.admit) {
    absl::Status admitted = options_.admit(m);
    if (!admitted.ok()) {
      const std::string why(admitted.message());
      Emit({"refused", id, issuer, peer, why});
      return Result(absl::PermissionDeniedError(why));
    }
  }
  auto it = incoming_.find(id);
  if (it != incoming_.end()) {
    if (std::shared_ptr<capsule::IncomingCapsule> live = it->second.lock()) {
      if (!live->SamePrelude(prelude)) {
        const std::string why = absl::StrCat("another capsule with id ", id, " is being received");
        Emit({"refused", id, issuer, peer, why});
        return Result(absl::DataLossError(why));
      }
      return Result(live);
    }
  }
  auto starting = beginning_.find(id);
  if (starting != beginning_.end()) {
    // Another offer of this capsule is beginning it: share its outcome, then look again.
    return starting->second.addBranch().then(
        [this, prelude, peer]() { return Receive(prelude, peer); });
  }
  auto started = kj::newPromiseAndFulfiller<void>();
  beginning_.emplace(id, started.promise.fork());
  std::shared_ptr<capsule::Store> store = options_.store;
  std::vector<crypto::PublicIdentity> trusted = options_.trusted;
  using Begun = absl::StatusOr<std::unique_ptr<capsule::IncomingCapsule>>;
  return OffLoop<Begun>(*store_calls_,
                        [store, prelude, trusted]() { return store->Begin(prelude, trusted); })
      .then([this, id, issuer, peer, done = kj::mv(started.fulfiller)](Begun in) mutable {
        beginning_.erase(id);
        done->fulfill();  // waiters look again once this continuation has run
        if (!in.ok()) {
          if (!absl::IsAlreadyExists(in.status())) {
            Emit({"refused", id, issuer, peer, std::string(PeerSafe(in.status()).message())});
          }
          return Result(in.status());
        }
        // Whoever lets go of it last (a session that drops, on the event loop), it is destroyed
        // on releases_: an S3 incoming capsule's destructor stops its part uploads, which may
        // take a while.
        std::shared_ptr<capsule::IncomingCapsule> shared(
            in->release(), [releases = releases_](capsule::IncomingCapsule* gone) {
              releases->Submit([gone]() { delete gone; });
            });
        incoming_[id] = shared;
        Emit({"offer", id, issuer, peer,
              absl::StrCat(shared->chunk_count() - shared->received_count(), " of ",
                           shared->chunk_count(), " chunks to receive")});
        return Result(shared);
      });
}

}  // namespace bunker::transfer

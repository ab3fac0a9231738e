// GCC 12 at -O2 and above warns of a maybe-uninitialized absl::Status inside kj's Maybe<T>
// storage when a kj::Promise<absl::StatusOr<...>> is made from a value (a false positive: the
// union member is constructed before it is read).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "transfer/depot.h"

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
  capsule::Prelude out;
  out.header.assign(p.getHeader().begin(), p.getHeader().end());
  out.tail.assign(p.getTail().begin(), p.getTail().end());
  return out;
}

// Consecutive indexes as ranges, for the wire; `init(n)` makes the list of n ranges.
template <typename InitList>
void SetRanges(const std::vector<uint64_t>& sorted, InitList init) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (uint64_t i : sorted) {
    if (!ranges.empty() && ranges.back().first + ranges.back().second == i) {
      ++ranges.back().second;
    } else {
      ranges.push_back({i, 1});
    }
  }
  auto list = init(static_cast<unsigned>(ranges.size()));
  for (size_t k = 0; k < ranges.size(); ++k) {
    list[static_cast<unsigned>(k)].setFirst(ranges[k].first);
    list[static_cast<unsigned>(k)].setCount(ranges[k].second);
  }
}

// One chunk handed to a worker, which reads it in place from the RPC message that brought it.
// Settle() returns only once the worker cannot touch the chunk any more: a job not started is
// withdrawn, one running is waited for (one chunk's SHA-256 and write, about a millisecond).
struct ChunkJob {
  std::mutex mu;
  std::condition_variable cv;
  enum { kQueued, kRunning, kDone, kWithdrawn } state = kQueued;
  absl::Status result;  // published by fulfilling `fulfiller` (read on the event loop)
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller;

  // On the worker: false if the job was withdrawn.
  bool Start() {
    std::lock_guard<std::mutex> lock(mu);
    if (state == kWithdrawn) return false;
    state = kRunning;
    return true;
  }
  void Finish(absl::Status s) {
    result = std::move(s);
    {
      std::lock_guard<std::mutex> lock(mu);
      state = kDone;
    }
    cv.notify_all();
    fulfiller->fulfill();
  }
  // On the event loop, when the call's promise goes away (done or not).
  void Settle() {
    std::unique_lock<std::mutex> lock(mu);
    if (state == kQueued) {
      state = kWithdrawn;
      return;
    }
    cv.wait(lock, [this] { return state != kRunning; });
  }
};

// A capsule the store already holds: nothing to send, and finish() confirms it.
class StoredUpload final : public schema::Upload::Server {
 public:
  explicit StoredUpload(std::string id) : id_(std::move(id)) {}
  kj::Promise<void> put(PutContext) override {
    return ToException(absl::FailedPreconditionError("the capsule is already stored"));
  }
  kj::Promise<void> commit(CommitContext) override { return kj::READY_NOW; }
  kj::Promise<void> finish(FinishContext context) override {
    context.getResults().setCapsuleId(id_);
    return kj::READY_NOW;
  }

 private:
  std::string id_;
};

class UploadImpl final : public schema::Upload::Server {
 public:
  UploadImpl(Depot& depot, std::shared_ptr<capsule::IncomingCapsule> in, std::string peer)
      : depot_(depot), in_(std::move(in)), pace_(depot.PaceOf(in_)), peer_(std::move(peer)) {}

  kj::Promise<void> put(PutContext context) override {
    auto params = context.getParams();
    const uint64_t index = params.getIndex();
    if (index >= in_->chunk_count()) {
      return ToException(absl::InvalidArgumentError(absl::StrCat("chunk index ", index,
                                                                 " out of range")));
    }
    if (in_->IsReceived(index)) return kj::READY_NOW;
    // The SHA-256 check and the write run on a worker, so that chunks arriving over several
    // connections use every core. The worker reads the bytes where they are, in the call's
    // message (no copy): the RPC system keeps that message until this call's promise is gone
    // (calls are not cancellable here: no allowCancellation()), and the promise, when it is
    // destroyed early (the event loop going away), first waits for a job already running and
    // withdraws one not yet started (ChunkJob::Settle).
    auto data = params.getData();
    auto job = std::make_shared<ChunkJob>();
    auto done = kj::newPromiseAndCrossThreadFulfiller<void>();
    job->fulfiller = kj::mv(done.fulfiller);
    std::shared_ptr<capsule::IncomingCapsule> in = in_;
    const absl::Span<const uint8_t> bytes(data.begin(), data.size());
    depot_.workers().Submit([in, index, bytes, job]() {
      if (!job->Start()) return;  // withdrawn
      absl::Status s = in->CheckAndWrite(index, bytes);
      job->Finish(std::move(s));
    });
    ++inflight_;
    return done.promise
        .then([this, index, job, bytes = data.size()]() -> kj::Promise<void> {
          Drained();
          const absl::Status s = job->result;
          if (absl::IsDataLoss(s)) {
            // Refused, not fatal: reported by the next commit() so the sender resends it.
            rejected_.insert(index);  // a set: bounded by the chunk count
            return kj::READY_NOW;
          }
          if (!s.ok()) return ToException(PeerSafe(s));
          in_->MarkWritten(index);
          depot_.Wrote(pace_, in_, bytes);
          return kj::READY_NOW;
        })
        .attach(kj::defer([job]() { job->Settle(); }));
  }

  kj::Promise<void> commit(CommitContext context) override {
    // Every put of this upload must be written before the commit makes it durable.
    return WhenDrained().then([this, context]() mutable { return Commit(context); });
  }

  kj::Promise<void> Commit(CommitContext context) {
    // A sync the receiver started by itself failed: chunks it had taken may not be journaled.
    absl::Status failed = pace_->TakeFailure();
    if (!failed.ok()) return ToException(PeerSafe(failed));
    // The data sync (and, in an object store, part uploads) run on a worker.
    std::shared_ptr<capsule::IncomingCapsule> in = in_;
    return OffLoop<absl::StatusOr<std::vector<uint64_t>>>(depot_.workers(), [in]() {
             return in->Sync();
           })
        .then([this, context](absl::StatusOr<std::vector<uint64_t>> durable) mutable
              -> kj::Promise<void> {
          if (!durable.ok()) return ToException(PeerSafe(durable.status()));
          auto results = context.getResults();
          std::vector<uint64_t> sorted = *durable;
          std::sort(sorted.begin(), sorted.end());
          SetRanges(sorted, [&results](unsigned n) { return results.initDurable(n); });
          // Chunks the store took back (damaged before they left its spool) are refused too.
          for (uint64_t i : in_->TakeRefused()) rejected_.insert(i);
          auto rejected = results.initRejected(static_cast<unsigned>(rejected_.size()));
          unsigned k = 0;
          for (uint64_t i : rejected_) rejected.set(k++, i);
          rejected_.clear();
          return kj::READY_NOW;
        });
  }

  kj::Promise<void> finish(FinishContext context) override {
    return WhenDrained().then([this, context]() mutable { return Finish(context); });
  }

  kj::Promise<void> Finish(FinishContext context) {
    const capsule::Manifest& m = in_->manifest();
    // The receipt goes on record before the capsule gets its name: a crash in between leaves
    // a receipt and an unnamed, complete capsule that a resend names.
    auto receipt = std::make_shared<DepotEvent>(
        DepotEvent{"received", m.IdHex(), m.issuer.fingerprint().ToString(), peer_,
                   absl::StrCat(in_->chunk_count(), " chunks verified and stored")});
    std::shared_ptr<capsule::IncomingCapsule> in = in_;
    Depot* depot = &depot_;
    // Sync and naming (and, in an object store, the last parts and completing the upload) run
    // on a worker; nothing is read back (capsule/incoming.h Finish).
    return OffLoop<absl::StatusOr<std::string>>(depot_.workers(), [in, depot, receipt]() {
             absl::Status s = in->Sync().status();
             if (!s.ok()) return absl::StatusOr<std::string>(s);
             return in->Finish([depot, receipt] { return depot->RecordReceipt(*receipt); });
           })
        .then([this, context, receipt](absl::StatusOr<std::string> where) mutable
              -> kj::Promise<void> {
          if (!where.ok()) {
            depot_.Emit({"refused", receipt->capsule_id, receipt->issuer, peer_,
                         absl::StrCat("finish failed: ", PeerSafe(where.status()).message())});
            return ToException(PeerSafe(where.status()));
          }
          depot_.Emit(*receipt);
          depot_.Finished(receipt->capsule_id);
          context.getResults().setCapsuleId(receipt->capsule_id);
          return kj::READY_NOW;
        });
  }

 private:
  // Resolves once no put of this upload is being checked or written.
  kj::Promise<void> WhenDrained() {
    if (inflight_ == 0) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    waiters_.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  void Drained() {
    if (--inflight_ > 0) return;
    for (auto& w : waiters_) w->fulfill();
    waiters_.clear();
  }

  Depot& depot_;
  std::shared_ptr<capsule::IncomingCapsule> in_;
  std::shared_ptr<Depot::SyncPace> pace_;
  std::string peer_;
  std::set<uint64_t> rejected_;
  uint64_t inflight_ = 0;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiters_;
};

class TransferImpl final : public schema::Transfer::Server {
 public:
  TransferImpl(Depot& depot, crypto::PublicIdentity peer, WriteMeter* connection)
      : depot_(depot),
        peer_id_(peer),
        peer_(peer.fingerprint().ToString()),
        meter_(connection == nullptr ? kj::Own<WriteMeter>() : kj::addRef(*connection)) {}

  kj::Promise<void> ping(PingContext context) override {
    context.getResults().setNonce(context.getParams().getNonce());
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
      results.setUpload(kj::heap<UploadImpl>(depot_, *in, peer_));
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
        .then([this, context, id](absl::Status same) mutable -> kj::Promise<void> {
          if (!same.ok()) return ToException(PeerSafe(same));
          auto results = context.getResults();
          results.setUpload(kj::heap<StoredUpload>(id));
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
          if (!reader.ok()) return ToException(PeerSafe(reader.status()));
          auto receiver = context.getParams().getReceiver();
          SendOptions options;
          options.read_pool = &depot_.store_calls();
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
              });
        });
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
      workers_(std::make_unique<capsule::ThreadPool>(0)),
      store_calls_(std::make_unique<capsule::ThreadPool>(kStoreCallThreads)) {}
// The pool's destructor runs what is queued and joins its threads first: the jobs hold their
// own references to what they touch.
Depot::~Depot() = default;

schema::Transfer::Client Depot::ServeFor(const crypto::PublicIdentity& peer,
                                         WriteMeter* connection) {
  return kj::heap<TransferImpl>(*this, peer, connection);
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

absl::Status Depot::SyncPace::TakeFailure() {
  std::lock_guard<std::mutex> lock(mu);
  absl::Status f = std::move(failed);
  failed = absl::OkStatus();
  return f;
}

std::shared_ptr<Depot::SyncPace> Depot::PaceOf(
    const std::shared_ptr<capsule::IncomingCapsule>& in) {
  for (auto it = paces_.begin(); it != paces_.end();) {
    it = it->second.expired() ? paces_.erase(it) : std::next(it);
  }
  std::weak_ptr<SyncPace>& slot = paces_[in.get()];
  std::shared_ptr<SyncPace> pace = slot.lock();
  if (pace == nullptr) {
    pace = std::make_shared<SyncPace>();
    slot = pace;
  }
  return pace;
}

void Depot::Wrote(const std::shared_ptr<SyncPace>& pace,
                  const std::shared_ptr<capsule::IncomingCapsule>& in, uint64_t bytes) {
  if (options_.sync_every == 0) return;
  {
    std::lock_guard<std::mutex> lock(pace->mu);
    pace->unsynced += bytes;
    if (pace->unsynced < options_.sync_every || pace->syncing) return;
    pace->syncing = true;
    pace->unsynced = 0;
  }
  // On a worker, like a commit's sync; the job holds what it touches (the pool runs what is
  // queued before the depot goes).
  workers_->Submit([pace, in]() {
    absl::StatusOr<std::vector<uint64_t>> synced = in->Sync();
    std::lock_guard<std::mutex> lock(pace->mu);
    pace->syncing = false;
    if (!synced.ok() && pace->failed.ok()) pace->failed = synced.status();
  });
}

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
        return Result(absl::DataLossError(
            absl::StrCat("another capsule with id ", id, " is being received")));
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
        std::shared_ptr<capsule::IncomingCapsule> shared = std::move(*in);
        incoming_[id] = shared;
        Emit({"offer", id, issuer, peer,
              absl::StrCat(shared->chunk_count() - shared->received_count(), " of ",
                           shared->chunk_count(), " chunks to receive")});
        return Result(shared);
      });
}

}  // namespace bunker::transfer

// GCC 12 at -O2 and above warns of a maybe-uninitialized absl::Status inside kj's Maybe<T>
// storage when a kj::Promise<absl::StatusOr<...>> is made from a value (a false positive: the
// union member is constructed before it is read).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// The Upload side of a depot: chunks checked and written on workers, commits, finish, and the
// receiver's own syncs of a capsule being received (DepotOptions::sync_every).
#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "transfer/depot.h"
#include "transfer/depot_internal.h"
#include "transfer/errors.h"
#include "transfer/off_loop.h"

namespace bunker::transfer {
namespace {

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
          if (!rejected_.empty() && !rejection_recorded_) {
            // On record once per upload, counted (the sender resends them, and gives up after
            // a few refusals of one chunk): a peer sending chunks that do not match the
            // signed table is either corrupt or hostile.
            rejection_recorded_ = true;
            const capsule::Manifest& m = in_->manifest();
            depot_.Emit({"refused", m.IdHex(), m.issuer.fingerprint().ToString(), peer_,
                         absl::StrCat(rejected_.size(), " chunk(s) refused (first: chunk ",
                                      *rejected_.begin(),
                                      "): they do not match the signed chunk table")});
          }
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
  bool rejection_recorded_ = false;  // the upload's one "refused" event for rejected chunks
  uint64_t inflight_ = 0;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiters_;
};

}  // namespace

schema::Upload::Client NewUpload(Depot& depot, std::shared_ptr<capsule::IncomingCapsule> in,
                                 std::string peer) {
  return kj::heap<UploadImpl>(depot, std::move(in), std::move(peer));
}

schema::Upload::Client NewStoredUpload(std::string id) {
  return kj::heap<StoredUpload>(std::move(id));
}

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

}  // namespace bunker::transfer

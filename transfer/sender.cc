#include "transfer/sender.h"

#include <kj/debug.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "capsule/format.h"
#include "capsule/incoming.h"
#include "transfer/errors.h"
#include "transfer/memory_budget.h"
#include "transfer/off_loop.h"
#include "transfer/write_meter.h"

namespace bunker::transfer {
namespace {

using Clock = std::chrono::steady_clock;

// The state of one push, shared by its chains.
struct PushState : public kj::Refcounted, private kj::TaskSet::ErrorHandler {
  // Shared with the reads running on `options.read_pool`: a job still running when the push is
  // dropped (a cancelled call) keeps the reader alive.
  std::shared_ptr<const capsule::CapsuleReader> reader;
  SendOptions options;
  std::vector<schema::Upload::Client> uploads;  // one per connection
  std::deque<uint64_t> queue;           // chunks still to send
  std::vector<bool> queued;             // per chunk: in `queue` (bounds it by the chunk count)

  // Queues chunk `i` unless it already is; false for an index the capsule does not have. What a
  // receiver names is never trusted to be in range or free of repeats.
  bool Enqueue(uint64_t i) {
    if (i >= queued.size()) return false;
    if (!queued[i]) {
      queued[i] = true;
      queue.push_back(i);
    }
    return true;
  }
  std::map<uint64_t, int> rejections;   // per chunk
  SendProgress progress;
  SendSummary summary;
  uint64_t since_commit = 0;
  Clock::time_point start = Clock::now();
  Clock::time_point last_commit = Clock::now();

  bool CommitDue() const {
    return since_commit >= options.commit_every ||
           std::chrono::duration<double>(Clock::now() - last_commit).count() >=
               options.commit_seconds;
  }

  // Chain k's upload: chains are spread over the connections.
  schema::Upload::Client& Upload(size_t k) { return uploads[k % uploads.size()]; }

  // Per connection: bytes of the puts sent on it (counted when a chain takes the chunk), and
  // what its meter had written before the first of them.
  std::vector<uint64_t> put_bytes;
  std::vector<std::optional<uint64_t>> meter_base;

  // Waits, if the connections are metered, until chain k's connection has written all but
  // `max_unwritten` bytes of the puts before this one of `size` bytes.
  kj::Promise<void> Room(size_t k, uint64_t size) {
    if (options.meters.size() != uploads.size()) return kj::READY_NOW;
    const size_t c = k % uploads.size();
    WriteMeter& meter = *options.meters[c];
    if (!meter_base[c]) meter_base[c] = meter.written();
    const uint64_t before = put_bytes[c];
    put_bytes[c] += size;
    if (before <= options.max_unwritten) return kj::READY_NOW;
    return meter.WhenWritten(*meter_base[c] + before - options.max_unwritten);
  }

  // A lease of `size` bytes of options.budget (none without a budget). In a Maybe: a null
  // Own cannot travel in a kj::Promise.
  using MaybeLease = kj::Maybe<kj::Own<MemoryBudget::Lease>>;
  kj::Promise<MaybeLease> Take(uint64_t size) {
    if (options.budget == nullptr) return MaybeLease(nullptr);
    MemoryBudget* budget = options.budget;
    if (options.peer_budget == nullptr) {
      return budget->Take(size).then(
          [](kj::Own<MemoryBudget::Lease> lease) { return MaybeLease(kj::mv(lease)); });
    }
    // The peer's share first, so that a peer waiting for its own room holds none of the rest.
    return options.peer_budget->Take(size).then(
        [budget, size](kj::Own<MemoryBudget::Lease> mine) {
          return budget->Take(size).then(
              [mine = kj::mv(mine)](kj::Own<MemoryBudget::Lease> all) mutable {
                return MaybeLease(all.attach(kj::mv(mine)));
              });
        });
  }

  // Keeps `lease` until chain k's connection has written everything put on it so far (the
  // put just sent included), or the connection fails, or this push ends; unmetered: until
  // `sent` resolves.
  void HoldUntilWritten(size_t k, kj::Promise<void> sent, MaybeLease lease) {
    if (lease == nullptr) return;
    kj::Promise<void> written = kj::mv(sent);
    if (options.meters.size() == uploads.size()) {
      const size_t c = k % uploads.size();
      written = options.meters[c]->WhenWritten(meter_base[c].value_or(0) + put_bytes[c]);
    }
    leases.add(written.then([]() {}, [](kj::Exception&&) {}).attach(kj::mv(lease)));
  }
  void taskFailed(kj::Exception&&) override {}  // a lease is given back either way
  kj::TaskSet leases{*this};

  void Report() {
    if (options.progress) options.progress(progress);
  }

  // Waits, if a rate is set, until sending `bytes` more keeps within it.
  kj::Promise<void> Pace(uint64_t bytes) {
    if (options.rate == 0 || options.timer == nullptr) return kj::READY_NOW;
    const double due = static_cast<double>(progress.sent_bytes + bytes) /
                       static_cast<double>(options.rate);
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (due <= elapsed) return kj::READY_NOW;
    return options.timer->afterDelay(
        static_cast<int64_t>((due - elapsed) * 1e9) * kj::NANOSECONDS);
  }

  // Commits on every connection (each reports the chunks it refused), queueing those again.
  // Holds no reference to this state (it may be kept in `pending_commit`, a member): whoever
  // waits for the promise keeps the state alive, and destroying the state cancels it.
  kj::Promise<void> Commit() {
    since_commit = 0;
    last_commit = Clock::now();
    auto commits = kj::heapArrayBuilder<kj::Promise<void>>(uploads.size());
    for (auto& upload : uploads) {
      commits.add(upload.commitRequest().send().then(
          [self = this](capnp::Response<schema::Upload::CommitResults>&& r) {
            for (uint64_t i : r.getRejected()) {
              if (i >= self->queued.size()) {
                kj::throwFatalException(ToException(
                    absl::DataLossError("the receiver refused a chunk the capsule does not have")));
              }
              if (++self->rejections[i] >= self->options.max_rejections) {
                const int n = self->options.max_rejections;
                kj::throwFatalException(ToException(absl::DataLossError(
                    self->options.for_fetch
                        ? absl::StrCat("the sending site's copy of the capsule is corrupt: its "
                                       "chunk ", i, " does not match the signed chunk table "
                                       "(refused ", n, " times)")
                        : absl::StrCat("the receiver refused chunk ", i, " ", n,
                                       " times: the capsule read here does not match its own "
                                       "chunk table"))));
              }
              self->Enqueue(i);
            }
          }));
    }
    return kj::joinPromises(commits.finish());
  }

  // One chain: send chunks from the queue until it is empty.
  kj::Promise<void> Chain(size_t k) {
    if (queue.empty()) return kj::READY_NOW;
    const uint64_t i = queue.front();
    queue.pop_front();
    queued[i] = false;
    const capsule::Geometry& g = reader->geometry();
    const uint64_t size = g.CipherSize(i);
    return Room(k, size)
        .then([self = kj::addRef(*this), size]() mutable { return self->Pace(size); })
        .then([self = kj::addRef(*this), size]() mutable { return self->Take(size); })
        .then([self = kj::addRef(*this), i, size, k](
                  MaybeLease lease) mutable -> kj::Promise<void> {
      if (self->options.read_pool == nullptr) {
        return Send(kj::mv(self), i, size, k, nullptr, kj::mv(lease));
      }
      // Read on the pool into a buffer of the job's own, then send from the loop.
      std::shared_ptr<const capsule::CapsuleReader> reader = self->reader;
      using Read = std::shared_ptr<absl::StatusOr<std::vector<uint8_t>>>;
      return OffLoop<Read>(*self->options.read_pool,
                           [reader, i, size]() -> Read {
                             auto out = std::make_shared<absl::StatusOr<std::vector<uint8_t>>>(
                                 std::vector<uint8_t>(size));
                             absl::Status s = reader->ReadRaw(reader->geometry().ChunkOffset(i),
                                                              absl::MakeSpan(**out));
                             if (!s.ok()) *out = s;
                             return out;
                           })
          .then([self = kj::mv(self), i, size, k, lease = kj::mv(lease)](Read bytes) mutable {
            return Send(kj::mv(self), i, size, k, bytes, kj::mv(lease));
          });
    });
  }

  // Sends chunk `i` on chain `k`: from `read` if given, else read here.
  static kj::Promise<void> Send(kj::Own<PushState> self, uint64_t i, uint64_t size, size_t k,
                                std::shared_ptr<absl::StatusOr<std::vector<uint8_t>>> read,
                                MaybeLease lease) {
    // One segment the chunk's size (plus the call's few words): without the hint the message
    // starts with a small segment and allocates a second one for the data.
    auto req = self->Upload(k).putRequest(capnp::MessageSize{size / sizeof(capnp::word) + 16, 0});
    req.setIndex(i);
    auto data = req.initData(static_cast<unsigned>(size));
    absl::Status s;
    if (read != nullptr) {
      s = read->status();
      if (s.ok()) std::copy((*read)->begin(), (*read)->end(), data.begin());
    } else {
      s = self->reader->ReadRaw(self->reader->geometry().ChunkOffset(i),
                                absl::MakeSpan(data.begin(), data.size()));
    }
    if (!s.ok()) kj::throwFatalException(ToException(s));
    ++self->summary.chunks_sent;
    self->summary.bytes_sent += size;
    self->progress.sent_bytes += size;
    self->since_commit += size;
    read.reset();  // the bytes are in the message now
    auto sent = req.send().fork();
    self->HoldUntilWritten(k, sent.addBranch(), kj::mv(lease));
    return sent.addBranch().then([self = kj::addRef(*self), k]() mutable -> kj::Promise<void> {
      self->Report();
      KJ_IF_MAYBE(e, self->commit_failure) { kj::throwFatalException(kj::cp(*e)); }
      if (self->CommitDue()) {
        if (!self->committing) {
          self->StartCommit();
        } else if (self->since_commit >= self->options.commit_every + self->options.commit_slack) {
          // An interval and the slack went out while the last commit is still unanswered:
          // wait for it, so that what is not yet durable stays within two intervals and twice
          // the slack. (Due by time, or within the slack: the first chunk sent after the
          // answer starts the next commit.)
          return self->pending_commit.addBranch().then(
              [self = kj::addRef(*self), k]() mutable { return self->Chain(k); });
        }
      }
      return self->Chain(k);
    });
  }

  // Starts a commit without holding up the chains: stopping every commit interval until the
  // receiver answered would drain the pipe once per interval (a round trip plus the receiver's
  // queue: a quarter of a single stream's throughput at 50 ms). One commit at a time, and a
  // chain waits only when an interval and the slack went out before the last was answered; a
  // failure ends the chains at their next chunk. What a crash can make the sender resend stays
  // within two intervals and twice the slack.
  void StartCommit() {
    committing = true;
    pending_commit = Commit()
                         .then([this]() { committing = false; },
                               [this](kj::Exception&& e) {
                                 committing = false;
                                 commit_failure = kj::mv(e);
                               })
                         .fork();
  }
  bool committing = false;
  kj::ForkedPromise<void> pending_commit = kj::Promise<void>(kj::READY_NOW).fork();
  kj::Maybe<kj::Exception> commit_failure;

  // Runs the chains until every chunk is sent and durably accepted.
  kj::Promise<void> Round() {
    auto chains = kj::heapArrayBuilder<kj::Promise<void>>(options.streams);
    for (int k = 0; k < options.streams; ++k) chains.add(Chain(static_cast<size_t>(k)));
    return kj::joinPromises(chains.finish())
        .then([self = kj::addRef(*this)]() mutable {
          // The commit started last must answer (and queue what it refused) first.
          return self->pending_commit.addBranch();
        })
        .then([self = kj::addRef(*this)]() mutable {
          KJ_IF_MAYBE(e, self->commit_failure) { kj::throwFatalException(kj::cp(*e)); }
          return self->Commit();
        })
        .then([self = kj::addRef(*this)]() mutable -> kj::Promise<void> {
          if (self->queue.empty()) return kj::READY_NOW;
          return self->Round();  // resend what was refused
        });
  }
};

// Push, once the prelude is read: offers it on every connection, then sends.
kj::Promise<SendSummary> Offer(std::shared_ptr<const capsule::CapsuleReader> reader,
                               kj::Array<schema::Transfer::Client> peers, SendOptions options,
                               absl::StatusOr<capsule::Prelude> prelude) {
  if (!prelude.ok()) return ToException(prelude.status());
  const uint64_t prelude_bytes = prelude->header.size() + prelude->tail.size();
  if (prelude_bytes > options.max_prelude) {
    // It would fail at the receiver's message limit on every run: say so now, once.
    return ToException(absl::InvalidArgumentError(absl::StrCat(
        "capsule ", reader->manifest().IdHex(), " has ", reader->geometry().chunk_count,
        " chunks: its offer (", prelude_bytes, " bytes) exceeds the transfer limit of ",
        options.max_prelude, " bytes (about ", options.max_prelude / 32,
        " chunks); seal it with larger chunks")));
  }
  auto push = kj::refcounted<PushState>();
  push->reader = std::move(reader);
  options.streams = std::clamp(options.streams, 1, 64);
  push->options = std::move(options);
  const capsule::Geometry& g = push->reader->geometry();
  push->summary.capsule_id = push->reader->manifest().IdHex();
  push->summary.chunks_total = g.chunk_count;
  push->queued.assign(g.chunk_count, false);
  push->put_bytes.assign(peers.size(), 0);
  push->meter_base.assign(peers.size(), std::nullopt);
  for (uint64_t i = 0; i < g.chunk_count; ++i) push->progress.total_bytes += g.CipherSize(i);

  // Offer on every connection: each gets an Upload into the same incoming capsule. The first
  // answer's list of missing chunks is the work to do.
  auto offers = kj::heapArrayBuilder<kj::Promise<void>>(peers.size());
  for (size_t c = 0; c < peers.size(); ++c) {
    auto offer = peers[c].offerRequest();
    auto p = offer.initPrelude();
    p.setHeader(kj::arrayPtr(prelude->header.data(), prelude->header.size()));
    p.setTail(kj::arrayPtr(prelude->tail.data(), prelude->tail.size()));
    push->uploads.push_back(nullptr);
    offers.add(offer.send().then(
        [push = kj::addRef(*push), c](capnp::Response<schema::Transfer::OfferResults>&& r) mutable
        -> kj::Promise<void> {
          push->uploads[c] = r.getUpload();
          if (c != 0) return kj::READY_NOW;
          const capsule::Geometry& g = push->reader->geometry();
          uint64_t missing_bytes = 0;
          for (auto range : r.getMissing()) {
            if (range.getCount() > g.chunk_count ||
                range.getFirst() > g.chunk_count - range.getCount()) {
              return ToException(absl::DataLossError("the receiver named chunks out of range"));
            }
            for (uint64_t i = range.getFirst(); i < range.getFirst() + range.getCount(); ++i) {
              if (push->queued[i]) {
                // Overlapping ranges: refuse rather than do the work many times over.
                return ToException(absl::DataLossError("the receiver named a chunk twice"));
              }
              push->Enqueue(i);
              missing_bytes += g.CipherSize(i);
            }
          }
          push->summary.chunks_skipped = g.chunk_count - push->queue.size();
          push->progress.skipped_bytes = push->progress.total_bytes - missing_bytes;
          push->Report();
          return kj::READY_NOW;
        }));
  }
  return kj::joinPromises(offers.finish())
      .then([push = kj::addRef(*push)]() mutable { return push->Round(); })
      .then([push = kj::addRef(*push)]() mutable {
        return push->Upload(0).finishRequest().send().then(
            [push = kj::addRef(*push)](capnp::Response<schema::Upload::FinishResults>&&) mutable {
              push->summary.seconds =
                  std::chrono::duration<double>(Clock::now() - push->start).count();
              return push->summary;
            });
      })
      .attach(kj::mv(peers));
}

}  // namespace

kj::Promise<SendSummary> Push(std::shared_ptr<const capsule::CapsuleReader> reader,
                              schema::Transfer::Client peer, SendOptions options) {
  auto peers = kj::heapArrayBuilder<schema::Transfer::Client>(1);
  peers.add(kj::mv(peer));
  return Push(std::move(reader), peers.finish(), std::move(options));
}

kj::Promise<SendSummary> Push(std::shared_ptr<const capsule::CapsuleReader> reader,
                              kj::Array<schema::Transfer::Client> peers, SendOptions options) {
  if (peers.size() == 0) return ToException(absl::InvalidArgumentError("no connection"));
  if (reader == nullptr) return ToException(absl::InvalidArgumentError("no capsule to send"));
  // The prelude is read where the chunks are (an object store: ranged GETs off the loop). It
  // travels in a shared_ptr: a StatusOr in a kj::Promise trips GCC's maybe-uninitialized.
  using Read = std::shared_ptr<absl::StatusOr<capsule::Prelude>>;
  auto read = [reader]() -> Read {
    return std::make_shared<absl::StatusOr<capsule::Prelude>>(capsule::ReadPrelude(*reader));
  };
  kj::Promise<Read> prelude = options.read_pool == nullptr
                                  ? kj::Promise<Read>(read())
                                  : OffLoop<Read>(*options.read_pool, read);
  return prelude.then([reader = std::move(reader), peers = kj::mv(peers),
                       options = std::move(options)](Read prelude) mutable {
    return Offer(std::move(reader), kj::mv(peers), std::move(options), std::move(*prelude));
  });
}

}  // namespace bunker::transfer

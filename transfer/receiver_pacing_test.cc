// How a receiver paces a transfer (issue 9): it answers a commit only once the puts sent before
// it are written, and syncs a capsule being received every DepotOptions::sync_every bytes by
// itself, whatever its senders commit.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>

#include "capsule/capsule_test_util.h"
#include "capsule/incoming.h"
#include "capsule/store.h"
#include "gtest/gtest.h"
#include "transfer/depot.h"
#include "transfer/errors.h"
#include "transfer/pacing_test_util.h"
#include "transfer/secure_channel.h"
#include "transfer/sender.h"

namespace bunker::transfer {
namespace {

using testing::kBound;
using testing::kChunk;
using testing::Sealed;

// Holds the worker that writes one chunk until the test opens it.
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    entered_ = true;
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [this] { return open_; });
  }
  bool entered() const { return entered_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  std::atomic<bool> entered_{false};
};

// Chunk index -> the gate its write waits at.
using Gates = std::map<uint64_t, std::shared_ptr<Gate>>;

// An incoming capsule of a local folder whose writes of some chunks wait at their gates.
class HeldIncoming final : public capsule::IncomingCapsule {
 public:
  HeldIncoming(std::unique_ptr<capsule::IncomingCapsule> in, Gates gates,
               std::shared_ptr<std::atomic<bool>> full)
      : in_(std::move(in)), gates_(std::move(gates)), full_(std::move(full)) {}
  const capsule::Manifest& manifest() const override { return in_->manifest(); }
  bool SamePrelude(const capsule::Prelude& p) const override { return in_->SamePrelude(p); }
  uint64_t chunk_count() const override { return in_->chunk_count(); }
  std::vector<uint64_t> Missing() const override { return in_->Missing(); }
  uint64_t received_count() const override { return in_->received_count(); }
  bool IsReceived(uint64_t index) const override { return in_->IsReceived(index); }
  absl::Status CheckAndWrite(uint64_t index, absl::Span<const uint8_t> bytes) const override {
    auto gate = gates_.find(index);
    if (gate != gates_.end()) gate->second->Wait();
    return in_->CheckAndWrite(index, bytes);
  }
  void MarkWritten(uint64_t index) override { in_->MarkWritten(index); }
  absl::StatusOr<std::vector<uint64_t>> Sync() override {
    if (*full_) return absl::ResourceExhaustedError("the disk is full");
    return in_->Sync();
  }
  absl::StatusOr<std::string> Finish(const std::function<absl::Status()>& before) override {
    return in_->Finish(before);
  }
  absl::Status Abandon() override { return in_->Abandon(); }

 private:
  std::unique_ptr<capsule::IncomingCapsule> in_;
  Gates gates_;
  std::shared_ptr<std::atomic<bool>> full_;  // every Sync fails while set
};

class HeldStore final : public capsule::Store {
 public:
  HeldStore(std::shared_ptr<capsule::Store> s, Gates gates)
      : s_(std::move(s)), gates_(std::move(gates)) {}
  std::string Describe() const override { return s_->Describe(); }
  absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> Open(const std::string& id) override {
    return s_->Open(id);
  }
  absl::StatusOr<std::vector<std::string>> List() override { return s_->List(); }
  absl::StatusOr<std::unique_ptr<capsule::IncomingCapsule>> Begin(
      const capsule::Prelude& p, absl::Span<const crypto::PublicIdentity> t) override {
    auto in = s_->Begin(p, t);
    if (!in.ok()) return in.status();
    return std::unique_ptr<capsule::IncomingCapsule>(
        std::make_unique<HeldIncoming>(std::move(*in), gates_, full_));
  }

 private:
  std::shared_ptr<capsule::Store> s_;
  Gates gates_;

 public:
  std::shared_ptr<std::atomic<bool>> full_ = std::make_shared<std::atomic<bool>>(false);
};

// One RPC connection to a depot over a socket pair, and the Upload its offer returned.
struct Session {
  kj::TwoWayPipe pipe;
  capnp::TwoPartyServer server;
  capnp::TwoPartyClient client;
  schema::Upload::Client upload = nullptr;

  Session(kj::AsyncIoContext& io, Depot& depot, const Sealed& s)
      : pipe(io.provider->newTwoWayPipe()),
        server(depot.ServeFor(s.keys.alice.public_identity())),
        client(*pipe.ends[0]) {
    server.accept(kj::mv(pipe.ends[1]));
    upload = Offer(io, s).getUpload();
  }
  // Offers the capsule (again): its upload and the chunks the receiver lacks durably.
  capnp::Response<schema::Transfer::OfferResults> Offer(kj::AsyncIoContext& io, const Sealed& s) {
    auto p = capsule::ReadPrelude(*s.reader);
    EXPECT_TRUE(p.ok());
    auto req = client.bootstrap().castAs<schema::Transfer>().offerRequest();
    req.initPrelude().setHeader(kj::arrayPtr(p->header.data(), p->header.size()));
    req.getPrelude().setTail(kj::arrayPtr(p->tail.data(), p->tail.size()));
    return req.send().wait(io.waitScope);
  }
  std::vector<uint64_t> Missing(kj::AsyncIoContext& io, const Sealed& s) {
    std::vector<uint64_t> out;
    auto r = Offer(io, s);
    for (auto range : r.getMissing()) {
      for (uint64_t i = range.getFirst(); i < range.getFirst() + range.getCount(); ++i) {
        out.push_back(i);
      }
    }
    return out;
  }
  kj::Promise<void> Put(const Sealed& s, uint64_t i) {
    auto req = upload.putRequest();
    req.setIndex(i);
    req.setData(s.Chunk(i));
    return req.send();
  }
};

std::vector<uint64_t> Durable(capnp::Response<schema::Upload::CommitResults>& r) {
  std::vector<uint64_t> out;
  for (auto range : r.getDurable()) {
    for (uint64_t i = range.getFirst(); i < range.getFirst() + range.getCount(); ++i) {
      out.push_back(i);
    }
  }
  return out;
}

struct DepotFixture {
  Sealed sealed{8};
  Gates gates;
  std::shared_ptr<std::atomic<bool>> disk_full;
  Depot depot;

  explicit DepotFixture(std::vector<uint64_t> held, uint64_t sync_every_chunks = 0)
      : depot(Options(held, sync_every_chunks)) {}
  DepotOptions Options(const std::vector<uint64_t>& held, uint64_t sync_every_chunks) {
    for (uint64_t i : held) gates[i] = std::make_shared<Gate>();
    DepotOptions o;
    o.sync_every = sync_every_chunks * sealed.reader->geometry().CipherSize(0);
    auto store = std::make_shared<HeldStore>(
        capsule::MakeLocalStore(capsule::testing::MakeTempDir() + "/store"), gates);
    disk_full = store->full_;
    o.store = store;
    o.trusted = {sealed.keys.issuer.public_identity()};
    o.now = [] { return int64_t{1800000000}; };
    return o;
  }
  // Never leaves a worker waiting: the depot joins them.
  ~DepotFixture() {
    for (auto& [i, gate] : gates) gate->Open();
  }
  // Turns `io`'s loop until the write of chunk `i` waits at its gate.
  void AwaitHeld(kj::AsyncIoContext& io, uint64_t i) {
    kj::Timer& timer = io.provider->getTimer();
    const kj::TimePoint deadline = timer.now() + kBound;
    while (!gates[i]->entered() && timer.now() < deadline) {
      timer.afterDelay(kj::MILLISECONDS).wait(io.waitScope);
    }
    ASSERT_TRUE(gates[i]->entered()) << "the write of chunk " << i << " never started";
  }
};

TEST(CommitTest, ACommitWaitsForThePutsSentBeforeIt) {
  DepotFixture f({1});
  auto io = kj::setupAsyncIo();
  Session s(io, f.depot, f.sealed);
  s.Put(f.sealed, 0).wait(io.waitScope);
  auto held = s.Put(f.sealed, 1).eagerlyEvaluate(nullptr);
  bool answered = false;
  auto commit = s.upload.commitRequest()
                    .send()
                    .then([&answered](capnp::Response<schema::Upload::CommitResults>&& r) {
                      answered = true;
                      return Durable(r);
                    })
                    .eagerlyEvaluate(nullptr);
  // The worker holding chunk 1 has it; the commit must not be answered before it is written.
  f.AwaitHeld(io, 1);
  kj::Timer& timer = io.provider->getTimer();
  for (int turn = 0; turn < 50; ++turn) timer.afterDelay(kj::MILLISECONDS).wait(io.waitScope);
  EXPECT_FALSE(answered) << "answered before a put sent before it was written";
  f.gates[1]->Open();
  EXPECT_EQ(timer.timeoutAfter(kBound, kj::mv(commit)).wait(io.waitScope),
            (std::vector<uint64_t>{0, 1}));
  held.wait(io.waitScope);
}

// Durability does not wait for a sender's commit: a sender killed between commits, or one that
// commits seldom, leaves at most sync_every bytes (and what was in flight) to send again.
TEST(ReceiverSyncTest, ACapsuleBeingReceivedIsSyncedEverySyncEveryBytesWithoutACommit) {
  DepotFixture f({}, /*sync_every_chunks=*/3);
  auto io = kj::setupAsyncIo();
  Session s(io, f.depot, f.sealed);
  Session other(io, f.depot, f.sealed);
  for (uint64_t i = 0; i < 7; ++i) s.Put(f.sealed, i).wait(io.waitScope);
  // Syncs start after chunks 2 and 5 were written (unless one still runs), on a worker.
  kj::Timer& timer = io.provider->getTimer();
  const kj::TimePoint deadline = timer.now() + kBound;
  std::vector<uint64_t> missing = other.Missing(io, f.sealed);
  while (!missing.empty() && missing.front() < 3 && timer.now() < deadline) {
    timer.afterDelay(kj::MILLISECONDS).wait(io.waitScope);
    missing = other.Missing(io, f.sealed);
  }
  ASSERT_FALSE(missing.empty());
  EXPECT_GE(missing.front(), 3u) << "chunks 0-2 are durable without a commit";
  EXPECT_EQ(missing.back(), 7u) << "chunk 7 was never sent";
}

// What the receiver's own sync could not make durable is never acknowledged: the next commit
// fails with the reason, and the chunks stay missing for a resend.
TEST(ReceiverSyncTest, AFailedSyncOfTheReceiversOwnFailsTheNextCommit) {
  DepotFixture f({}, /*sync_every_chunks=*/2);
  *f.disk_full = true;
  auto io = kj::setupAsyncIo();
  Session s(io, f.depot, f.sealed);
  for (uint64_t i = 0; i < 4; ++i) s.Put(f.sealed, i).wait(io.waitScope);
  kj::Timer& timer = io.provider->getTimer();
  for (int turn = 0; turn < 50; ++turn) timer.afterDelay(kj::MILLISECONDS).wait(io.waitScope);
  *f.disk_full = false;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                     [&]() { s.upload.commitRequest().send().wait(io.waitScope); })) {
    // As the peer hears it (transfer/errors.h PeerSafe: no local details).
    EXPECT_EQ(FromException(*e).code(), absl::StatusCode::kResourceExhausted)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "the commit after a failed sync succeeded";
  }
  Session other(io, f.depot, f.sealed);
  const std::vector<uint64_t> missing = other.Missing(io, f.sealed);
  ASSERT_FALSE(missing.empty());
  EXPECT_EQ(missing.front(), 0u) << "nothing the failed syncs took is durable";
}

TEST(ReceiverSyncTest, WithSyncEveryZeroOnlyACommitMakesChunksDurable) {
  DepotFixture f({}, /*sync_every_chunks=*/0);
  auto io = kj::setupAsyncIo();
  Session s(io, f.depot, f.sealed);
  Session other(io, f.depot, f.sealed);
  for (uint64_t i = 0; i < 7; ++i) s.Put(f.sealed, i).wait(io.waitScope);
  kj::Timer& timer = io.provider->getTimer();
  for (int turn = 0; turn < 50; ++turn) timer.afterDelay(kj::MILLISECONDS).wait(io.waitScope);
  EXPECT_EQ(other.Missing(io, f.sealed).size(), 8u);
  s.upload.commitRequest().send().wait(io.waitScope);
  EXPECT_EQ(other.Missing(io, f.sealed), std::vector<uint64_t>{7});
}

}  // namespace
}  // namespace bunker::transfer

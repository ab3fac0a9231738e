// How both ends of a transfer pace it (issue 9). The receiver syncs a capsule being received
// every DepotOptions::sync_every bytes by itself. A sender paces itself against receivers that
// hold what the test says:
// commits (a receiver answers one only once the puts sent before it are written; a sender keeps
// putting while one is answered, up to an interval and its slack, then waits: waiting at the
// next interval drained a long link's pipe once per interval), and its own memory (a metered
// connection gets its next put built only once all but max_unwritten bytes before it left).
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
#include "transfer/secure_channel.h"
#include "transfer/sender.h"

namespace bunker::transfer {
namespace {

using capsule::testing::Keys;

constexpr uint32_t kChunk = 4096;
constexpr kj::Duration kBound = 20 * kj::SECONDS;

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

struct Sealed {
  Keys keys;
  std::vector<uint8_t> capsule;
  std::shared_ptr<const capsule::CapsuleReader> reader;

  explicit Sealed(size_t chunks) {
    capsule = capsule::testing::SealRaw(keys, capsule::testing::PatternBytes(chunks * kChunk, 7),
                                        kChunk, crypto::Suite::kAes256Gcm, 2, "");
    auto r = capsule::CapsuleReader::OpenUntrusted(capsule::MemoryFile(capsule));
    EXPECT_TRUE(r.ok()) << r.status();
    reader = std::move(*r);
  }
  kj::ArrayPtr<const kj::byte> Chunk(uint64_t i) const {
    const capsule::Geometry& g = reader->geometry();
    return kj::arrayPtr(capsule.data() + g.ChunkOffset(i), g.CipherSize(i));
  }
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

// A receiver that takes every put at once and holds every commit until the test answers it
// (or answers them at once, with `hold_commits` false).
class HoldingUpload final : public schema::Upload::Server {
 public:
  HoldingUpload(size_t& puts, bool hold_commits) : puts_(puts), hold_commits_(hold_commits) {}
  kj::Promise<void> put(PutContext) override {
    ++puts_;
    return kj::READY_NOW;
  }
  kj::Promise<void> commit(CommitContext) override {
    if (!hold_commits_) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    held_.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  kj::Promise<void> finish(FinishContext) override { return kj::READY_NOW; }
  size_t held() const { return held_.size(); }
  void AnswerAll() {
    for (auto& f : held_) f->fulfill();
    held_.clear();
  }

 private:
  size_t& puts_;
  bool hold_commits_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> held_;
};

class HoldingTransfer final : public schema::Transfer::Server {
 public:
  HoldingTransfer(uint64_t chunks, size_t& puts, HoldingUpload*& upload, bool hold_commits)
      : chunks_(chunks), puts_(puts), upload_(upload), hold_commits_(hold_commits) {}
  kj::Promise<void> offer(OfferContext context) override {
    auto server = kj::heap<HoldingUpload>(puts_, hold_commits_);
    upload_ = server.get();
    auto results = context.getResults();
    results.setUpload(kj::mv(server));
    auto missing = results.initMissing(1);
    missing[0].setFirst(0);
    missing[0].setCount(chunks_);
    return kj::READY_NOW;
  }

 private:
  uint64_t chunks_;
  size_t& puts_;
  HoldingUpload*& upload_;
  bool hold_commits_;
};

// Turns `io`'s loop until `puts` stops growing (no new put for 50 turns) or kBound passes.
size_t SettledPuts(kj::AsyncIoContext& io, const size_t& puts) {
  kj::Timer& timer = io.provider->getTimer();
  const kj::TimePoint deadline = timer.now() + kBound;
  size_t seen = puts;
  for (int quiet = 0; quiet < 50 && timer.now() < deadline; ++quiet) {
    timer.afterDelay(kj::MILLISECONDS).wait(io.waitScope);
    if (puts != seen) {
      seen = puts;
      quiet = 0;
    }
  }
  return puts;
}

// A HoldingTransfer of `chunks` chunks served over a socket pair, and the client's end.
struct HoldingReceiver {
  size_t puts = 0;
  HoldingUpload* upload = nullptr;
  kj::TwoWayPipe pipe;
  capnp::TwoPartyServer server;
  capnp::TwoPartyClient client;

  HoldingReceiver(kj::AsyncIoContext& io, uint64_t chunks, bool hold_commits)
      : pipe(io.provider->newTwoWayPipe()),
        server(kj::heap<HoldingTransfer>(chunks, puts, upload, hold_commits)),
        client(*pipe.ends[0]) {
    server.accept(kj::mv(pipe.ends[1]));
  }
  schema::Transfer::Client transfer() { return client.bootstrap().castAs<schema::Transfer>(); }
};

// Puts the sender makes while its first commit is unanswered, with a commit every 4 chunks and
// `slack_chunks` chunks of slack; then answers every commit until the push is done.
size_t PutsWhileTheFirstCommitIsHeld(uint64_t slack_chunks) {
  Sealed sealed(64);
  auto io = kj::setupAsyncIo();
  HoldingReceiver r(io, 64, /*hold_commits=*/true);
  const size_t& puts = r.puts;
  HoldingUpload*& upload = r.upload;
  const uint64_t chunk = sealed.reader->geometry().CipherSize(0);
  SendOptions o;
  o.commit_every = 4 * chunk;
  o.commit_slack = slack_chunks * chunk;
  o.commit_seconds = 3600;
  auto push = Push(sealed.reader, r.transfer(), o).eagerlyEvaluate(nullptr);
  kj::Timer& timer = io.provider->getTimer();
  const kj::TimePoint deadline = timer.now() + kBound;
  while ((upload == nullptr || upload->held() == 0) && timer.now() < deadline) {
    timer.afterDelay(kj::MILLISECONDS).wait(io.waitScope);
  }
  EXPECT_TRUE(upload != nullptr && upload->held() > 0) << "no commit came";
  // Let the sender run until it stops on its own.
  const size_t held_at = SettledPuts(io, puts);
  while (!push.poll(io.waitScope) && timer.now() < deadline) {
    if (upload != nullptr) upload->AnswerAll();
    timer.afterDelay(kj::MILLISECONDS).wait(io.waitScope);
  }
  SendSummary summary = push.wait(io.waitScope);
  EXPECT_EQ(summary.chunks_sent, 64u);
  return held_at;
}

TEST(CommitTest, ASenderPutsAnIntervalAndTheSlackBeyondAnUnansweredCommitThenWaits) {
  // The first commit starts after 4 chunks; the sender then puts until 4 + 8 chunks went out
  // since it started, and waits: 16 puts.
  EXPECT_EQ(PutsWhileTheFirstCommitIsHeld(8), 16u);
  // Without slack, one interval: 8 puts.
  EXPECT_EQ(PutsWhileTheFirstCommitIsHeld(0), 8u);
}

// The meter stands for the connection's stream: the test says what it wrote.
TEST(SenderMemoryTest, APutIsBuiltOnlyOnceAllButMaxUnwrittenBytesBeforeItWereWritten) {
  Sealed sealed(16);
  auto io = kj::setupAsyncIo();
  HoldingReceiver r(io, 16, /*hold_commits=*/false);
  const size_t& puts = r.puts;
  const uint64_t chunk = sealed.reader->geometry().CipherSize(0);
  auto meter = kj::refcounted<WriteMeter>();
  meter->Wrote(12345);  // the offer, before any put
  SendOptions o;
  o.meters = {meter.get()};
  o.max_unwritten = 2 * chunk;
  auto push = Push(sealed.reader, r.transfer(), o).eagerlyEvaluate(nullptr);
  // Puts 0 and 1 may wait unwritten while put 2 is built; put 3 waits for put 0 to leave.
  EXPECT_EQ(SettledPuts(io, puts), 3u);
  meter->Wrote(chunk - 1);
  EXPECT_EQ(SettledPuts(io, puts), 3u) << "put 0 has not wholly left";
  meter->Wrote(1);
  EXPECT_EQ(SettledPuts(io, puts), 4u);
  meter->Wrote(3 * chunk);
  EXPECT_EQ(SettledPuts(io, puts), 7u);
  // A connection whose writes failed breaks the wait, and the push with it.
  meter->Fail(kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                            kj::heapString("the connection broke")));
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { push.wait(io.waitScope); })) {
    EXPECT_NE(std::string(e->getDescription().cStr()).find("the connection broke"),
              std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "the push went on past a broken connection";
  }
  EXPECT_EQ(puts, 7u);
}

TEST(SenderMemoryTest, UnmeteredConnectionsAreNotHeldBack) {
  Sealed sealed(16);
  auto io = kj::setupAsyncIo();
  HoldingReceiver r(io, 16, /*hold_commits=*/false);
  SendOptions o;
  o.max_unwritten = 0;
  SendSummary s = io.provider->getTimer()
                      .timeoutAfter(kBound, Push(sealed.reader, r.transfer(), o))
                      .wait(io.waitScope);
  EXPECT_EQ(s.chunks_sent, 16u);
  EXPECT_EQ(r.puts, 16u);
}

// A daemon serving a fetch sends through the connection it serves on: ServeFor with that
// connection's meter paces the push (the daemon's own memory, per fetch, stays about two chunks).
TEST(SenderMemoryTest, AFetchIsSentAtTheServingConnectionsPace) {
  Sealed sealed(300);  // 300 chunks of 4,112 bytes: more than max_unwritten (1 MiB)
  auto io = kj::setupAsyncIo();
  DepotOptions o;
  o.store = capsule::MakeLocalStore(capsule::testing::MakeTempDir() + "/store");
  o.trusted = {sealed.keys.issuer.public_identity()};
  o.now = [] { return int64_t{1800000000}; };
  Depot source(o);
  {
    auto pipe = io.provider->newTwoWayPipe();
    capnp::TwoPartyServer server(source.ServeFor(sealed.keys.alice.public_identity()));
    server.accept(kj::mv(pipe.ends[1]));
    capnp::TwoPartyClient client(*pipe.ends[0]);
    Push(sealed.reader, client.bootstrap().castAs<schema::Transfer>(), SendOptions())
        .wait(io.waitScope);
  }
  auto meter = kj::refcounted<WriteMeter>();
  auto pipe = io.provider->newTwoWayPipe();
  capnp::TwoPartyServer server(source.ServeFor(sealed.keys.alice.public_identity(), meter.get()));
  server.accept(kj::mv(pipe.ends[1]));
  capnp::TwoPartyClient client(*pipe.ends[0]);
  size_t puts = 0;
  HoldingUpload* upload = nullptr;
  auto req = client.bootstrap().castAs<schema::Transfer>().fetchRequest();
  req.setCapsuleId(sealed.reader->manifest().IdHex());
  req.setReceiver(kj::heap<HoldingTransfer>(300, puts, upload, false));
  auto fetch = req.send().eagerlyEvaluate(nullptr);
  // Nothing counted as written: puts 0 to 255 (1 MiB / 4,112 bytes) go, the next one waits.
  EXPECT_EQ(SettledPuts(io, puts), 256u);
  meter->Wrote(uint64_t{1} << 30);
  auto r = io.provider->getTimer().timeoutAfter(kBound, kj::mv(fetch)).wait(io.waitScope);
  EXPECT_EQ(r.getSummary().getChunksSent(), 300u);
  EXPECT_EQ(puts, 300u);
}

}  // namespace
}  // namespace bunker::transfer

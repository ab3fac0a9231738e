// How a sender paces itself (issue 9), against receivers that hold what the test says: its
// commits (it keeps putting while one is answered, up to an interval and its slack, then waits:
// waiting at the next interval drained a long link's pipe once per interval), and its own
// memory (a metered connection gets its next put built only once all but max_unwritten bytes
// before it left).
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

// A pinned peer that misbehaves on the wire, against the real RpcServer over loopback TLS: it
// never reads the answers it asked for, or it sends bytes that are not Cap'n Proto after its
// handshake. Each such session must end or stall alone, holding bounded memory, while other
// peers are served.
#include <capnp/rpc-twoparty.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "crypto/keys.h"
#include "spec/transfer.capnp.h"
#include "transfer/secure_channel.h"

namespace bunker::transfer {
namespace {

// Upper bound for anything a test waits on; a healthy run takes milliseconds.
constexpr kj::Duration kBound = 10 * kj::SECONDS;

// Echoes pings and counts them.
class EchoTransfer final : public schema::Transfer::Server {
 public:
  explicit EchoTransfer(uint64_t& calls) : calls_(calls) {}
  kj::Promise<void> ping(PingContext context) override {
    ++calls_;
    context.getResults().setNonce(context.getParams().getNonce());
    return kj::READY_NOW;
  }

 private:
  uint64_t& calls_;
};

// A stream that passes writes through and never delivers a byte: a peer that stopped reading.
class DeafStream final : public kj::AsyncIoStream {
 public:
  explicit DeafStream(kj::AsyncIoStream& inner) : inner_(inner) {}
  kj::Promise<size_t> tryRead(void*, size_t, size_t) override { return kj::NEVER_DONE; }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    return inner_.write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return inner_.write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_.whenWriteDisconnected(); }
  void shutdownWrite() override { inner_.shutdownWrite(); }

 private:
  kj::AsyncIoStream& inner_;
};

class HostilePeerTest : public ::testing::Test {
 protected:
  HostilePeerTest() : io_(kj::setupAsyncIo()), ws_(io_.waitScope), timer_(io_.provider->getTimer()) {
    auto channel = SecureChannel::Create(
        alpha_, {beta_.public_identity(), gamma_.public_identity()}, timer_, absl::Now());
    EXPECT_TRUE(channel.ok()) << channel.status();
    server_ = kj::mv(*channel);
    client_ = ClientChannel(beta_);
  }

  // Starts serving on a loopback port.
  void Serve(RpcServer::Limits limits = {}) {
    rpc_ = kj::heap<RpcServer>(
        *server_,
        [this](const crypto::PublicIdentity&, WriteMeter& meter) {
          meters_.push_back(kj::addRef(meter));
          return capnp::Capability::Client(kj::heap<EchoTransfer>(calls_));
        },
        limits);
    listener_ = io_.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(ws_)->listen();
    listening_ = rpc_->Listen(*listener_).eagerlyEvaluate([](kj::Exception&& e) {
      ADD_FAILURE() << "listen loop ended: " << e.getDescription().cStr();
    });
  }

  kj::Own<SecureChannel> ClientChannel(const crypto::Identity& self) {
    auto client = SecureChannel::Create(self, {alpha_.public_identity()}, timer_, absl::Now());
    EXPECT_TRUE(client.ok()) << client.status();
    return kj::mv(*client);
  }
  ~HostilePeerTest() noexcept override {}

  SecureConnection Connect(SecureChannel* as = nullptr) {
    auto address =
        io_.provider->getNetwork().parseAddress("127.0.0.1", listener_->getPort()).wait(ws_);
    auto raw = timer_.timeoutAfter(kBound, address->connectAuthenticated()).wait(ws_);
    SecureChannel& channel = as == nullptr ? *client_ : *as;
    return timer_.timeoutAfter(kBound, channel.Connect(kj::mv(raw), alpha_.public_identity()))
        .wait(ws_);
  }

  // A well-behaved peer's ping on a connection of its own.
  void PingOk(SecureChannel* as = nullptr) {
    SecureConnection c = Connect(as);
    capnp::TwoPartyClient client(*c.stream);
    auto request = client.bootstrap().castAs<schema::Transfer>().pingRequest();
    request.setNonce(kj::heapArray<kj::byte>(8));
    auto response = timer_.timeoutAfter(kBound, request.send()).wait(ws_);
    EXPECT_EQ(response.getNonce().size(), 8u);
  }

  // Runs the event loop until `value()` stays the same for 300 ms in a row (or kBound passes).
  void Settle(const std::function<uint64_t()>& value) {
    const kj::TimePoint deadline = timer_.now() + kBound;
    uint64_t last = value();
    kj::TimePoint since = timer_.now();
    while (timer_.now() < deadline) {
      timer_.afterDelay(10 * kj::MILLISECONDS).wait(ws_);
      const uint64_t now = value();
      if (now != last) {
        last = now;
        since = timer_.now();
      } else if (timer_.now() - since >= 300 * kj::MILLISECONDS) {
        return;
      }
    }
  }

  // Reads `stream` until the peer closes it (true) or kBound passes (false).
  bool ReadsUntilClosed(kj::AsyncIoStream& stream) {
    bool closed = false;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                  kj::byte buffer[4096];
                  while (timer_.timeoutAfter(kBound, stream.tryRead(buffer, 1, sizeof(buffer)))
                             .wait(ws_) != 0) {
                  }
                  closed = true;
                })) {
      closed = !kj::StringPtr(e->getDescription()).startsWith("operation timed out");
    }
    return closed;
  }

  kj::AsyncIoContext io_;
  kj::WaitScope& ws_;
  kj::Timer& timer_;
  crypto::Identity alpha_ = crypto::Identity::Generate();  // the server
  crypto::Identity beta_ = crypto::Identity::Generate();   // a pinned, hostile peer
  crypto::Identity gamma_ = crypto::Identity::Generate();  // a pinned, well-behaved peer
  kj::Own<SecureChannel> server_, client_;
  kj::Own<RpcServer> rpc_;
  kj::Own<kj::ConnectionReceiver> listener_;
  kj::Promise<void> listening_ = nullptr;
  uint64_t calls_ = 0;
  std::vector<kj::Own<WriteMeter>> meters_;  // what each session wrote
};

// Attack: pipeline calls whose answers are as large as the calls (ping echoes its nonce) and
// never read a byte. Before: the server read every call and queued every answer in its own
// memory (all 48 MiB here; a peer could go on until the daemon ran out). Now a session is not
// read while an answer of its own waits to be written, so what it holds stays within the
// socket buffers plus about one answer.
TEST_F(HostilePeerTest, APeerThatNeverReadsCannotMakeTheServerQueueAnswers) {
  constexpr size_t kNonce = 256u << 10;
  constexpr int kCalls = 192;  // 48 MiB of answers
  Serve();
  SecureConnection c = Connect();
  DeafStream deaf(*c.stream);
  capnp::TwoPartyClient client(deaf);
  auto transfer = client.bootstrap().castAs<schema::Transfer>();
  std::vector<kj::Promise<void>> pending;
  for (int k = 0; k < kCalls; ++k) {
    auto request = transfer.pingRequest();
    request.initNonce(kNonce);
    pending.push_back(request.send().ignoreResult().eagerlyEvaluate([](kj::Exception&&) {}));
  }
  Settle([&] { return meters_.size(); });
  ASSERT_EQ(meters_.size(), 1u);
  WriteMeter& written = *meters_[0];
  Settle([&] { return calls_ * 1000003 + written.written(); });
  const int64_t queued =
      static_cast<int64_t>(calls_ * kNonce) - static_cast<int64_t>(written.written());
  RecordProperty("callsAnswered", static_cast<int>(calls_));
  RecordProperty("answerBytesQueued", static_cast<int>(queued));
  EXPECT_LT(calls_, static_cast<uint64_t>(kCalls)) << "the server read every call";
  EXPECT_LE(queued, int64_t{4} * static_cast<int64_t>(kNonce))
      << calls_ << " calls answered, " << written.written() << " bytes written";
  // Others are served meanwhile.
  PingOk();
}

// Attack: after a valid handshake, bytes that are not Cap'n Proto (here a segment table
// announcing a 2 GiB message, then noise). The session ends, nothing is allocated for the
// claimed size, and the server goes on serving.
TEST_F(HostilePeerTest, GarbageAfterTheHandshakeEndsOnlyThatSession) {
  Serve();
  {
    SecureConnection c = Connect();
    const kj::byte huge[8] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f};
    timer_.timeoutAfter(kBound, c.stream->write(huge, sizeof(huge))).wait(ws_);
    EXPECT_TRUE(ReadsUntilClosed(*c.stream)) << "a 2 GiB message was not refused";
  }
  for (const kj::byte count : {0xff, 0x00}) {
    // A count that wraps to no segment at all (Cap'n Proto 0.9 mishandles it), then one of
    // 512 or more segments: both end the session before Cap'n Proto reads them.
    SecureConnection c = Connect();
    const kj::byte table[8] = {0xff, 0xff, 0xff, count, 1, 0, 0, 0};
    timer_.timeoutAfter(kBound, c.stream->write(table, sizeof(table))).wait(ws_);
    EXPECT_TRUE(ReadsUntilClosed(*c.stream)) << "segment count " << int{count};
  }
  {
    SecureConnection c = Connect();
    std::vector<kj::byte> noise(4096);
    for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<kj::byte>(i * 131 + 7);
    timer_.timeoutAfter(kBound, c.stream->write(noise.data(), noise.size())).wait(ws_);
    EXPECT_TRUE(ReadsUntilClosed(*c.stream)) << "noise was not refused";
  }
  EXPECT_EQ(calls_, 0u);
  PingOk();
  EXPECT_EQ(calls_, 1u);
}

// Attack: a pinned peer opens sessions and holds them. Before: it could take every session
// (256) and keep all other peers out until it let go. Now one peer has at most
// Limits::sessions_per_peer of them; its next is closed after the handshake, and another
// peer still gets in.
TEST_F(HostilePeerTest, OnePeerCannotTakeEverySession) {
  RpcServer::Limits limits;
  limits.sessions = 4;
  limits.sessions_per_peer = 3;
  Serve(limits);
  std::vector<SecureConnection> held;
  for (int k = 0; k < 3; ++k) held.push_back(Connect());
  Settle([&] { return rpc_->sessions(); });
  ASSERT_EQ(rpc_->sessions(), 3u);
  SecureConnection over = Connect();
  EXPECT_TRUE(ReadsUntilClosed(*over.stream)) << "a 4th session of one peer was kept";
  EXPECT_THAT(rpc_->last_refusal(), ::testing::HasSubstr("too many sessions of peer"));
  kj::Own<SecureChannel> gamma = ClientChannel(gamma_);
  PingOk(gamma.get());
}

// Attack: a pinned peer starts messages it never finishes: on each of four sessions, a segment
// table announcing 3 MiB, then all of the body but its last byte. Before: every session held
// its half-sent message (up to Cap'n Proto's 64 MiB each; 256 sessions, 16 GiB). Now a body is
// read only once its size was taken from the peer's share and then the daemon's budget: the
// peer holds at most its share, its other bodies are not read, another peer is served, and
// all of it comes back when the sessions go.
TEST_F(HostilePeerTest, HalfSentMessagesHoldNoMoreThanThePeersShare) {
  RpcServer::Limits limits;
  limits.message_memory = 8u << 20;
  limits.message_memory_per_peer = 4u << 20;
  Serve(limits);
  constexpr uint32_t kWords = (3u << 20) / 8;
  const kj::byte table[8] = {0, 0, 0, 0, kWords & 0xff, (kWords >> 8) & 0xff,
                             (kWords >> 16) & 0xff, kWords >> 24};
  const std::vector<kj::byte> body(size_t{kWords} * 8 - 1, 0x11);
  std::vector<SecureConnection> held;
  std::vector<kj::Promise<void>> writes;
  for (int k = 0; k < 4; ++k) {
    held.push_back(Connect());
    kj::AsyncIoStream& stream = *held.back().stream;
    writes.push_back(stream.write(table, sizeof(table))
                         .then([&stream, &body]() { return stream.write(body.data(), body.size()); })
                         .eagerlyEvaluate([](kj::Exception&&) {}));
  }
  Settle([&] { return rpc_->message_memory_held(); });
  EXPECT_EQ(rpc_->message_memory_held(), uint64_t{kWords} * 8) << "one body is read, not four";
  EXPECT_LE(rpc_->message_memory_peak(), limits.message_memory_per_peer);
  kj::Own<SecureChannel> gamma = ClientChannel(gamma_);
  PingOk(gamma.get());
  EXPECT_EQ(calls_, 1u);
  writes.clear();
  held.clear();
  Settle([&] { return rpc_->message_memory_held() + rpc_->sessions(); });
  EXPECT_EQ(rpc_->message_memory_held(), 0u);
  EXPECT_LE(rpc_->message_memory_peak(), limits.message_memory_per_peer);
  PingOk();
  EXPECT_EQ(calls_, 2u);
}

// Messages of every size and segment count still arrive whole through the budgets, also when
// they are larger than the budget (read when nothing else holds it) and come back to back.
TEST_F(HostilePeerTest, MessagesOfAnySizePassTheMessageBudget) {
  RpcServer::Limits limits;
  limits.message_memory = 1u << 20;
  limits.message_memory_per_peer = 256u << 10;
  Serve(limits);
  SecureConnection c = Connect();
  capnp::TwoPartyClient client(*c.stream);
  auto transfer = client.bootstrap().castAs<schema::Transfer>();
  kj::Vector<kj::Promise<void>> answers;
  for (size_t size : {size_t{0}, size_t{1}, size_t{7}, size_t{4096}, size_t{300} << 10,
                      size_t{3} << 20, size_t{100}}) {
    auto request = transfer.pingRequest();
    std::vector<kj::byte> nonce(size);
    for (size_t i = 0; i < size; ++i) nonce[i] = static_cast<kj::byte>(i * 7 + size);
    request.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
    answers.add(request.send().then([nonce](auto response) {
      auto got = response.getNonce();
      EXPECT_EQ(std::vector<kj::byte>(got.begin(), got.end()), nonce);
    }));
  }
  timer_.timeoutAfter(kBound, kj::joinPromises(answers.releaseAsArray())).wait(ws_);
  EXPECT_EQ(calls_, 7u);
  Settle([&] { return rpc_->message_memory_held(); });
  EXPECT_EQ(rpc_->message_memory_held(), 0u);
  // The stream kept in step with the messages: the most ever leased is the largest body (the
  // 3 MiB nonce and a few words), not a size read out of some message's data. (Before a fix,
  // a table of several segments put it out of step.)
  EXPECT_GE(rpc_->message_memory_peak(), uint64_t{3} << 20);
  EXPECT_LT(rpc_->message_memory_peak(), (uint64_t{3} << 20) + 4096);
}

}  // namespace
}  // namespace bunker::transfer

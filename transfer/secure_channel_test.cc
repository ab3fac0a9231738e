#include "transfer/secure_channel.h"

#include <capnp/rpc-twoparty.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <sys/socket.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "crypto/keys.h"
#include "spec/transfer.capnp.h"

namespace bunker::transfer {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Upper bound for anything a test waits on; a healthy run takes milliseconds.
constexpr kj::Duration kBound = 10 * kj::SECONDS;

// Echoes pings and counts them.
class RecordingTransfer final : public schema::Transfer::Server {
 public:
  explicit RecordingTransfer(int& calls) : calls_(calls) {}

  kj::Promise<void> ping(PingContext context) override {
    ++calls_;
    context.getResults().setNonce(context.getParams().getNonce());
    return kj::READY_NOW;
  }

 private:
  int& calls_;
};

// A listening site: its channel, RPC server and the loopback port it accepts on.
struct Site {
  kj::Own<SecureChannel> channel;
  kj::Own<RpcServer> rpc;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Promise<void> listening = nullptr;
  int calls = 0;
  std::vector<crypto::PublicIdentity> callers;  // peers the bootstrap factory was asked for
};

class SecureChannelTest : public ::testing::Test {
 protected:
  SecureChannelTest()
      : io_(kj::setupAsyncIo()), ws_(io_.waitScope), timer_(io_.provider->getTimer()) {}
  // kj destructors are noexcept(false); gtest's is not.
  ~SecureChannelTest() noexcept override {}

  kj::Own<SecureChannel> Channel(const crypto::Identity& self,
                                 std::vector<crypto::PublicIdentity> peers,
                                 ChannelOptions options = {}) {
    absl::StatusOr<kj::Own<SecureChannel>> channel =
        SecureChannel::Create(self, peers, timer_, absl::Now(), options);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return kj::mv(*channel);
  }

  kj::Own<Site> Serve(const crypto::Identity& self, std::vector<crypto::PublicIdentity> peers,
                      ChannelOptions options = {}) {
    auto site = kj::heap<Site>();
    site->channel = Channel(self, std::move(peers), options);
    Site* s = site.get();
    site->rpc = kj::heap<RpcServer>(*site->channel, [s](const crypto::PublicIdentity& peer,
                                                         WriteMeter&) {
      s->callers.push_back(peer);
      return capnp::Capability::Client(kj::heap<RecordingTransfer>(s->calls));
    });
    site->listener = io_.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(ws_)->listen();
    site->listening = site->rpc->Listen(*site->listener).eagerlyEvaluate([](kj::Exception&& e) {
      ADD_FAILURE() << "listen loop ended: " << e.getDescription().cStr();
    });
    return site;
  }

  kj::AuthenticatedStream RawConnect(Site& site) {
    auto address = io_.provider->getNetwork()
                       .parseAddress("127.0.0.1", site.listener->getPort())
                       .wait(ws_);
    return timer_.timeoutAfter(kBound, address->connectAuthenticated()).wait(ws_);
  }

  // Connects through `channel` to `site` expecting `server`, sends one ping and returns the
  // echoed nonce, or the exception that stopped it.
  kj::Promise<std::string> PingPromise(SecureChannel& channel, Site& site,
                                       const crypto::PublicIdentity& server) {
    return channel.Connect(RawConnect(site), server)
        .then([](SecureConnection connection) {
          auto client = kj::heap<capnp::TwoPartyClient>(*connection.stream);
          auto request = client->bootstrap().castAs<schema::Transfer>().pingRequest();
          static constexpr kj::byte kNonce[] = {'n', 'o', 'n', 'c', 'e', 0, 1, 2};
          request.setNonce(kj::arrayPtr(kNonce, sizeof(kNonce)));
          return request.send()
              .then([](capnp::Response<schema::Transfer::PingResults> response) {
                auto nonce = response.getNonce();
                return std::string(nonce.asChars().begin(), nonce.size());
              })
              .attach(kj::mv(client), kj::mv(connection.stream));
        });
  }

  std::string PingOk(SecureChannel& channel, Site& site,
                     const crypto::PublicIdentity& server) {
    return timer_.timeoutAfter(kBound, PingPromise(channel, site, server)).wait(ws_);
  }

  // The failure of a ping that must fail; an empty string (test failure) if it succeeded.
  std::string PingError(SecureChannel& channel, Site& site,
                        const crypto::PublicIdentity& server) {
    std::string error;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                  timer_.timeoutAfter(kBound, PingPromise(channel, site, server)).wait(ws_);
                })) {
      error = e->getDescription().cStr();
    } else {
      ADD_FAILURE() << "ping succeeded but should have been refused";
    }
    EXPECT_THAT(error, Not(HasSubstr("timed out"))) << "refusal must not rely on a timeout";
    return error;
  }

  // Runs the event loop until `done()` or kBound passes.
  bool WaitUntil(const std::function<bool()>& done) {
    const kj::TimePoint deadline = timer_.now() + kBound;
    while (!done()) {
      if (timer_.now() > deadline) return false;
      timer_.afterDelay(1 * kj::MILLISECONDS).wait(ws_);
    }
    return true;
  }

  // Reads `stream` until the peer closes it (true) or kBound passes (false). An error (reset)
  // counts as closed; bytes before the end (a TLS alert) are ignored.
  bool ReadsUntilClosed(kj::AsyncIoStream& stream) {
    bool closed = false;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                  kj::byte buffer[4096];
                  for (;;) {
                    size_t n = timer_.timeoutAfter(kBound, stream.tryRead(buffer, 1, sizeof(buffer)))
                                   .wait(ws_);
                    if (n == 0) break;
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

  crypto::Identity alpha_ = crypto::Identity::Generate();
  crypto::Identity beta_ = crypto::Identity::Generate();
  crypto::Identity gamma_ = crypto::Identity::Generate();
};

// (a) Two sites pinned to each other: a ping makes the round trip over TLS.
TEST_F(SecureChannelTest, MutuallyPinnedSitesPing) {
  auto server = Serve(alpha_, {beta_.public_identity()});
  auto client = Channel(beta_, {alpha_.public_identity()});
  EXPECT_EQ(PingOk(*client, *server, alpha_.public_identity()), std::string("nonce\0\1\2", 8));
  EXPECT_EQ(server->calls, 1);
  ASSERT_EQ(server->callers.size(), 1u);
  EXPECT_EQ(server->callers[0], beta_.public_identity()) << "the server knows who called";
  EXPECT_EQ(server->rpc->refused(), 0u);
  EXPECT_EQ(server->rpc->served(), 1u);
}

TEST_F(SecureChannelTest, ServerWithSeveralPeersServesEach) {
  auto server = Serve(alpha_, {gamma_.public_identity(), beta_.public_identity()});
  auto from_beta = Channel(beta_, {alpha_.public_identity()});
  auto from_gamma = Channel(gamma_, {alpha_.public_identity(), beta_.public_identity()});
  PingOk(*from_beta, *server, alpha_.public_identity());
  PingOk(*from_gamma, *server, alpha_.public_identity());
  EXPECT_EQ(server->calls, 2);
  ASSERT_EQ(server->callers.size(), 2u);
  EXPECT_EQ(server->callers[0], beta_.public_identity());
  EXPECT_EQ(server->callers[1], gamma_.public_identity());
}

// (b) The client is not in the server's peers: no RPC is served and the client gets an error.
TEST_F(SecureChannelTest, ServerRefusesUnpinnedClientBeforeAnyRpc) {
  auto server = Serve(alpha_, {gamma_.public_identity()});
  auto client = Channel(beta_, {alpha_.public_identity()});
  // The client hears the server's "unknown CA" alert (during or right after its handshake).
  EXPECT_THAT(PingError(*client, *server, alpha_.public_identity()), HasSubstr("unknown ca"));
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->refused() == 1; }));
  // Refused by OpenSSL's chain verification inside the handshake, not by a later check.
  EXPECT_THAT(server->rpc->last_refusal(), HasSubstr("certificate verify failed"));
  EXPECT_EQ(server->calls, 0);
  EXPECT_TRUE(server->callers.empty()) << "no bootstrap capability was ever made";
  EXPECT_EQ(server->rpc->served(), 0u);
}

TEST_F(SecureChannelTest, ServerWithNoPeersRefusesEveryone) {
  auto server = Serve(alpha_, {});
  auto client = Channel(beta_, {alpha_.public_identity()});
  PingError(*client, *server, alpha_.public_identity());
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->refused() == 1; }));
  EXPECT_EQ(server->calls, 0);
}

// (c) The server is not in the client's allowed set: the client refuses it.
TEST_F(SecureChannelTest, ClientRefusesServerSignedByAnotherKey) {
  // beta pins gamma, believes it dials gamma, but alpha answers.
  auto server = Serve(alpha_, {beta_.public_identity()});
  auto client = Channel(beta_, {gamma_.public_identity()});
  EXPECT_THAT(PingError(*client, *server, gamma_.public_identity()),
              HasSubstr("certificate verify failed"));
  // The client aborted inside the handshake, so the server never completed it either.
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->refused() == 1; }));
  EXPECT_EQ(server->calls, 0);
  EXPECT_EQ(server->rpc->served(), 0u);
}

TEST_F(SecureChannelTest, ClientRefusesPinnedServerAnsweringForAnotherPinnedPeer) {
  // beta pins both alpha and gamma and dials gamma; alpha (pinned, but not gamma) answers.
  auto server = Serve(alpha_, {beta_.public_identity()});
  auto client = Channel(beta_, {alpha_.public_identity(), gamma_.public_identity()});
  // alpha's certificate chains to a trusted anchor, but names alpha: the hostname check fails.
  EXPECT_THAT(PingError(*client, *server, gamma_.public_identity()),
              HasSubstr("certificate verify failed"));
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->refused() == 1; }));
  EXPECT_EQ(server->calls, 0);
}

TEST_F(SecureChannelTest, ClientWillNotDialAnUnpinnedServer) {
  auto server = Serve(alpha_, {beta_.public_identity()});
  auto client = Channel(beta_, {gamma_.public_identity()});
  EXPECT_THAT(PingError(*client, *server, alpha_.public_identity()),
              HasSubstr("server is not in peers"));
}

// (d) Bytes that are not TLS: the connection is closed and the server keeps serving.
TEST_F(SecureChannelTest, GarbageIsRefusedAndServerStaysUp) {
  auto server = Serve(alpha_, {beta_.public_identity()});
  {
    kj::AuthenticatedStream raw = RawConnect(*server);
    static constexpr char kGarbage[] = "GET / HTTP/1.0\r\n\r\n\x16\x03\x01\xff\xff garbage";
    timer_.timeoutAfter(kBound, raw.stream->write(kGarbage, sizeof(kGarbage))).wait(ws_);
    EXPECT_TRUE(ReadsUntilClosed(*raw.stream));
  }
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->refused() == 1; }));
  EXPECT_THAT(server->rpc->last_refusal(), HasSubstr("http request"));
  EXPECT_EQ(server->calls, 0);

  auto client = Channel(beta_, {alpha_.public_identity()});
  PingOk(*client, *server, alpha_.public_identity());
  EXPECT_EQ(server->calls, 1);
}

TEST_F(SecureChannelTest, ImmediateHangUpIsRefusedAndServerStaysUp) {
  auto server = Serve(alpha_, {beta_.public_identity()});
  { kj::AuthenticatedStream raw = RawConnect(*server); }
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->refused() == 1; }));
  auto client = Channel(beta_, {alpha_.public_identity()});
  PingOk(*client, *server, alpha_.public_identity());
}

// (e) A client that connects and says nothing does not hold up anyone else...
TEST_F(SecureChannelTest, StalledClientDoesNotBlockOthers) {
  // A handshake timeout no loaded machine reaches within the test (the default is 3 s).
  ChannelOptions options;
  options.handshake_timeout = 60 * kj::SECONDS;
  auto server = Serve(alpha_, {beta_.public_identity()}, options);
  kj::AuthenticatedStream staller = RawConnect(*server);
  kj::AuthenticatedStream staller2 = RawConnect(*server);
  auto client = Channel(beta_, {alpha_.public_identity()});
  PingOk(*client, *server, alpha_.public_identity());
  PingOk(*client, *server, alpha_.public_identity());
  EXPECT_EQ(server->calls, 2);
  EXPECT_EQ(server->rpc->refused(), 0u) << "the stalled handshakes are still pending";
}

// ... and is disconnected once the handshake timeout passes.
TEST_F(SecureChannelTest, StalledClientIsDroppedAfterHandshakeTimeout) {
  ChannelOptions options;
  options.handshake_timeout = 100 * kj::MILLISECONDS;
  auto server = Serve(alpha_, {beta_.public_identity()}, options);
  kj::AuthenticatedStream staller = RawConnect(*server);
  EXPECT_TRUE(ReadsUntilClosed(*staller.stream));
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->refused() == 1; }));
  EXPECT_THAT(server->rpc->last_refusal(), HasSubstr("timed out"));
}

// Regression: connections still in their handshake counted toward the one connection cap (256)
// and could hold it for 10 s, so 300 held TCP connections locked every pinned peer out. Now
// they have their own small budget, and a new connection evicts the oldest handshake.
TEST_F(SecureChannelTest, HeldUnauthenticatedConnectionsLeaveRoomForPeers) {
  auto server = Serve(alpha_, {beta_.public_identity()});  // default limits and timeout
  std::vector<kj::AuthenticatedStream> held;
  for (int i = 0; i < 300; ++i) held.push_back(RawConnect(*server));
  const RpcServer::Limits limits;
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->refused() >= 300 - limits.handshakes_per_source; }));
  EXPECT_LE(server->rpc->handshakes(), limits.handshakes_per_source);
  EXPECT_THAT(server->rpc->last_refusal(), HasSubstr("evicted"));
  auto client = Channel(beta_, {alpha_.public_identity()});
  PingOk(*client, *server, alpha_.public_identity());
  PingOk(*client, *server, alpha_.public_identity());
  EXPECT_EQ(server->calls, 2);
  EXPECT_EQ(server->rpc->served(), 2u);
}

// The oldest handshake of a source is evicted when that source's share is full, the oldest of
// all when the whole budget is; authenticated sessions have a budget of their own.
TEST_F(SecureChannelTest, HandshakeAndSessionBudgets) {
  auto channel = Channel(alpha_, {beta_.public_identity()});
  int calls = 0;
  RpcServer::Limits limits;
  limits.handshakes = 3;
  limits.handshakes_per_source = 2;
  limits.sessions = 1;
  RpcServer rpc(*channel, [&calls](const crypto::PublicIdentity&, WriteMeter&) {
    return capnp::Capability::Client(kj::heap<RecordingTransfer>(calls));
  }, limits);
  Site site;  // only for RawConnect and PingOk
  site.listener = io_.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(ws_)->listen();
  auto listening = rpc.Listen(*site.listener).eagerlyEvaluate(nullptr);
  kj::AuthenticatedStream first = RawConnect(site);
  kj::AuthenticatedStream second = RawConnect(site);
  ASSERT_TRUE(WaitUntil([&] { return rpc.handshakes() == 2; }));
  kj::AuthenticatedStream third = RawConnect(site);
  EXPECT_TRUE(ReadsUntilClosed(*first.stream)) << "the oldest handshake of the source is evicted";
  ASSERT_TRUE(WaitUntil([&] { return rpc.refused() == 1 && rpc.handshakes() == 2; }));
  EXPECT_THAT(rpc.last_refusal(), HasSubstr("from one address"));

  // One session at a time: a second authenticated connection is closed after its handshake.
  auto client = Channel(beta_, {alpha_.public_identity()});
  SecureConnection session =
      timer_.timeoutAfter(kBound, client->Connect(RawConnect(site), alpha_.public_identity()))
          .wait(ws_);
  ASSERT_TRUE(WaitUntil([&] { return rpc.sessions() == 1; }));
  PingError(*client, site, alpha_.public_identity());
  ASSERT_TRUE(WaitUntil([&] { return rpc.last_refusal() == "too many sessions"; }));
  EXPECT_EQ(calls, 0);
}

// An authenticated peer that then goes silent holds no session past the idle timeout.
TEST_F(SecureChannelTest, IdleAuthenticatedSessionIsDropped) {
  // Long enough that the last ping's own session (connect, then call at once) is not idle even
  // on a loaded machine; the silent one is dropped after it all the same.
  ChannelOptions options;
  options.idle_timeout = 1 * kj::SECONDS;
  auto server = Serve(alpha_, {beta_.public_identity()}, options);
  auto client = Channel(beta_, {alpha_.public_identity()});
  SecureConnection connection =
      timer_.timeoutAfter(kBound, client->Connect(RawConnect(*server), alpha_.public_identity()))
          .wait(ws_);
  ASSERT_TRUE(WaitUntil([&] { return server->rpc->served() == 1; }));
  EXPECT_TRUE(ReadsUntilClosed(*connection.stream)) << "the idle session was not closed";
  // The server still serves others.
  EXPECT_EQ(PingOk(*client, *server, alpha_.public_identity()), std::string("nonce\0\1\2", 8));
}

TEST_F(SecureChannelTest, ClientGivesUpOnAServerThatNeverAnswers) {
  // A plain TCP listener that accepts and never speaks TLS.
  auto listener = io_.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(ws_)->listen();
  auto accepted = listener->accept();
  ChannelOptions options;
  options.handshake_timeout = 100 * kj::MILLISECONDS;
  auto client = Channel(beta_, {alpha_.public_identity()}, options);
  auto address =
      io_.provider->getNetwork().parseAddress("127.0.0.1", listener->getPort()).wait(ws_);
  auto raw = address->connectAuthenticated().wait(ws_);
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                client->Connect(kj::mv(raw), alpha_.public_identity()).wait(ws_);
              })) {
    EXPECT_THAT(std::string(e->getDescription().cStr()), HasSubstr("TLS handshake timed out"));
    // A peer not available now (exit 9, run it again), not one out of resources (exit 8).
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED);
  } else {
    ADD_FAILURE() << "handshake with a silent server succeeded";
  }
}

// The RPC window a connection reports to Cap'n Proto's flow control (as its SO_SNDBUF) opens as
// the connection's bytes are written, up to ChannelOptions::rpc_window: a sender does not build
// a whole window of messages in its own memory before the first byte has left (issue 9).
TEST_F(SecureChannelTest, TheRpcWindowOpensAsBytesAreWritten) {
  auto server = Serve(alpha_, {beta_.public_identity()});
  ChannelOptions options;
  options.rpc_window = 300;
  auto client = Channel(beta_, {alpha_.public_identity()}, options);
  SecureConnection connection =
      timer_.timeoutAfter(kBound, client->Connect(RawConnect(*server), alpha_.public_identity()))
          .wait(ws_);
  auto window = [&connection]() {
    int value = -1;
    kj::uint length = sizeof(value);
    connection.stream->getsockopt(SOL_SOCKET, SO_SNDBUF, &value, &length);
    EXPECT_EQ(length, sizeof(value));
    return value;
  };
  EXPECT_EQ(window(), 0) << "nothing written yet";
  auto rpc = kj::heap<capnp::TwoPartyClient>(*connection.stream);
  auto transfer = rpc->bootstrap().castAs<schema::Transfer>();
  std::vector<int> seen;
  for (int i = 0; i < 8; ++i) {
    auto request = transfer.pingRequest();
    request.setNonce(kj::heapArray<kj::byte>(40));
    timer_.timeoutAfter(kBound, request.send()).wait(ws_);
    seen.push_back(window());
  }
  EXPECT_GT(seen.front(), 0) << "a ping was written";
  EXPECT_LT(seen.front(), 300);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GE(seen[i], seen[i - 1]);
  EXPECT_EQ(seen.back(), 300) << "capped at rpc_window";
  EXPECT_GT(connection.meter->written(), 300u) << "the meter counts on past the window";
}

// The daemon's budget for unanswered calls is shared by its sessions (a sender's window beyond
// it waits in socket buffers and on the path, not in the daemon's memory).
TEST_F(SecureChannelTest, SessionsShareTheCallBudget) {
  auto server = Serve(alpha_, {beta_.public_identity()});
  auto client = Channel(beta_, {alpha_.public_identity()});
  EXPECT_EQ(server->rpc->call_window(), RpcServer::kMaxCallWindow);
  std::vector<SecureConnection> open;
  auto connect = [&](size_t n) {
    while (open.size() < n) {
      auto connection = client->Connect(RawConnect(*server), alpha_.public_identity());
      open.push_back(timer_.timeoutAfter(kBound, kj::mv(connection)).wait(ws_));
    }
    EXPECT_TRUE(WaitUntil([&] { return server->rpc->sessions() == n; }));
  };
  connect(1);
  EXPECT_EQ(server->rpc->call_window(), RpcServer::kMaxCallWindow);  // 24 MiB, at most 8
  connect(4);
  EXPECT_EQ(server->rpc->call_window(), RpcServer::kCallBudget / 4);
  connect(30);
  EXPECT_EQ(server->rpc->call_window(), RpcServer::kMinCallWindow);  // 24 MiB / 30, at least 1
  open.resize(3);
  EXPECT_TRUE(WaitUntil([&] { return server->rpc->sessions() == 3; }));
  EXPECT_EQ(server->rpc->call_window(), RpcServer::kMaxCallWindow);
}

}  // namespace
}  // namespace bunker::transfer

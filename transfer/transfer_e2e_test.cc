// Two sites over real loopback TCP through the pinned TLS channel, with a man in the middle
// that corrupts one byte of the stream: TLS refuses the record, the connection dies, and the
// transfer resumes (only the chunks never committed move again) to a byte-identical capsule.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <sys/stat.h>

#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transfer/client.h"
#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "transfer/depot.h"
#include "transfer/errors.h"
#include "transfer/secure_channel.h"
#include "transfer/sender.h"

namespace bunker::transfer {
namespace {

using capsule::testing::Keys;

constexpr uint32_t kChunk = 4096;

// Copies `from` to `to` until EOF, flipping the byte at stream offset `corrupt_at` (if any).
kj::Promise<void> Pump(kj::AsyncIoStream& from, kj::AsyncIoStream& to, uint64_t corrupt_at,
                       uint64_t offset = 0) {
  auto buffer = kj::heapArray<kj::byte>(16384);
  auto read = from.tryRead(buffer.begin(), 1, buffer.size());
  return read.then([&from, &to, corrupt_at, offset, buffer = kj::mv(buffer)](
                       size_t n) mutable -> kj::Promise<void> {
    if (n == 0) {
      to.shutdownWrite();
      return kj::READY_NOW;
    }
    if (corrupt_at >= offset && corrupt_at < offset + n) buffer[corrupt_at - offset] ^= 0x20;
    auto write = to.write(buffer.begin(), n);
    return write.then([&from, &to, corrupt_at, offset, n]() {
      return Pump(from, to, corrupt_at, offset + n);
    }).attach(kj::mv(buffer));
  });
}

TEST(TransferEndToEndTest, CorruptingProxyCutsTheConnectionAndTheTransferResumes) {
  auto io = kj::setupAsyncIo();
  kj::Timer& timer = io.provider->getTimer();
  Keys keys;  // issuer seals; alice is site A (sender), bob is site B (receiver)
  const std::vector<uint8_t> bytes = capsule::testing::SealRaw(
      keys, capsule::testing::PatternBytes(120 * kChunk, 3), kChunk);
  auto reader = capsule::CapsuleReader::OpenUntrusted(capsule::MemoryFile(bytes));
  ASSERT_TRUE(reader.ok());
  std::shared_ptr<const capsule::CapsuleReader> shared_reader = std::move(*reader);

  // Site B: a depot served over the pinned channel.
  const std::string store = capsule::testing::MakeTempDir() + "/store";
  DepotOptions d;
  d.store = capsule::MakeLocalStore(store);
  d.trusted = {keys.issuer.public_identity()};
  Depot depot(d);
  auto b_channel =
      SecureChannel::Create(keys.bob, {keys.alice.public_identity()}, timer, absl::Now());
  ASSERT_TRUE(b_channel.ok());
  RpcServer rpc(**b_channel, [&depot](const crypto::PublicIdentity& peer, WriteMeter&) {
    return capnp::Capability::Client(depot.ServeFor(peer));
  });
  auto b_listener = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
  auto serving = rpc.Listen(*b_listener).eagerlyEvaluate(nullptr);

  // The man in the middle: forwards one connection, corrupting client-to-server byte 300000.
  auto m_listener = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
  auto b_address =
      io.provider->getNetwork().parseAddress("127.0.0.1", b_listener->getPort()).wait(io.waitScope);
  kj::Own<kj::AsyncIoStream> down, up;
  auto proxy = m_listener->accept()
                   .then([&](kj::Own<kj::AsyncIoStream> client) {
                     down = kj::mv(client);
                     return b_address->connect();
                   })
                   .then([&](kj::Own<kj::AsyncIoStream> server) {
                     up = kj::mv(server);
                     return Pump(*down, *up, 300000).exclusiveJoin(Pump(*up, *down, ~uint64_t{0}));
                   })
                   .eagerlyEvaluate([](kj::Exception&&) {});

  auto a_channel =
      SecureChannel::Create(keys.alice, {keys.bob.public_identity()}, timer, absl::Now());
  ASSERT_TRUE(a_channel.ok());
  auto push_via = [&](uint16_t port) -> absl::StatusOr<SendSummary> {
    try {
      auto address = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope);
      SecureConnection c = (*a_channel)
                               ->Connect(address->connectAuthenticated().wait(io.waitScope),
                                         keys.bob.public_identity())
                               .wait(io.waitScope);
      capnp::TwoPartyClient client(*c.stream);
      SendOptions o;
      o.commit_every = 8 * kChunk;  // commit often, so that much is durable before the damage
      return Push(shared_reader, client.bootstrap().castAs<schema::Transfer>(), o)
          .exclusiveJoin(timer.afterDelay(20 * kj::SECONDS).then([]() -> SendSummary {
            KJ_FAIL_REQUIRE("push timed out");
          }))
          .wait(io.waitScope);
    } catch (const kj::Exception& e) {
      return FromException(e);
    }
  };

  // Through the corrupting proxy: TLS refuses the damaged record and the connection dies.
  absl::StatusOr<SendSummary> broken = push_via(m_listener->getPort());
  EXPECT_FALSE(broken.ok());
  EXPECT_TRUE(capsule::testing::ListDir(store).empty() ||
              capsule::testing::ListDir(store).size() == 1)
      << "only the .incoming folder may exist";
  EXPECT_FALSE(capsule::testing::Exists(store + "/" + shared_reader->manifest().IdHex() + ".capsule"));

  // Directly: the transfer resumes and completes.
  absl::StatusOr<SendSummary> resumed = push_via(b_listener->getPort());
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_GT(resumed->chunks_skipped, 0u) << "nothing committed before the damage was kept";
  const std::string got =
      capsule::testing::ReadFile(store + "/" + shared_reader->manifest().IdHex() + ".capsule");
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), bytes);
}

// A server that answers fetch() with a made-up capsule id and sends nothing.
class LyingServer final : public schema::Transfer::Server {
 public:
  kj::Promise<void> fetch(FetchContext context) override {
    auto s = context.getResults().initSummary();
    s.setCapsuleId("../../victim/precious");
    s.setChunksTotal(1);
    s.setChunksSent(1);
    return kj::READY_NOW;
  }
};

// Regression: the client built paths from the server's id, so a lying server could make
// `capsule fetch` move (and delete) any file named <x>.capsule next to the output's folder.
TEST(TransferEndToEndTest, LyingFetchServerMovesNoFileAndWritesNothing) {
  Keys keys;  // alice: the fetching site; bob: the lying server
  const std::string root = capsule::testing::MakeTempDir();
  ::mkdir((root + "/out").c_str(), 0755);
  ::mkdir((root + "/out/.bunker-fetch").c_str(), 0700);  // left by an earlier interrupted fetch
  ::mkdir((root + "/victim").c_str(), 0755);
  capsule::testing::WriteFile(root + "/victim/precious.capsule", "precious");

  std::promise<uint16_t> port;
  auto stop = std::make_shared<std::promise<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>>();
  std::thread server([&keys, &port, stop] {
    auto io = kj::setupAsyncIo();
    auto channel = SecureChannel::Create(keys.bob, {keys.alice.public_identity()},
                                         io.provider->getTimer(), absl::Now());
    RpcServer rpc(**channel, [](const crypto::PublicIdentity&, WriteMeter&) {
      return capnp::Capability::Client(kj::heap<LyingServer>());
    });
    auto listener =
        io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
    auto done = kj::newPromiseAndCrossThreadFulfiller<void>();
    stop->set_value(kj::mv(done.fulfiller));
    port.set_value(static_cast<uint16_t>(listener->getPort()));
    rpc.Listen(*listener).exclusiveJoin(kj::mv(done.promise)).wait(io.waitScope);
  });
  const uint16_t p = port.get_future().get();
  auto stopper = stop->get_future().get();

  ClientOptions o;
  o.self = &keys.alice;
  o.peers = {keys.bob.public_identity()};
  const std::string id(32, 'a');
  auto result = FetchCapsule(id, absl::StrCat("127.0.0.1:", p), root + "/out/new.capsule", o,
                             {keys.issuer.public_identity()}, nullptr);
  stopper->fulfill();
  server.join();

  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss) << result.status();
  EXPECT_EQ(capsule::testing::ReadFile(root + "/victim/precious.capsule"), "precious");
  EXPECT_FALSE(capsule::testing::Exists(root + "/out/new.capsule"));
}

}  // namespace
}  // namespace bunker::transfer

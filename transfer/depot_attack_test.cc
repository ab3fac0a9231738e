// A pinned peer that abuses the transfer protocol against the real Depot: calls in any order,
// chunks that do not belong, many fetches at once, and a store folder that is not the
// daemon's own. Whatever it does, nothing is stored that was not verified, the daemon's memory
// stays bounded, and the error says what was wrong.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/vector.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "capsule/capsule_test_util.h"
#include "capsule/format.h"
#include "gtest/gtest.h"
#include "transfer/depot.h"
#include "transfer/errors.h"
#include "transfer/event_recorder.h"
#include "transfer/sender.h"

namespace bunker::transfer {
namespace {

using capsule::testing::Keys;

constexpr uint32_t kChunk = 4096;

struct Fixture {
  Keys keys;
  std::vector<uint8_t> capsule;
  std::shared_ptr<const capsule::CapsuleReader> reader;
  std::string store = capsule::testing::MakeTempDir() + "/store";

  explicit Fixture(size_t payload) {
    capsule = capsule::testing::SealRaw(keys, capsule::testing::PatternBytes(payload, 7), kChunk);
    auto r = capsule::CapsuleReader::OpenUntrusted(capsule::MemoryFile(capsule));
    EXPECT_TRUE(r.ok()) << r.status();
    reader = std::move(*r);
  }
  DepotOptions Options(const std::string& folder, uint64_t keep_free = 0) {
    DepotOptions o;
    o.store = capsule::MakeLocalStore(folder, keep_free);
    o.trusted = {keys.issuer.public_identity()};
    o.now = [] { return int64_t{1800000000}; };
    return o;
  }
  std::string Id() const { return reader->manifest().IdHex(); }
  bool Stored(const std::string& folder) {
    const std::string s = capsule::testing::ReadFile(folder + "/" + Id() + ".capsule");
    return std::vector<uint8_t>(s.begin(), s.end()) == capsule;
  }
  std::vector<uint8_t> Chunk(uint64_t i) {
    const capsule::Geometry& g = reader->geometry();
    std::vector<uint8_t> out(g.CipherSize(i));
    EXPECT_TRUE(reader->ReadRaw(g.ChunkOffset(i), absl::MakeSpan(out)).ok());
    return out;
  }
};

// One RPC connection to `depot` over an in-memory pipe.
struct Connection {
  kj::TwoWayPipe pipe;
  capnp::TwoPartyServer server;
  capnp::TwoPartyClient client;
  schema::Transfer::Client transfer;
  Connection(kj::AsyncIoContext& io, Depot& depot, const crypto::PublicIdentity& peer)
      : pipe(io.provider->newTwoWayPipe()),
        server(depot.ServeFor(peer)),
        client(*pipe.ends[0]),
        transfer(client.bootstrap().castAs<schema::Transfer>()) {
    server.accept(kj::mv(pipe.ends[1]));
  }
};

// The status a call ended with.
template <typename Promise>
absl::Status Outcome(kj::AsyncIoContext& io, Promise p) {
  try {
    p.wait(io.waitScope);
    return absl::OkStatus();
  } catch (const kj::Exception& e) {
    return FromException(e);
  }
}

schema::Upload::Client Offer(kj::AsyncIoContext& io, Connection& c, Fixture& f) {
  auto p = capsule::ReadPrelude(*f.reader);
  auto req = c.transfer.offerRequest();
  req.initPrelude().setHeader(kj::arrayPtr(p->header.data(), p->header.size()));
  req.getPrelude().setTail(kj::arrayPtr(p->tail.data(), p->tail.size()));
  return req.send().wait(io.waitScope).getUpload();
}

kj::Promise<void> Put(schema::Upload::Client& u, uint64_t index, const std::vector<uint8_t>& d) {
  auto req = u.putRequest();
  req.setIndex(index);
  req.setData(kj::arrayPtr(d.data(), d.size()));
  return req.send();
}

std::vector<uint64_t> Rejected(kj::AsyncIoContext& io, schema::Upload::Client& u) {
  auto r = u.commitRequest().send().wait(io.waitScope);
  std::vector<uint64_t> out;
  for (uint64_t i : r.getRejected()) out.push_back(i);
  return out;
}

// Attack: an uploader that puts what it likes: an index past the end, a chunk of the wrong
// size or content, a finish before everything arrived, the same chunk at once over two
// connections, and calls on its upload after the capsule was stored. Each is refused or
// harmless; the stored capsule is byte-identical to what the issuer signed.
TEST(DepotAttackTest, AnUploaderThatBreaksTheProtocolStoresNothingUnverified) {
  auto io = kj::setupAsyncIo();
  Fixture f(6 * kChunk);
  Depot depot(f.Options(f.store));
  Connection c1(io, depot, f.keys.alice.public_identity());
  Connection c2(io, depot, f.keys.alice.public_identity());

  {  // An index out of range fails its stream of puts (heard at the next call), naming it.
    auto u = Offer(io, c1, f);
    Put(u, 1u << 30, f.Chunk(0)).wait(io.waitScope);
    absl::Status s = Outcome(io, u.commitRequest().send());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "out of range")) << s;
  }
  auto u1 = Offer(io, c1, f);
  auto u2 = Offer(io, c2, f);
  // A short chunk, a long one and another chunk's bytes are refused, not written.
  std::vector<uint8_t> shorter = f.Chunk(0);
  shorter.pop_back();
  std::vector<uint8_t> longer = f.Chunk(0);
  longer.push_back(0);
  ASSERT_TRUE(Outcome(io, Put(u1, 0, shorter)).ok());
  ASSERT_TRUE(Outcome(io, Put(u1, 0, longer)).ok());
  ASSERT_TRUE(Outcome(io, Put(u1, 2, f.Chunk(3))).ok());
  EXPECT_EQ(Rejected(io, u1), (std::vector<uint64_t>{0, 2}));
  // Finish while chunks are missing.
  absl::Status early = Outcome(io, u1.finishRequest().send());
  EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition) << early;
  EXPECT_FALSE(capsule::testing::Exists(f.store + "/" + f.Id() + ".capsule"));
  // The same chunk over both connections at once, twice each.
  auto a = Put(u1, 1, f.Chunk(1));
  auto b = Put(u2, 1, f.Chunk(1));
  auto a2 = Put(u1, 1, f.Chunk(1));
  auto b2 = Put(u2, 1, f.Chunk(1));
  ASSERT_TRUE(Outcome(io, kj::mv(a)).ok());
  ASSERT_TRUE(Outcome(io, kj::mv(b)).ok());
  ASSERT_TRUE(Outcome(io, kj::mv(a2)).ok());
  ASSERT_TRUE(Outcome(io, kj::mv(b2)).ok());
  EXPECT_TRUE(Rejected(io, u1).empty());
  EXPECT_TRUE(Rejected(io, u2).empty());
  // The rest, then finish; then every call again on the finished upload.
  for (uint64_t i = 0; i < f.reader->geometry().chunk_count; ++i) {
    if (i == 1) continue;
    ASSERT_TRUE(Outcome(io, Put(u2, i, f.Chunk(i))).ok());
  }
  EXPECT_TRUE(Rejected(io, u2).empty());
  auto done = u2.finishRequest().send().wait(io.waitScope);
  EXPECT_EQ(std::string(done.getCapsuleId().cStr()), f.Id());
  EXPECT_TRUE(f.Stored(f.store));
  std::vector<uint8_t> garbage(kChunk + 16, 0x5a);
  EXPECT_TRUE(Outcome(io, Put(u1, 0, garbage)).ok()) << "a put after finish";
  EXPECT_TRUE(Rejected(io, u1).empty());
  EXPECT_EQ(std::string(u1.finishRequest().send().wait(io.waitScope).getCapsuleId().cStr()),
            f.Id());
  EXPECT_TRUE(f.Stored(f.store)) << "the stored capsule changed after finish";
  // A new offer finds it stored: nothing to put.
  auto again = Offer(io, c1, f);
  Put(again, 0, f.Chunk(0)).wait(io.waitScope);
  absl::Status put = Outcome(io, again.finishRequest().send());
  EXPECT_EQ(put.code(), absl::StatusCode::kFailedPrecondition) << put;
  EXPECT_TRUE(capsule::testing::ListDir(f.store + "/.incoming").empty());
}

// Attack: between two attempts the offer changes its header (another validly signed capsule
// claiming the same id), on a second connection while the first is receiving, and after a
// restart of the receiver. Both are refused with kDataLoss; the first capsule resumes and is
// stored as signed.
TEST(DepotAttackTest, AnOfferThatChangesBetweenAttemptsIsRefused) {
  auto io = kj::setupAsyncIo();
  Fixture f(4 * kChunk);
  const auto twin = capsule::testing::MustResign(f.capsule, f.keys.issuer,
                                                 [](capsule::Manifest& m) { m.policy = "{}"; });
  auto opened = capsule::CapsuleReader::OpenUntrusted(capsule::MemoryFile(twin));
  ASSERT_TRUE(opened.ok());
  std::shared_ptr<const capsule::CapsuleReader> twin_reader = std::move(*opened);
  ASSERT_EQ(twin_reader->manifest().IdHex(), f.Id());
  {
    Depot depot(f.Options(f.store));
    Connection c1(io, depot, f.keys.alice.public_identity());
    auto u = Offer(io, c1, f);
    ASSERT_TRUE(Outcome(io, Put(u, 0, f.Chunk(0))).ok());
    EXPECT_TRUE(Rejected(io, u).empty());
    Connection c2(io, depot, f.keys.alice.public_identity());
    absl::Status s = Outcome(io, Push(twin_reader, c2.transfer, SendOptions()));
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "is being received")) << s;
  }
  Depot restarted(f.Options(f.store));
  Connection c(io, restarted, f.keys.alice.public_identity());
  absl::Status s = Outcome(io, Push(twin_reader, c.transfer, SendOptions()));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "partly received")) << s;
  // Said to the sender, who cannot act on the receiver's folders.
  EXPECT_FALSE(absl::StrContains(s.message(), ".incoming")) << s;
  auto resumed = Push(f.reader, c.transfer, SendOptions()).wait(io.waitScope);
  EXPECT_EQ(resumed.chunks_skipped, 1u);
  EXPECT_TRUE(f.Stored(f.store));
}

// Regression: an offer refused because a different capsule with its id was being received or
// was stored, chunks refused against the signed table, and a served fetch that failed were
// neither logged nor put on record (spec/TRANSFER.md 5.6). Each is now a "refused" event; the
// rejected chunks of one upload make one event, however many commits report them.
TEST(DepotAttackTest, ForgedIdsCorruptChunksAndFailedFetchesAreOnRecord) {
  auto io = kj::setupAsyncIo();
  Fixture f(4 * kChunk);
  const auto twin = capsule::testing::MustResign(f.capsule, f.keys.issuer,
                                                 [](capsule::Manifest& m) { m.policy = "{}"; });
  auto opened = capsule::CapsuleReader::OpenUntrusted(capsule::MemoryFile(twin));
  ASSERT_TRUE(opened.ok());
  std::shared_ptr<const capsule::CapsuleReader> twin_reader = std::move(*opened);
  std::vector<DepotEvent> events;
  DepotOptions o = f.Options(f.store);
  o.on_event = [&events](const DepotEvent& e) { events.push_back(e); };
  Depot depot(o);
  auto refusals = [&events](const std::string& says) {
    int n = 0;
    for (const DepotEvent& e : events) n += e.kind == "refused" && absl::StrContains(e.detail, says);
    return n;
  };
  Connection c1(io, depot, f.keys.alice.public_identity());
  auto u = Offer(io, c1, f);
  std::vector<uint8_t> bad = f.Chunk(1);
  bad[7] ^= 1;
  ASSERT_TRUE(Outcome(io, Put(u, 1, bad)).ok());
  EXPECT_EQ(Rejected(io, u), std::vector<uint64_t>{1});
  ASSERT_TRUE(Outcome(io, Put(u, 1, bad)).ok());
  EXPECT_EQ(Rejected(io, u), std::vector<uint64_t>{1});
  EXPECT_EQ(refusals("do not match the signed chunk table"), 1);
  EXPECT_EQ(events.back().capsule_id, f.Id());
  Connection c2(io, depot, f.keys.alice.public_identity());
  EXPECT_EQ(Outcome(io, Push(twin_reader, c2.transfer, SendOptions())).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(refusals("is being received"), 1);
  ASSERT_TRUE(Outcome(io, Push(f.reader, c1.transfer, SendOptions())).ok());
  ASSERT_TRUE(f.Stored(f.store));
  EXPECT_EQ(Outcome(io, Push(twin_reader, c2.transfer, SendOptions())).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(refusals("is already stored here"), 1);
  EXPECT_EQ(events.back().peer, f.keys.alice.public_identity().fingerprint().ToString());
  // A fetch of a stored capsule that cannot be read (truncated on the serving site's disk).
  const std::string path = f.store + "/" + f.Id() + ".capsule";
  ASSERT_EQ(::truncate(path.c_str(), 100), 0);
  DepotOptions mine = f.Options(capsule::testing::MakeTempDir() + "/mine");
  mine.expected_id = f.Id();
  Depot receiver(mine);
  auto req = c2.transfer.fetchRequest();
  req.setCapsuleId(f.Id());
  req.setReceiver(receiver.ServeFor(f.keys.bob.public_identity()));
  absl::Status fetched = Outcome(io, req.send());
  EXPECT_FALSE(fetched.ok());
  EXPECT_EQ(refusals("fetch failed"), 1) << fetched;
}

// Attack: many sessions each pulling a fetch at once. Before: each fetch held about two chunks
// of its own, so the daemon's memory grew with the number of sessions (256 sessions of 16 MiB
// chunks: 8 GiB). Now all fetches share DepotOptions::fetch_memory, and every one completes.
TEST(DepotAttackTest, ManyConcurrentFetchesStayWithinTheDaemonsFetchMemory) {
  auto io = kj::setupAsyncIo();
  Fixture f(24 * kChunk);
  DepotOptions source_options = f.Options(f.store);
  source_options.fetch_memory = 3 * (kChunk + 16);
  source_options.max_fetches_per_peer = 12;  // all the fetches below are one peer's
  Depot source(source_options);
  {
    Connection c(io, source, f.keys.alice.public_identity());
    ASSERT_TRUE(Outcome(io, Push(f.reader, c.transfer, SendOptions())).ok());
  }
  constexpr int kFetches = 12;
  std::vector<std::string> folders;
  std::vector<std::unique_ptr<Depot>> receivers;
  std::vector<std::unique_ptr<Connection>> connections;
  kj::Vector<kj::Promise<void>> fetches;
  for (int k = 0; k < kFetches; ++k) {
    folders.push_back(capsule::testing::MakeTempDir() + "/mine");
    DepotOptions mine = f.Options(folders.back());
    mine.expected_id = f.Id();
    receivers.push_back(std::make_unique<Depot>(mine));
    connections.push_back(
        std::make_unique<Connection>(io, source, f.keys.bob.public_identity()));
    auto req = connections.back()->transfer.fetchRequest();
    req.setCapsuleId(f.Id());
    req.setReceiver(receivers.back()->ServeFor(f.keys.alice.public_identity()));
    fetches.add(req.send().ignoreResult());
  }
  kj::joinPromises(fetches.releaseAsArray()).wait(io.waitScope);
  for (const std::string& folder : folders) EXPECT_TRUE(f.Stored(folder)) << folder;
  RecordProperty("fetchMemoryPeak", static_cast<int>(source.fetch_budget().peak()));
  EXPECT_LE(source.fetch_budget().peak(), source_options.fetch_memory);
  EXPECT_EQ(source.fetch_budget().held(), 0u);
}

// Attack: one session pipelines many fetches at once. Each holds an open capsule and its
// prelude (its chunk table: 8 MiB for a 1 GiB capsule of 4 KiB chunks), which the fetch memory
// budget does not count. Before: every one was served at once (thousands fit in a session's
// call window). Now those beyond DepotOptions::max_fetches are refused at once, and the rest
// complete.
TEST(DepotAttackTest, FetchesBeyondTheLimitAreRefusedAndTheOthersComplete) {
  auto io = kj::setupAsyncIo();
  Fixture f(8 * kChunk);
  DepotOptions source_options = f.Options(f.store);
  source_options.max_fetches = 2;
  Depot source(source_options);
  Connection c(io, source, f.keys.bob.public_identity());
  ASSERT_TRUE(Outcome(io, Push(f.reader, c.transfer, SendOptions())).ok());
  constexpr int kFetches = 8;
  std::vector<std::string> folders;
  std::vector<std::unique_ptr<Depot>> receivers;
  kj::Vector<kj::Promise<absl::Status>> fetches;
  for (int k = 0; k < kFetches; ++k) {
    folders.push_back(capsule::testing::MakeTempDir() + "/mine");
    DepotOptions mine = f.Options(folders.back());
    mine.expected_id = f.Id();
    receivers.push_back(std::make_unique<Depot>(mine));
    auto req = c.transfer.fetchRequest();
    req.setCapsuleId(f.Id());
    req.setReceiver(receivers.back()->ServeFor(f.keys.alice.public_identity()));
    fetches.add(req.send().then([](auto&&) { return absl::OkStatus(); },
                                [](kj::Exception&& e) { return FromException(e); }));
  }
  auto outcomes = kj::joinPromises(fetches.releaseAsArray()).wait(io.waitScope);
  int served = 0, refused = 0;
  for (size_t k = 0; k < outcomes.size(); ++k) {
    if (outcomes[k].ok()) {
      ++served;
      EXPECT_TRUE(f.Stored(folders[k]));
    } else {
      ++refused;
      EXPECT_EQ(outcomes[k].code(), absl::StatusCode::kResourceExhausted) << outcomes[k];
      EXPECT_TRUE(absl::StrContains(outcomes[k].message(), "too many fetches")) << outcomes[k];
    }
  }
  EXPECT_GE(served, 2);
  EXPECT_GE(refused, 1);
  EXPECT_EQ(source.fetches_peak(), 2);
  EXPECT_EQ(source.fetches(), 0);
}

// Attack: one peer takes every fetch place and never reads, so that no other peer is served.
// Now a peer holds at most DepotOptions::max_fetches_per_peer places (its next fetch is refused
// at once) and fetch_memory_per_peer bytes, and another peer's fetch is served beside them.
TEST(DepotAttackTest, OnePeerCannotTakeEveryFetch) {
  auto io = kj::setupAsyncIo();
  Fixture f(16 * kChunk);
  DepotOptions source_options = f.Options(f.store);
  source_options.max_fetches = 4;
  source_options.max_fetches_per_peer = 2;
  source_options.fetch_memory_per_peer = 2 * (kChunk + 16);
  Depot source(source_options);
  Connection bob(io, source, f.keys.bob.public_identity());
  Connection alice(io, source, f.keys.alice.public_identity());
  ASSERT_TRUE(Outcome(io, Push(f.reader, bob.transfer, SendOptions())).ok());
  std::vector<std::string> folders;
  std::vector<std::unique_ptr<Depot>> receivers;
  kj::Vector<kj::Promise<absl::Status>> fetches;
  // Bob asks four times (two more than his share), then Alice once.
  for (int k = 0; k < 5; ++k) {
    folders.push_back(capsule::testing::MakeTempDir() + "/mine");
    DepotOptions mine = f.Options(folders.back());
    mine.expected_id = f.Id();
    receivers.push_back(std::make_unique<Depot>(mine));
    auto req = (k < 4 ? bob : alice).transfer.fetchRequest();
    req.setCapsuleId(f.Id());
    req.setReceiver(receivers.back()->ServeFor(f.keys.alice.public_identity()));
    fetches.add(req.send().then([](auto&&) { return absl::OkStatus(); },
                                [](kj::Exception&& e) { return FromException(e); }));
  }
  auto outcomes = kj::joinPromises(fetches.releaseAsArray()).wait(io.waitScope);
  int bob_served = 0;
  for (size_t k = 0; k < 4; ++k) {
    if (outcomes[k].ok()) {
      ++bob_served;
      EXPECT_TRUE(f.Stored(folders[k]));
    } else {
      EXPECT_EQ(outcomes[k].code(), absl::StatusCode::kResourceExhausted) << outcomes[k];
      EXPECT_TRUE(absl::StrContains(outcomes[k].message(), "too many fetches")) << outcomes[k];
    }
  }
  EXPECT_EQ(bob_served, 2);
  EXPECT_TRUE(outcomes[4].ok()) << "another peer was kept out: " << outcomes[4];
  EXPECT_TRUE(f.Stored(folders[4]));
  const std::string bob_key = f.keys.bob.public_identity().fingerprint().ToString();
  EXPECT_LE(source.peer_fetch_budget(bob_key).peak(), source_options.fetch_memory_per_peer);
  EXPECT_EQ(source.fetches(), 0);
}

// Attack (a local user): the folder holding partial capsules and their journals is writable by
// others, who could mark chunks as received that never were. Before: offers were accepted and
// the journal trusted. Now the offer is refused with the reason, before anything is written.
TEST(DepotAttackTest, AnIncomingFolderOthersCanWriteIsRefused) {
  auto io = kj::setupAsyncIo();
  Fixture f(2 * kChunk);
  ASSERT_EQ(::mkdir(f.store.c_str(), 0700), 0);
  const std::string incoming = f.store + "/.incoming";
  ASSERT_EQ(::mkdir(incoming.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(incoming.c_str(), 0777), 0);
  Depot depot(f.Options(f.store));
  Connection c(io, depot, f.keys.alice.public_identity());
  absl::Status s = Outcome(io, Push(f.reader, c.transfer, SendOptions()));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "can be written by other users")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), f.store)) << "a local path reached the peer";
  EXPECT_TRUE(capsule::testing::ListDir(incoming).empty());
  // Made private again, the same offer goes through.
  ASSERT_EQ(::chmod(incoming.c_str(), 0700), 0);
  EXPECT_TRUE(Outcome(io, Push(f.reader, c.transfer, SendOptions())).ok());
  EXPECT_TRUE(f.Stored(f.store));
}

// Attack: an offer of a (validly signed) capsule larger than the room left on the store's
// disk, to fill it. Before: accepted, and the disk filled until a write failed. Now refused
// with kResourceExhausted before anything is written. (Asserted with a reserve larger than
// any disk: the check is the same.)
TEST(DepotAttackTest, AnOfferThatDoesNotFitOnTheDiskIsRefusedBeforeAnythingIsWritten) {
  auto io = kj::setupAsyncIo();
  Fixture f(3 * kChunk);
  Depot depot(f.Options(f.store, uint64_t{1} << 62));
  Connection c(io, depot, f.keys.alice.public_identity());
  absl::Status s = Outcome(io, Push(f.reader, c.transfer, SendOptions()));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "no room for capsule")) << s;
  EXPECT_TRUE(capsule::testing::ListDir(f.store + "/.incoming").empty());
}

// Attack: pings whose nonce is as large as a message may be (64 MiB), on sessions whose
// answers are never read: each answer would wait in the daemon's memory until the idle
// timeout. Before: any nonce was echoed. Now one over 1 KiB is refused, and 1 KiB is echoed.
TEST(DepotAttackTest, APingEchoesAtMostOneKiB) {
  auto io = kj::setupAsyncIo();
  Fixture f(kChunk);
  Depot depot(f.Options(f.store));
  Connection c(io, depot, f.keys.alice.public_identity());
  for (size_t size : {size_t{0}, size_t{8}, size_t{1024}}) {
    auto request = c.transfer.pingRequest();
    request.initNonce(static_cast<unsigned>(size));
    EXPECT_EQ(request.send().wait(io.waitScope).getNonce().size(), size);
  }
  for (size_t size : {size_t{1025}, size_t{4} << 20}) {
    auto request = c.transfer.pingRequest();
    request.initNonce(static_cast<unsigned>(size));
    absl::Status s = Outcome(io, request.send());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << size << ": " << s;
  }
}

// Offers `capsule` on `c`; the offer's status.
absl::Status OfferStatus(kj::AsyncIoContext& io, Connection& c,
                         const std::vector<uint8_t>& capsule) {
  auto r = capsule::CapsuleReader::OpenUntrusted(capsule::MemoryFile(capsule));
  if (!r.ok()) return r.status();
  auto p = capsule::ReadPrelude(**r);
  if (!p.ok()) return p.status();
  auto req = c.transfer.offerRequest();
  req.initPrelude().setHeader(kj::arrayPtr(p->header.data(), p->header.size()));
  req.getPrelude().setTail(kj::arrayPtr(p->tail.data(), p->tail.size()));
  return Outcome(io, req.send());
}

// Attack (review of capsuled): a pinned peer that has call after call refused. Each refusal
// went into the site's audit log on the event loop (the state's lock, a re-read of the whole
// log, a write, a sync and a signature), so every session slowed as the log grew, and the log
// grew without bound. Now events are recorded off the loop (the writer here stalls until the
// attack is over, and pings are answered meanwhile), identical refusals go on record once with
// a count, a peer makes a bounded number of records per window, and every refusal is counted.
TEST(DepotAttackTest, RefusalsAreRecordedOffTheLoopBoundedAndCounted) {
  auto io = kj::setupAsyncIo();
  Fixture f(kChunk);
  // A capsule of an issuer the site does not trust, offered again and again...
  Keys stranger;
  const std::vector<uint8_t> untrusted =
      capsule::testing::SealRaw(stranger, capsule::testing::PatternBytes(kChunk, 1), kChunk);
  constexpr int kAgain = 100;
  // ...and capsules of a trusted issuer that the site does not admit, each another.
  constexpr int kOthers = 40;
  std::vector<std::vector<uint8_t>> others;
  for (int i = 0; i < kOthers; ++i) {
    others.push_back(capsule::testing::SealRaw(
        f.keys, capsule::testing::PatternBytes(kChunk, static_cast<uint8_t>(i)), kChunk));
  }
  std::mutex mu;
  std::condition_variable cv;
  bool writable = false;
  std::vector<EventRecord> records;
  constexpr size_t kPerPeer = 8;
  EventRecorderOptions ro;
  ro.now = [] { return int64_t{1800000000}; };
  ro.window = std::chrono::hours(1);
  ro.max_records_per_peer = kPerPeer;
  ro.write = [&](const std::vector<EventRecord>& batch) {
    std::unique_lock<std::mutex> lock(mu);
    // An audit log locked by another process for as long as the attack lasts (a hang guard
    // ends it).
    cv.wait_for(lock, std::chrono::seconds(30), [&] { return writable; });
    records.insert(records.end(), batch.begin(), batch.end());
    return absl::OkStatus();
  };
  EventRecorder recorder(ro);
  DepotOptions o = f.Options(f.store);
  o.admit = [](const capsule::Manifest&) { return absl::PermissionDeniedError("not admitted"); };
  o.on_event = [&recorder](const DepotEvent& e) { recorder.Add(e); };
  Depot depot(o);
  Connection attacker(io, depot, f.keys.alice.public_identity());
  Connection other(io, depot, f.keys.bob.public_identity());
  const auto pings = [&] {
    auto request = other.transfer.pingRequest();
    request.initNonce(4);
    return Outcome(io, request.send()).ok();
  };
  for (int i = 0; i < kAgain; ++i) {
    absl::Status s = OfferStatus(io, attacker, untrusted);
    ASSERT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
    if (i % 25 == 0) {
      EXPECT_TRUE(pings());
    }
  }
  for (const auto& capsule : others) {
    absl::Status s = OfferStatus(io, attacker, capsule);
    ASSERT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  }
  EXPECT_TRUE(pings());
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_FALSE(writable);
    EXPECT_TRUE(records.empty()) << "the writer was let through early";
    writable = true;
  }
  cv.notify_all();
  recorder.Stop();  // writes what waits
  uint64_t counted = 0;
  size_t unitemized = 0;
  for (const EventRecord& r : records) {
    EXPECT_EQ(r.event.kind, "refused");
    EXPECT_EQ(r.event.peer, f.keys.alice.public_identity().fingerprint().ToString());
    counted += r.count;
    if (r.unitemized) ++unitemized;
  }
  EXPECT_EQ(counted, uint64_t{kAgain + kOthers}) << "every refusal is in one record's count";
  EXPECT_LE(records.size(), kPerPeer + 1) << "one peer's records are bounded per window";
  EXPECT_EQ(unitemized, 1u);
  // The repeated refusal is at most two records: the first (with those that came before the
  // writer took it) and one for all the others, held to the window's end.
  size_t repeated = 0;
  uint64_t repeats = 0;
  for (const EventRecord& r : records) {
    if (r.event.capsule_id.empty() && !r.unitemized) {
      ++repeated;
      repeats += r.count;
    }
  }
  EXPECT_GE(repeated, 1u);
  EXPECT_LE(repeated, 2u);
  EXPECT_EQ(repeats, uint64_t{kAgain});
}

}  // namespace
}  // namespace bunker::transfer

// WitnessStore, WitnessState and one exchange over the pinned channel (spec/TRANSFER.md
// "Witnessing"). transfer/ knows no checkpoint format, so these tests sign a small one of their
// own; what matters here is sizes, roots, proofs and who signed.
#include "transfer/witness.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "capsule/capsule_test_util.h"
#include "crypto/merkle.h"
#include "gtest/gtest.h"
#include "transfer/depot.h"
#include "transfer/errors.h"
#include "transfer/secure_channel.h"
#include "transfer/witness_client.h"

namespace bunker::transfer {
namespace {

using capsule::testing::Keys;

bool FromHex(std::string_view hex, std::vector<uint8_t>* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int v = 0;
    for (size_t k = i; k < i + 2; ++k) {
      const char c = hex[k];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return false;
      v = v * 16 + d;
    }
    out->push_back(static_cast<uint8_t>(v));
  }
  return true;
}

// "test-checkpoint <size> <root hex> <time> <sig hex>": the signature covers the first four.
CheckpointFacts Sign(const crypto::Identity& id, uint64_t size, const crypto::Sha256Digest& root,
                     int64_t time = 1700000000) {
  const std::string body = absl::StrCat("test-checkpoint ", size, " ", crypto::ToHex(root), " ", time);
  const crypto::Ed25519Signature sig =
      id.Sign(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
  return {absl::StrCat(body, " ", crypto::ToHex(sig), "\n"), size, root, time};
}

absl::StatusOr<CheckpointFacts> TestVerify(std::string_view text, const crypto::PublicIdentity& key) {
  std::vector<std::string> f = absl::StrSplit(absl::string_view(text.data(), text.size()), ' ');
  CheckpointFacts out;
  std::vector<uint8_t> root, sig;
  if (f.size() != 5 || f[0] != "test-checkpoint" || f[4].empty() || f[4].back() != '\n' ||
      !absl::SimpleAtoi(f[1], &out.size) || !absl::SimpleAtoi(f[3], &out.time) ||
      !FromHex(f[2], &root) || root.size() != 32 ||
      !FromHex(f[4].substr(0, f[4].size() - 1), &sig)) {
    return absl::InvalidArgumentError("not a test checkpoint");
  }
  std::copy(root.begin(), root.end(), out.root.begin());
  const std::string body = absl::StrCat(f[0], " ", f[1], " ", f[2], " ", f[3]);
  absl::Status s = crypto::VerifySignature(
      key.sign_key, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(body.data()), body.size()),
      sig);
  if (!s.ok()) return s;
  out.text = std::string(text);
  return out;
}

// An audit log as witnessing sees it: leaves, `branch` telling two histories apart.
struct FakeLog {
  std::vector<crypto::Sha256Digest> leaves;
  void Grow(uint64_t n, int branch) {
    for (uint64_t i = 0; i < n; ++i) {
      const std::string e = absl::StrCat("entry ", leaves.size(), " branch ", branch);
      leaves.push_back(crypto::MerkleLeafHash(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(e.data()), e.size())));
    }
  }
  crypto::Sha256Digest Root(uint64_t size) const {
    crypto::MerkleTreeBuilder b;
    for (uint64_t i = 0; i < size; ++i) b.AddLeafHash(leaves[i]);
    return b.Root();
  }
  std::vector<crypto::Sha256Digest> Proof(uint64_t old_size, uint64_t new_size) const {
    return *crypto::ConsistencyProof(old_size, new_size, [this](uint64_t i) {
      return absl::StatusOr<crypto::Sha256Digest>(leaves[i]);
    });
  }
  CheckpointFacts Checkpoint(const crypto::Identity& id) const {
    return Sign(id, leaves.size(), Root(leaves.size()));
  }
  OwnLog Own(const crypto::Identity& id) const {
    OwnLog own;
    own.newest = [this, &id]() -> absl::StatusOr<std::optional<CheckpointFacts>> {
      if (leaves.empty()) return std::optional<CheckpointFacts>();
      return std::optional<CheckpointFacts>(Checkpoint(id));
    };
    own.prove = [this](uint64_t o, uint64_t n) -> absl::StatusOr<ConsistencyFacts> {
      if (o > n || n > leaves.size()) return absl::InvalidArgumentError("out of range");
      return ConsistencyFacts{Root(o), Root(n), Proof(o, n)};
    };
    return own;
  }
};

class WitnessStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = capsule::testing::MakeTempDir() + "/state/witness";
    store_ = Open();
  }
  std::unique_ptr<WitnessStore> Open() {
    auto s = WitnessStore::Open(dir_, {keys_.alice.public_identity()}, TestVerify);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  absl::StatusOr<CheckpointFacts> Hand(const CheckpointFacts& c,
                                       const std::vector<crypto::Sha256Digest>& proof = {},
                                       const std::string& lost = "") {
    return store_->Witness(alice(), c.text, proof, lost, &outcome_);
  }
  const crypto::PublicIdentity& alice() { return keys_.alice.public_identity(); }
  std::string FileOf(const char* suffix) {
    return absl::StrCat(dir_, "/", alice().fingerprint().ToString(), suffix);
  }

  Keys keys_;
  std::string dir_;
  std::unique_ptr<WitnessStore> store_;
  WitnessOutcome outcome_ = WitnessOutcome::kUnchanged;
  FakeLog log_;
};

TEST_F(WitnessStoreTest, NewerWinsAlongAProof) {
  EXPECT_FALSE(store_->Newest(alice()));
  log_.Grow(3, 0);
  ASSERT_TRUE(Hand(log_.Checkpoint(keys_.alice)).ok());
  EXPECT_EQ(outcome_, WitnessOutcome::kFirst);
  log_.Grow(4, 0);
  absl::StatusOr<CheckpointFacts> held = Hand(log_.Checkpoint(keys_.alice), log_.Proof(3, 7));
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(outcome_, WitnessOutcome::kAdvanced);
  EXPECT_EQ(held->size, 7u);
  EXPECT_EQ(store_->Newest(alice())->size, 7u);
  ASSERT_TRUE(Hand(log_.Checkpoint(keys_.alice)).ok());
  EXPECT_EQ(outcome_, WitnessOutcome::kUnchanged);
}

TEST_F(WitnessStoreTest, OlderIsAnsweredWithTheOneHeld) {
  log_.Grow(5, 0);
  ASSERT_TRUE(Hand(log_.Checkpoint(keys_.alice)).ok());
  absl::StatusOr<CheckpointFacts> held = Hand(Sign(keys_.alice, 2, log_.Root(2)));
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(outcome_, WitnessOutcome::kOlder);
  EXPECT_EQ(held->size, 5u);
}

TEST_F(WitnessStoreTest, EquivocationKeepsTheFirst) {
  log_.Grow(4, 0);
  FakeLog other;
  other.Grow(4, 1);
  ASSERT_TRUE(Hand(log_.Checkpoint(keys_.alice)).ok());
  absl::StatusOr<CheckpointFacts> r = Hand(other.Checkpoint(keys_.alice));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("equivocation"), std::string::npos);
  EXPECT_EQ(store_->Newest(alice())->root, log_.Root(4));
}

TEST_F(WitnessStoreTest, LargerCheckpointOnAnotherBranchIsRefused) {
  log_.Grow(3, 0);
  ASSERT_TRUE(Hand(log_.Checkpoint(keys_.alice)).ok());
  FakeLog fork;  // the state folder was replaced and the log grew past the witnessed size
  fork.Grow(6, 1);
  EXPECT_EQ(Hand(fork.Checkpoint(keys_.alice), fork.Proof(3, 6)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(Hand(fork.Checkpoint(keys_.alice)).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->Newest(alice())->size, 3u);
}

TEST_F(WitnessStoreTest, MalformedForgedAndOversizedAreRefused) {
  log_.Grow(2, 0);
  const CheckpointFacts good = log_.Checkpoint(keys_.alice);
  EXPECT_EQ(store_->Witness(alice(), "", {}, "", &outcome_).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Witness(alice(), good.text.substr(0, 20), {}, "", &outcome_).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Witness(alice(), std::string(kMaxCheckpointText + 1, 'x'), {}, "", &outcome_)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Signed by someone else than the peer on the channel.
  EXPECT_EQ(Hand(log_.Checkpoint(keys_.mallory)).status().code(), absl::StatusCode::kDataLoss);
  std::vector<crypto::Sha256Digest> long_proof(kMaxConsistencyProof + 1);
  EXPECT_EQ(Hand(good, long_proof).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(store_->Newest(alice()));
}

TEST_F(WitnessStoreTest, PersistsAcrossRestartAndRefusesATamperedFile) {
  log_.Grow(3, 0);
  ASSERT_TRUE(Hand(log_.Checkpoint(keys_.alice)).ok());
  store_ = Open();
  ASSERT_TRUE(store_->Newest(alice()));
  EXPECT_EQ(store_->Newest(alice())->text, log_.Checkpoint(keys_.alice).text);
  EXPECT_EQ(capsule::testing::ReadFile(FileOf(".checkpoint")), log_.Checkpoint(keys_.alice).text);
  std::string text = log_.Checkpoint(keys_.alice).text;
  text[16] = text[16] == '0' ? '1' : '0';  // the size
  std::ofstream(FileOf(".checkpoint"), std::ios::trunc) << text;
  auto reopened = WitnessStore::Open(dir_, {alice()}, TestVerify);
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(WitnessStoreTest, AcknowledgedLossStartsOverOnceAndKeepsHistory) {
  log_.Grow(5, 0);
  const CheckpointFacts lost = log_.Checkpoint(keys_.alice);
  ASSERT_TRUE(Hand(lost).ok());
  FakeLog fresh;
  fresh.Grow(1, 1);
  // Without the acknowledgement, or acknowledging something else: nothing changes.
  EXPECT_EQ(Hand(fresh.Checkpoint(keys_.alice)).value().size, 5u);
  EXPECT_EQ(Hand(fresh.Checkpoint(keys_.alice), {}, "something else").status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<CheckpointFacts> held = Hand(fresh.Checkpoint(keys_.alice), {}, lost.text);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(outcome_, WitnessOutcome::kReset);
  EXPECT_EQ(held->size, 1u);
  EXPECT_EQ(capsule::testing::ReadFile(FileOf(".history")), lost.text);
  // Once: the same acknowledgement again no longer matches.
  EXPECT_EQ(Hand(fresh.Checkpoint(keys_.alice), {}, lost.text).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(WitnessStateTest, JudgesBehindDivergedAndConsistentAndStaysBad) {
  Keys keys;
  const std::string peer = keys.bob.fingerprint().ToString();
  FakeLog log;
  log.Grow(5, 0);
  const CheckpointFacts five = log.Checkpoint(keys.alice);
  WitnessState state;
  EXPECT_TRUE(state.Check().ok());

  // Consistent: the proof from the witnessed size to ours comes back.
  log.Grow(2, 0);
  absl::StatusOr<std::vector<crypto::Sha256Digest>> proof =
      state.Judge(peer, log.Checkpoint(keys.alice), five, log.Own(keys.alice));
  ASSERT_TRUE(proof.ok()) << proof.status();
  EXPECT_TRUE(crypto::VerifyConsistency(5, 7, five.root, log.Root(7), *proof));
  EXPECT_TRUE(state.Check().ok());

  // Diverged: a log that grew past the witnessed size on another branch.
  FakeLog fork;
  fork.Grow(9, 1);
  absl::Status diverged =
      WitnessState::Compare(peer, fork.Checkpoint(keys.alice), five, fork.Own(keys.alice)).status();
  EXPECT_EQ(diverged.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(diverged.message().find("does not contain the checkpoint of size 5"), std::string::npos);
  EXPECT_TRUE(state.Check().ok());  // Compare changes nothing

  // Behind: an older copy, then an emptied state folder.
  FakeLog older;
  older.Grow(2, 0);
  EXPECT_EQ(state.Judge(peer, older.Checkpoint(keys.alice), five, older.Own(keys.alice))
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  const absl::Status bad = state.Check();
  EXPECT_EQ(bad.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.message().find(absl::StrCat("the site's audit log (size 2) is behind the ",
                                            "checkpoint of size 5 that peer ", peer,
                                            " witnessed at 2023-11-14T22:13:20Z")),
            std::string::npos)
      << bad.message();
  EXPECT_EQ(WitnessState::Compare(peer, std::nullopt, five, FakeLog().Own(keys.alice))
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  // Sticky: a later good verdict does not clear it, and the first finding is kept.
  ASSERT_TRUE(state.Judge(peer, log.Checkpoint(keys.alice), five, log.Own(keys.alice)).ok());
  EXPECT_EQ(state.Check(), bad);
}

// Two sites over the pinned channel on loopback: A hands its checkpoints to B; after A's log is
// replaced by an older copy, A's state goes bad from what B holds, and A's depot refuses offers.
TEST(WitnessRpcTest, TwoSitesCatchARollbackAndTheBadSiteRefusesOffers) {
  auto io = kj::setupAsyncIo();
  kj::Timer& timer = io.provider->getTimer();
  Keys keys;  // alice is site A, bob is site B
  auto store = WitnessStore::Open(capsule::testing::MakeTempDir() + "/witness",
                                  {keys.alice.public_identity()}, TestVerify);
  ASSERT_TRUE(store.ok());
  DepotOptions d;
  d.store = capsule::MakeLocalStore(capsule::testing::MakeTempDir() + "/store");
  d.witness_store = store->get();
  Depot depot_b(d);
  auto b_channel = SecureChannel::Create(keys.bob, {keys.alice.public_identity()}, timer, absl::Now());
  ASSERT_TRUE(b_channel.ok());
  RpcServer rpc(**b_channel, [&depot_b](const crypto::PublicIdentity& peer, WriteMeter&) {
    return capnp::Capability::Client(depot_b.ServeFor(peer));
  });
  auto listener = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
  auto serving = rpc.Listen(*listener).eagerlyEvaluate(nullptr);
  const WitnessPeer b{keys.bob.public_identity(), absl::StrCat("127.0.0.1:", listener->getPort())};

  auto a_channel = SecureChannel::Create(keys.alice, {keys.bob.public_identity()}, timer, absl::Now());
  ASSERT_TRUE(a_channel.ok());
  FakeLog log;
  WitnessState state;
  WitnessClientOptions o;
  o.self = keys.alice.public_identity();
  o.verify = TestVerify;
  o.own = log.Own(keys.alice);
  o.state = &state;
  auto exchange = [&]() {
    return WitnessAt(**a_channel, io.provider->getNetwork(), b, o).wait(io.waitScope);
  };

  WitnessResult r = exchange();  // an empty log: nothing to hand over
  EXPECT_TRUE(r.status.ok()) << r.status;
  log.Grow(3, 0);
  r = exchange();
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.held_size, 3u);
  log.Grow(2, 0);
  r = exchange();
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ((*store)->Newest(keys.alice.public_identity())->size, 5u);
  EXPECT_TRUE(state.Check().ok());

  log.leaves.resize(2);  // the state folder replaced by an older copy
  r = exchange();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(state.Check().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ((*store)->Newest(keys.alice.public_identity())->size, 5u);  // evidence kept

  // A's depot, with this state, refuses an offer from B before looking at it.
  DepotOptions da;
  da.store = capsule::MakeLocalStore(capsule::testing::MakeTempDir() + "/store-a");
  da.witness_state = &state;
  Depot depot_a(da);
  schema::Transfer::Client a = depot_a.ServeFor(keys.bob.public_identity());
  auto req = a.offerRequest();
  req.initPrelude();
  absl::Status refused;
  try {
    req.send().wait(io.waitScope);
  } catch (const kj::Exception& e) {
    refused = FromException(e);
  }
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("refusing to serve until an operator acts"), std::string::npos);
}

}  // namespace
}  // namespace bunker::transfer

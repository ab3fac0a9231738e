#include "transfer/witness_client.h"

#include <capnp/rpc-twoparty.h>

#include "absl/strings/str_cat.h"
#include "transfer/errors.h"

namespace bunker::transfer {
namespace {

// One authenticated RPC connection; outlives the capabilities obtained through it.
struct Connection {
  SecureConnection secure;
  capnp::TwoPartyClient client;
  explicit Connection(SecureConnection c) : secure(kj::mv(c)), client(*secure.stream) {}
};

WitnessResult Failed(absl::Status status) {
  WitnessResult r;
  r.status = std::move(status);
  return r;
}

// What a witness answered of us, verified under our own key; nullopt for "".
absl::StatusOr<std::optional<CheckpointFacts>> HeldOfUs(capnp::Text::Reader text,
                                                        const WitnessClientOptions& o,
                                                        const std::string& peer) {
  if (text.size() == 0) return std::optional<CheckpointFacts>();
  if (text.size() > kMaxCheckpointText) {
    return absl::InvalidArgumentError(absl::StrCat("witness ", peer, " answered an oversized text"));
  }
  absl::StatusOr<CheckpointFacts> held = o.verify(std::string_view(text.cStr(), text.size()), o.self);
  if (!held.ok()) {
    // Not ours: a witness cannot make us look behind with a checkpoint we never signed.
    return absl::DataLossError(absl::StrCat("witness ", peer, " holds a checkpoint of us that ",
                                            "does not verify under our key (ignored): ",
                                            held.status().message()));
  }
  return std::optional<CheckpointFacts>(*std::move(held));
}

// Step 3: hand over `ours` and judge the answer.
kj::Promise<WitnessResult> HandOver(schema::Transfer::Client peer, std::string fp,
                                    CheckpointFacts ours,
                                    std::vector<crypto::Sha256Digest> proof, std::string lost,
                                    const WitnessClientOptions& o) {
  auto req = peer.witnessRequest();
  req.setCheckpoint(ours.text);
  auto list = req.initConsistency(static_cast<unsigned>(proof.size()));
  for (size_t i = 0; i < proof.size(); ++i) {
    list.set(static_cast<unsigned>(i), kj::arrayPtr(proof[i].data(), proof[i].size()));
  }
  req.setAcknowledgedLoss(lost);
  const bool accepted = !lost.empty();
  return req.send().then(
      [&o, fp, ours = kj::mv(ours), accepted](capnp::Response<schema::Transfer::WitnessResults>&&
                                                  response) -> WitnessResult {
        absl::StatusOr<std::optional<CheckpointFacts>> held = HeldOfUs(response.getNewest(), o, fp);
        if (!held.ok()) return Failed(held.status());
        WitnessResult r;
        r.loss_accepted = accepted;
        if (!*held) {
          r.status = absl::DataLossError(absl::StrCat("witness ", fp, " holds nothing of us"));
          return r;
        }
        r.held_size = (*held)->size;
        // The witness may hold something newer than what we just handed over.
        r.status = o.state->Judge(fp, ours, **held, o.own).status();
        return r;
      });
}

}  // namespace

kj::Promise<WitnessResult> WitnessWith(schema::Transfer::Client peer,
                                       const crypto::PublicIdentity& peer_key,
                                       const WitnessClientOptions& o) {
  const std::string fp = peer_key.fingerprint().ToString();
  return peer.newestOfRequest()
      .send()
      .then([peer, fp, &o](capnp::Response<schema::Transfer::NewestOfResults>&& response) mutable
            -> kj::Promise<WitnessResult> {
        absl::StatusOr<std::optional<CheckpointFacts>> held =
            HeldOfUs(response.getCheckpoint(), o, fp);
        if (!held.ok()) return Failed(held.status());
        absl::StatusOr<std::optional<CheckpointFacts>> ours = o.own.newest();
        if (!ours.ok()) return Failed(ours.status());
        std::vector<crypto::Sha256Digest> proof;
        std::string lost;
        if (*held) {
          absl::StatusOr<std::vector<crypto::Sha256Digest>> judged =
              o.accept_loss ? WitnessState::Compare(fp, *ours, **held, o.own)
                            : o.state->Judge(fp, *ours, **held, o.own);
          if (absl::IsDataLoss(judged.status()) && o.accept_loss) {
            absl::Status recorded = o.accept_loss(fp, **held);
            if (!recorded.ok()) return Failed(recorded);
            ours = o.own.newest();
            if (!ours.ok()) return Failed(ours.status());
            lost = (*held)->text;
          } else if (!judged.ok()) {
            WitnessResult r = Failed(judged.status());
            r.held_size = (*held)->size;
            return r;
          } else {
            proof = *std::move(judged);
          }
        }
        if (!*ours) {
          WitnessResult r;  // an empty log: nothing to hand over
          return r;
        }
        return HandOver(kj::mv(peer), fp, **std::move(ours), std::move(proof), std::move(lost),
                        o);
      })
      .catch_([](kj::Exception&& e) { return Failed(FromException(e)); });
}

kj::Promise<WitnessResult> WitnessAt(SecureChannel& channel, kj::Network& network,
                                     const WitnessPeer& peer, const WitnessClientOptions& o) {
  crypto::PublicIdentity key = peer.key;
  auto exchange =
      network.parseAddress(peer.address)
          .then([](kj::Own<kj::NetworkAddress> address) {
            return address->connectAuthenticated().attach(kj::mv(address));
          })
          .then([&channel, key](kj::AuthenticatedStream raw) {
            return channel.Connect(kj::mv(raw), key);
          })
          .then([key, &o](SecureConnection secure) {
            auto connection = kj::heap<Connection>(kj::mv(secure));
            schema::Transfer::Client cap =
                connection->client.bootstrap().castAs<schema::Transfer>();
            return WitnessWith(kj::mv(cap), key, o).attach(kj::mv(connection));
          });
  return channel.timer()
      .timeoutAfter(o.timeout, kj::mv(exchange))
      .catch_([](kj::Exception&& e) { return Failed(FromException(e)); });
}

}  // namespace bunker::transfer

#include "site/witnessing.h"

#include "absl/strings/str_cat.h"
#include "capsule/key_files.h"
#include "verifier/audit_log.h"
#include "verifier/verifier.h"

namespace bunker::site {
namespace {

transfer::CheckpointFacts FactsOf(const verifier::Checkpoint& c) {
  transfer::CheckpointFacts f;
  f.text = c.Encode();
  f.size = c.size;
  f.root = c.root;
  f.time = c.time;
  return f;
}

}  // namespace

transfer::CheckpointVerifier VerifyCheckpoint() {
  return [](std::string_view text,
            const crypto::PublicIdentity& key) -> absl::StatusOr<transfer::CheckpointFacts> {
    if (text.size() > transfer::kMaxCheckpointText) {
      return absl::InvalidArgumentError("a checkpoint text is too long");
    }
    absl::StatusOr<verifier::Checkpoint> c = verifier::Checkpoint::Parse(text);
    if (!c.ok()) return c.status();
    absl::Status s = c->Verify(key);
    if (!s.ok()) return s;
    return FactsOf(*c);
  };
}

std::string WitnessDir(const SiteConfig& site) { return site.state + "/witness"; }

transfer::OwnLog OwnLogOf(const SiteConfig& site, const crypto::PublicIdentity& self) {
  const std::string log = site.state + "/audit.log";
  transfer::OwnLog own;
  own.newest = [log, self]() -> absl::StatusOr<std::optional<transfer::CheckpointFacts>> {
    absl::StatusOr<verifier::Checkpoint> c = verifier::ReadLatestCheckpoint(log);
    if (absl::IsNotFound(c.status())) return std::optional<transfer::CheckpointFacts>();
    if (!c.ok()) return c.status();
    absl::Status s = c->Verify(self);
    if (!s.ok()) return s;
    return std::optional<transfer::CheckpointFacts>(FactsOf(*c));
  };
  own.prove = [log](uint64_t old_size,
                    uint64_t new_size) -> absl::StatusOr<transfer::ConsistencyFacts> {
    absl::StatusOr<verifier::ConsistencyProof> p =
        verifier::ProveConsistency(log, old_size, new_size);
    if (!p.ok()) return p.status();
    transfer::ConsistencyFacts f;
    f.old_root = p->old_root;
    f.new_root = p->new_root;
    f.path = std::move(p->path);
    return f;
  };
  return own;
}

absl::StatusOr<std::vector<transfer::WitnessPeer>> WitnessPeersOf(
    const SiteConfig& site, const std::vector<crypto::PublicIdentity>& peers) {
  std::vector<transfer::WitnessPeer> out;
  for (const SiteWitness& w : site.witnesses) {
    absl::StatusOr<crypto::PublicIdentity> key = capsule::LoadPublicIdentity(w.key);
    if (!key.ok()) return key.status();
    bool pinned = false;
    for (const crypto::PublicIdentity& p : peers) pinned = pinned || p == *key;
    if (!pinned) {
      return absl::InvalidArgumentError(absl::StrCat(
          site.path, ": witness ", w.key, " is not among the site's \"peers\""));
    }
    out.push_back({*key, w.address});
  }
  return out;
}

absl::Status RecordWitnessedLoss(const SiteConfig& site, const crypto::Identity& identity,
                                 const std::string& peer, const transfer::CheckpointFacts& lost,
                                 int64_t now) {
  verifier::AuditRecord rec;
  rec.time = now;
  rec.event = "witness-loss";
  rec.decision = "permit";
  rec.site = site.site;
  rec.requester = peer;
  rec.reasons = {
      absl::StrCat("the operator accepted the loss of the checkpoint of size ", lost.size,
                   " (root ", crypto::ToHex(lost.root), ", signed at ", lost.time,
                   ") that witness ", peer, " holds"),
      lost.text};
  return verifier::RecordSiteEvent(site.Facts(), identity, rec);
}

}  // namespace bunker::site

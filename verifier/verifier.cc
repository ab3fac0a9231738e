#include "verifier/verifier.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capsule/file_index.h"
#include "verifier/state_binding.h"

namespace bunker::verifier {
namespace {

// The files a request covers: every non-directory entry of the index that the selection keeps.
absl::StatusOr<std::vector<std::string>> RequestedFiles(const capsule::CapsuleReader& reader,
                                                        const capsule::PayloadKey& key,
                                                        const capsule::PathSelection& only,
                                                        int threads) {
  const capsule::Manifest& m = reader.manifest();
  absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> stream =
      reader.Stream(key, m.archive_size, m.payload_size, threads);
  if (!stream.ok()) return stream.status();
  capsule::IndexReader index(stream->get(), m.index_entries);
  std::vector<std::string> files;
  while (true) {
    absl::StatusOr<std::optional<capsule::FileEntry>> e = index.Next();
    if (!e.ok()) return e.status();
    if (!e->has_value()) break;
    if ((*e)->type == capsule::FileEntry::Type::kDirectory) continue;
    if (only.empty() || only.Selects((*e)->path)) files.push_back((*e)->path);
  }
  return files;
}

std::string CounterKey(const capsule::Manifest& m) {
  return UseCountKey(m.issuer.fingerprint().ToString(), m.IdHex());
}

Decision Deny(std::string reason) {
  Decision d;
  d.permit = false;
  d.reasons.push_back(std::move(reason));
  return d;
}

}  // namespace

absl::StatusOr<Authorization> Authorize(const capsule::CapsuleReader& reader,
                                        const capsule::PayloadKey& key,
                                        const OpenRequest& request, int threads) {
  absl::StatusOr<std::vector<std::string>> files =
      RequestedFiles(reader, key, request.only, threads);
  if (!files.ok()) return files.status();
  return AuthorizeFiles(reader.manifest(), *std::move(files), request);
}

absl::StatusOr<Authorization> AuthorizeFiles(const capsule::Manifest& m,
                                             std::vector<std::string> files,
                                             const OpenRequest& request) {
  Authorization out;
  out.files = std::move(files);

  Request r;
  if (request.site != nullptr) {
    r.site = request.site->site;
    if (!request.site->region.empty()) r.region = request.site->region;
    r.storage = request.site->storage;
  }
  if (request.requester) r.requester = request.requester->fingerprint().ToString();
  r.purpose = request.purpose;
  r.files = out.files;
  r.now = request.now;

  std::optional<Policy> policy;
  Decision fixed;  // the decision when no evaluation is needed or possible
  bool evaluate = false;
  if (m.policy.empty()) {
    fixed.permit = true;
    fixed.reasons.push_back("the capsule carries no policy: its recipients may open it");
  } else {
    absl::StatusOr<Policy> parsed = ParsePolicy(m.policy);
    if (!parsed.ok()) {
      fixed = Deny(absl::StrCat("the capsule's policy is invalid: ", parsed.status().message()));
    } else if (request.site == nullptr &&
               std::any_of(parsed->rules.begin(), parsed->rules.end(),
                           [](const Rule& rule) { return rule.NeedsSite(); })) {
      std::vector<std::string> ids;
      for (const Rule& rule : parsed->rules) {
        if (rule.NeedsSite()) ids.push_back(rule.id);
      }
      fixed = Deny(absl::StrCat("the policy has conditions that need a site (rules ",
                                absl::StrJoin(ids, ", "), "); open with --site SITE.json"));
    } else {
      policy = std::move(*parsed);
      evaluate = true;
    }
  }

  auto decide = [&](uint64_t opens_so_far) {
    if (!evaluate) return fixed;
    r.opens_so_far = opens_so_far;
    return Evaluate(*policy, r);
  };

  if (request.site == nullptr || request.dry_run) {
    uint64_t opens = 0;
    // A dry run reads the count from the log, and creates nothing.
    if (request.site != nullptr && evaluate) {
      absl::StatusOr<uint64_t> n =
          SignedUseCount(request.site->state + "/audit.log", CounterKey(m));
      if (!n.ok()) return n.status();
      opens = *n;
    }
    out.decision = decide(opens);
    return out;
  }

  // With a site: check the state, decide on the count the log has, record (and count) the
  // decision write-ahead (verifier/state_binding.h).
  absl::StatusOr<std::unique_ptr<SiteState>> state = SiteState::Open(
      request.site->state, request.site->site, *request.site_identity, request.now,
      /*fail=*/nullptr, request.site->mark);
  if (!state.ok()) return state.status();
  out.decision = decide((*state)->UseCount(CounterKey(m)));
  AuditRecord rec;
  rec.time = request.now;
  rec.event = "open";
  rec.decision = out.decision.permit ? "permit" : "deny";
  rec.capsule_id = m.IdHex();
  rec.issuer = m.issuer.fingerprint().ToString();
  rec.site = request.site->site;
  rec.requester = r.requester.value_or("");
  rec.purpose = r.purpose.value_or("");
  rec.paths = request.only_patterns.empty() ? std::vector<std::string>{"**"}
                                            : request.only_patterns;
  // Bounded, so that every decision fits in an entry (kMaxAuditEntrySize): a denial too long to
  // record would come back as UNAVAILABLE and leave no trace. The caller still gets them all.
  rec.rules = BoundLines(out.decision.rules, kMaxReasonsSize / 2, "rules");
  rec.reasons = BoundLines(out.decision.reasons, kMaxReasonsSize, "reasons");
  rec.uses = out.decision.permit && out.decision.counts_use ? 1 : 0;
  if (request.client) {
    rec.uid = request.client->uid;
    rec.pid = request.client->pid;
  }
  absl::StatusOr<Checkpoint> cp = (*state)->Record(rec, request.now);
  if (!cp.ok()) {
    if (absl::IsDataLoss(cp.status())) return cp.status();
    // Without a durable record there is no permit.
    return absl::UnavailableError(absl::StrCat(
        "the decision could not be written to the audit log, so nothing is released: ",
        cp.status().message()));
  }
  out.checkpoint = *cp;
  out.counted_use = rec.uses > 0;
  out.record = std::move(rec);
  return out;
}

absl::Status RecordSiteEvent(const SiteFacts& site, const crypto::Identity& identity,
                             const AuditRecord& record) {
  if (record.uses != 0) {
    return absl::InvalidArgumentError("a site event cannot change a use count");
  }
  absl::StatusOr<std::unique_ptr<SiteState>> state =
      SiteState::Open(site.state, site.site, identity, record.time, nullptr, site.mark);
  if (!state.ok()) return state.status();
  return (*state)->Record(record, record.time).status();
}

absl::Status RecordSiteEvents(const SiteFacts& site, const crypto::Identity& identity,
                              const std::vector<AuditRecord>& records, int64_t now) {
  if (records.empty()) return absl::OkStatus();
  for (const AuditRecord& r : records) {
    if (r.uses != 0) return absl::InvalidArgumentError("a site event cannot change a use count");
  }
  absl::StatusOr<std::unique_ptr<SiteState>> state =
      SiteState::Open(site.state, site.site, identity, now, nullptr, site.mark);
  if (!state.ok()) return state.status();
  for (const AuditRecord& r : records) {
    absl::StatusOr<Checkpoint> cp = (*state)->Record(r, r.time);
    if (!cp.ok()) return cp.status();
  }
  return absl::OkStatus();
}

namespace {

// A "release-failed" entry answering `permit`; `released` empty: nothing had left, the use (if
// counted) is given back.
absl::Status RecordFailedRelease(const SiteFacts& site, const crypto::Identity& identity,
                                 const Authorization& permit, std::string reason,
                                 const std::string& released, int64_t now) {
  if (!permit.decision.permit || !permit.record || !permit.checkpoint) {
    return absl::InvalidArgumentError(
        "only a permit recorded at a site can be marked as a failed release");
  }
  AuditRecord rec = *permit.record;
  rec.time = now;
  rec.event = "release-failed";
  rec.decision = "failed";
  rec.rules.clear();
  // The entry this one answers is the last one the permit's checkpoint covers.
  const uint64_t answered = permit.checkpoint->size - 1;
  if (released.empty()) {
    rec.reasons = {std::move(reason), absl::StrCat("release of audit log entry ", answered,
                                                   " failed; nothing was released")};
    rec.uses = permit.counted_use ? -1 : 0;
  } else {
    rec.reasons = {std::move(reason),
                   absl::StrCat("release of audit log entry ", answered, " failed after ",
                                released, "; the use stays spent")};
    rec.uses = 0;
  }
  absl::StatusOr<std::unique_ptr<SiteState>> state =
      SiteState::Open(site.state, site.site, identity, now, nullptr, site.mark);
  if (!state.ok()) return state.status();
  return (*state)->Record(rec, now).status();
}

}  // namespace

absl::Status RecordReleaseFailed(const SiteFacts& site, const crypto::Identity& identity,
                                 const Authorization& permit, std::string reason, int64_t now) {
  return RecordFailedRelease(site, identity, permit, std::move(reason), "", now);
}

absl::Status RecordReleaseCutShort(const SiteFacts& site, const crypto::Identity& identity,
                                   const Authorization& permit, std::string reason,
                                   const std::string& released, int64_t now) {
  return RecordFailedRelease(site, identity, permit, std::move(reason),
                             released.empty() ? std::string("part of it was released") : released,
                             now);
}

}  // namespace bunker::verifier

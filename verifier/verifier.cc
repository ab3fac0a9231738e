#include "verifier/verifier.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capsule/file_index.h"
#include "verifier/use_counter.h"

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

// Uses are counted per issuer and capsule id: ids are the issuer's to choose, so another trusted
// issuer reusing an id cannot spend this capsule's budget.
std::string CounterKey(const capsule::Manifest& m) {
  return absl::StrCat(m.issuer.fingerprint().ToString(), "/", m.IdHex());
}

// The site's audit log, checked against the checkpoint its state database last kept.
absl::StatusOr<std::unique_ptr<AuditLog>> OpenSiteLog(const SiteFacts& site,
                                                      const crypto::Identity& identity,
                                                      UseCounter& counter) {
  absl::StatusOr<std::optional<std::string>> last_text = counter.LastCheckpoint();
  if (!last_text.ok()) return last_text.status();
  std::optional<Checkpoint> last;
  if (last_text->has_value()) {
    absl::StatusOr<Checkpoint> cp = Checkpoint::Parse(**last_text);
    if (!cp.ok()) return absl::DataLossError("the site's last audit checkpoint is corrupt");
    last = *cp;
  }
  absl::StatusOr<std::unique_ptr<AuditLog>> log =
      AuditLog::Open(site.state, &identity, site.site, last);
  if (!log.ok()) {
    return absl::Status(log.status().code(),
                        absl::StrCat("refusing to decide: ", log.status().message()));
  }
  return log;
}

// Called inside the state database's transaction, when no other process can append: the
// database's checkpoint may lag the log by the one entry a crash can leave between the two;
// more, or none at all beside a non-empty log, means the counts were reset or rolled back
// (e.g. state.db deleted), and every maxOpens budget with them.
absl::Status CheckStateMatchesLog(const SiteFacts& site, UseCounter& counter) {
  absl::StatusOr<std::optional<std::string>> last_text = counter.LastCheckpoint();
  if (!last_text.ok()) return last_text.status();
  uint64_t known = 0;
  if (last_text->has_value()) {
    absl::StatusOr<Checkpoint> cp = Checkpoint::Parse(**last_text);
    if (!cp.ok()) return absl::DataLossError("the site's last audit checkpoint is corrupt");
    known = cp->size;
  }
  absl::StatusOr<Checkpoint> latest = ReadLatestCheckpoint(site.state + "/audit.log");
  if (!latest.ok() && !absl::IsNotFound(latest.status())) return latest.status();
  const uint64_t logged = latest.ok() ? latest->size : 0;
  if (logged > known + 1) {
    return absl::DataLossError(absl::StrCat(
        "refusing to decide: the site's state database knows ", known, " of the audit log's ",
        logged, " entries (was it deleted or replaced?)"));
  }
  return absl::OkStatus();
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
    struct stat st;
    // A dry run reads the count when there is one, and never creates the state database.
    if (request.site != nullptr && evaluate &&
        ::stat((request.site->state + "/state.db").c_str(), &st) == 0) {
      absl::StatusOr<std::unique_ptr<UseCounter>> counter = UseCounter::Open(request.site->state);
      if (!counter.ok()) return counter.status();
      absl::StatusOr<uint64_t> n = (*counter)->Count(CounterKey(m));
      if (!n.ok()) return n.status();
      opens = *n;
    }
    out.decision = decide(opens);
    return out;
  }

  // With a site: decide, record and count in one transaction of the state database.
  absl::StatusOr<std::unique_ptr<UseCounter>> counter = UseCounter::Open(request.site->state);
  if (!counter.ok()) return counter.status();
  absl::StatusOr<std::unique_ptr<AuditLog>> log =
      OpenSiteLog(*request.site, *request.site_identity, **counter);
  if (!log.ok()) return log.status();

  absl::Status record_status;
  absl::StatusOr<bool> counted = (*counter)->Decide(CounterKey(m), [&](uint64_t opens_so_far) {
    record_status = CheckStateMatchesLog(*request.site, **counter);
    if (!record_status.ok()) return false;
    out.decision = decide(opens_so_far);
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
    rec.rules = out.decision.rules;
    rec.reasons = out.decision.reasons;
    absl::StatusOr<Checkpoint> cp = (*log)->Append(rec, request.now);
    if (!cp.ok()) {
      record_status = cp.status();
      return false;
    }
    record_status = (*counter)->SetLastCheckpoint(cp->Encode());
    if (!record_status.ok()) return false;
    out.checkpoint = *cp;
    return out.decision.permit && out.decision.counts_use;
  });
  if (!counted.ok()) return counted.status();
  if (absl::IsDataLoss(record_status)) return record_status;
  if (!record_status.ok()) {
    // Without a durable record there is no permit.
    return absl::UnavailableError(absl::StrCat(
        "the decision could not be written to the audit log, so nothing is released: ",
        record_status.message()));
  }
  return out;
}

absl::Status RecordSiteEvent(const SiteFacts& site, const crypto::Identity& identity,
                            const AuditRecord& record) {
  absl::StatusOr<std::unique_ptr<UseCounter>> counter = UseCounter::Open(site.state);
  if (!counter.ok()) return counter.status();
  absl::StatusOr<std::unique_ptr<AuditLog>> log = OpenSiteLog(site, identity, **counter);
  if (!log.ok()) return log.status();
  absl::Status written;
  // The counter's transaction serializes this with concurrent opens, which keep the same pair
  // (log, checkpoint) in step.
  absl::StatusOr<bool> done = (*counter)->Decide("bunker/events", [&](uint64_t) {
    written = CheckStateMatchesLog(site, **counter);
    if (!written.ok()) return false;
    absl::StatusOr<Checkpoint> cp = (*log)->Append(record, record.time);
    written = cp.ok() ? (*counter)->SetLastCheckpoint(cp->Encode()) : cp.status();
    return false;
  });
  if (!done.ok()) return done.status();
  return written;
}

}  // namespace bunker::verifier

namespace bunker::verifier {
absl::Status RecordReleaseFailed(const SiteFacts& site, const crypto::Identity& identity,
                                 const Authorization& permit, std::string reason, int64_t now) {
  (void)permit;
  AuditRecord rec;
  rec.time = now;
  rec.event = "release-failed";
  rec.decision = "failed";
  rec.site = site.site;
  rec.reasons = {std::move(reason)};
  return RecordSiteEvent(site, identity, rec);
}
}  // namespace bunker::verifier

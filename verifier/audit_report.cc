// The report's figures (audit_report.h): verification first, then one pass over the records.
#include "verifier/audit_report.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "capsule/reader.h"
#include "verifier/policy.h"

namespace bunker::verifier {
namespace {

// A capsule id as the store names its files: 32 lowercase hex characters. Anything else from a
// log never becomes part of a path.
bool IsStoreId(std::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!absl::ascii_isdigit(c) && (c < 'a' || c > 'f')) return false;
  }
  return true;
}

// maxOpens of the permit rules of <store>/<id>.capsule; nullopt when it is not there or does not
// open (the report then says the limit is unknown; it is not the place to judge a capsule).
std::optional<std::vector<std::pair<std::string, uint32_t>>> StoredMaxOpens(
    const std::string& store, const std::string& id) {
  if (store.empty() || !IsStoreId(id)) return std::nullopt;
  absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> file =
      capsule::OpenFile(absl::StrCat(store, "/", id, ".capsule"));
  if (!file.ok()) return std::nullopt;
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader =
      capsule::CapsuleReader::OpenUntrusted(std::move(*file));
  if (!reader.ok() || (*reader)->manifest().IdHex() != id) return std::nullopt;
  absl::StatusOr<Policy> policy = ParsePolicy((*reader)->manifest().policy);
  if (!policy.ok()) return std::nullopt;
  std::vector<std::pair<std::string, uint32_t>> out;
  for (const Rule& r : policy->rules) {
    if (r.effect == Rule::Effect::kPermit && r.max_opens) out.emplace_back(r.id, *r.max_opens);
  }
  return out;
}

// Whether `map` holds `key` or may take it (fewer than `max` keys).
template <typename Map, typename Key>
bool Keeps(const Map& map, const Key& key, size_t max) {
  return map.size() < max || map.count(key) > 0;
}

void Add(AuditReport& rep, size_t site, uint64_t index, const AuditRecord& r) {
  ++rep.total;
  ++rep.by_decision[r.decision];
  ++rep.by_event[r.event];
  if (!rep.first_time || r.time < *rep.first_time) rep.first_time = r.time;
  if (!rep.last_time || r.time > *rep.last_time) rep.last_time = r.time;
  // Floor division: times before 1970 land in the hour they belong to.
  const int64_t hour = r.time >= 0 ? r.time / 3600 : -((-r.time + 3599) / 3600);
  if (r.decision == "permit") ++rep.hours[hour].first;
  if (r.decision == "deny") {
    ++rep.hours[hour].second;
    std::set<std::string> seen;  // a reason listed twice in one entry counts once
    if (r.reasons.empty()) seen.insert("");
    for (const std::string& reason : r.reasons) seen.insert(ReportCut(reason));
    for (const std::string& reason : seen) {
      if (Keeps(rep.denial_reasons, reason, kReportMaxKeys)) {
        ++rep.denial_reasons[reason];
      } else {
        ++rep.other_reason_denials;
      }
    }
  }
  const std::string kind = ReportKindOf(r);
  const std::string requester = ReportCut(r.requester), purpose = ReportCut(r.purpose);
  const std::string capsule_id = ReportCut(r.capsule_id);
  if (Keeps(rep.capsules, capsule_id, kReportMaxCapsules)) {
    ReportCapsule& c = rep.capsules[capsule_id];
    if (c.events == 0) c.id = capsule_id;
    if (c.issuer.empty()) c.issuer = ReportCut(r.issuer);
    ++c.events;
    ++c.kinds[site][kind];
    c.uses[site] += r.uses;
    ReportHistoryItem item{site, index, r.time, kind, ReportCut(requester, kReportMaxItemText),
                           ReportCut(purpose, kReportMaxItemText)};
    if (c.history.size() < kReportHistoryItems) c.history.push_back(item);
    if ((r.event == "sent" || r.event == "received" || r.event == "refused") &&
        c.transfers.size() < kReportTransfers) {
      c.transfers.push_back(std::move(item));
    }
  } else {
    ++rep.other_capsule_entries;
  }
  if (r.event == "open") {
    const std::pair<std::string, std::string> key{requester, purpose};
    if (!Keeps(rep.requesters, key, kReportMaxKeys)) {
      ++rep.other_requester_entries;
      return;
    }
    ReportRequester& q = rep.requesters[key];
    q.requester = requester;
    q.purpose = purpose;
    if (r.decision == "permit") {
      ++q.permits;
      if (q.opened.count(capsule_id) == 0) {
        // Distinct ids beyond the kept ones are not remembered, so opened_total counts a
        // capsule again each time it shows up past the cut: the page says "at least".
        if (q.opened.size() < kReportListItems) q.opened.insert(capsule_id);
        ++q.opened_total;
      }
      for (const std::string& p : r.paths) {
        if (q.paths.size() < kReportListItems) q.paths.insert(ReportCut(p, kReportMaxItemText));
      }
    } else if (r.decision == "deny") {
      ++q.denies;
    } else {
      ++q.other;
    }
  }
}

}  // namespace

std::string ReportCut(std::string_view text, size_t max) {
  if (text.size() <= max) return std::string(text);
  size_t n = max - 3;
  // Not inside a UTF-8 sequence: back off its continuation bytes, then its lead byte.
  if ((static_cast<unsigned char>(text[n]) & 0xc0) == 0x80) {
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xc0) == 0x80) --n;
  }
  return std::string(text.substr(0, n)) + "...";
}

std::string ReportKindOf(const AuditRecord& r) {
  if (r.event == "open") {
    if (r.decision == "permit") return "opened";
    if (r.decision == "deny") return "denied";
    return absl::StrCat("open-", r.decision);
  }
  return r.event;
}

absl::StatusOr<AuditReport> VerifyReportLogs(std::vector<ReportLogInput> inputs, int64_t now,
                                             bool every_signature) {
  AuditReport rep;
  rep.generated = now;
  for (size_t i = 0; i < inputs.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (inputs[i].log_path == inputs[j].log_path) {
        return absl::InvalidArgumentError(
            absl::StrCat("the log ", inputs[i].log_path, " is given twice"));
      }
    }
  }
  // Verify every log before reading any: nothing unverified gets into the figures.
  for (const ReportLogInput& in : inputs) {
    absl::StatusOr<AuditVerifyResult> v =
        VerifyAuditLog(in.log_path, in.key, in.witnessed, every_signature);
    if (!v.ok()) {
      return absl::Status(v.status().code(),
                          absl::StrCat(in.log_path, ": ", v.status().message()));
    }
    ReportSite s;
    s.name = v->checkpoint.site;
    s.fingerprint = in.key.fingerprint().ToString();
    s.log_path = in.log_path;
    s.key_path = in.key_path;
    s.entries = v->entries;
    s.checkpoints = v->checkpoints;
    s.every_signature = every_signature;
    s.latest = v->checkpoint;
    if (in.witnessed) s.witnessed_size = in.witnessed->size;
    s.witness_source = in.witness_source;
    rep.sites.push_back(std::move(s));
  }
  rep.inputs = std::move(inputs);
  return rep;
}

absl::Status GatherReportFigures(AuditReport* report) {
  AuditReport& rep = *report;
  for (size_t site = 0; site < rep.sites.size(); ++site) {
    ReportSite& s = rep.sites[site];
    // The log is opened again by name: the root check ties what is read to what was verified.
    absl::StatusOr<uint64_t> held = ForEachVerifiedAuditRecord(
        s.log_path, s.entries, s.latest.root,
        [&](uint64_t index, const AuditRecord& r) { Add(rep, site, index, r); });
    if (!held.ok()) {
      return absl::Status(held.status().code(),
                          absl::StrCat(s.log_path, ": ", held.status().message()));
    }
    s.left_out = *held - s.entries;
  }
  // maxOpens, where a site's store holds the capsule.
  for (auto& [id, c] : rep.capsules) {
    for (const auto& [site, unused] : c.kinds) {
      std::optional<std::vector<std::pair<std::string, uint32_t>>> m =
          StoredMaxOpens(rep.inputs[site].store, id);
      if (m) {
        c.max_opens = std::move(*m);
        c.policy_known = true;
        break;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<AuditReport> BuildAuditReport(std::vector<ReportLogInput> inputs, int64_t now,
                                             bool every_signature) {
  absl::StatusOr<AuditReport> rep = VerifyReportLogs(std::move(inputs), now, every_signature);
  if (!rep.ok()) return rep.status();
  absl::Status figures = GatherReportFigures(&*rep);
  if (!figures.ok()) return figures;
  return rep;
}

}  // namespace bunker::verifier

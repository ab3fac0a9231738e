// The auditor's report: one self-contained HTML page over one or more sites' audit logs
// (`capsule audit report`; README "Audit report").
//
// Contract:
// - BuildAuditReport verifies every log first (VerifyAuditLog, as `capsule audit verify` does,
//   against a witnessed checkpoint when one is given; optionally only the latest signature) and
//   fails, writing nothing, if any log does
//   not verify: a report never shows figures of a log it could not vouch for. It then reads the
//   entries again with ForEachVerifiedAuditRecord up to the verified size (entries appended
//   after the verification are left out and counted), so every figure in the page is a count
//   over exactly the records `audit show --json` prints for that log.
// - Every read after the verification checks that it read the verified entries: their Merkle
//   root must be the verified checkpoint's root (spec/AUDIT.md "Reading a verified log"). A log
//   renamed over, rewritten or cut while the report is made is kDataLoss, and no report.
// - Memory holds the figures only (per capsule, per requester and purpose, per reason, per
//   hour), never the entries, and only so many of those (kReportMaxKeys and below; the rest is
//   counted as "other"): WriteAuditReportHtml reads the logs a second time and streams the
//   entries into the page. Lists in the page are cut at fixed lengths (the table below them has
//   every entry).
// - Every text that came from a log, a capsule or the command line is shown as
//   capsule::EscapeForTerminal shows it (control, bidi and invalid bytes made visible) and then
//   HTML-escaped; the entries are embedded as JSON with <, >, & and U+2028/U+2029 escaped, so no
//   entry can end the data block. The page's only script is a constant whose SHA-256 is in the
//   page's Content-Security-Policy; it builds the table with textContent only. The page loads
//   nothing: no network, fonts, images or other scripts.
#ifndef BUNKER_VERIFIER_AUDIT_REPORT_H_
#define BUNKER_VERIFIER_AUDIT_REPORT_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capsule/io.h"
#include "crypto/keys.h"
#include "crypto/sha256.h"
#include "verifier/audit_log.h"

namespace bunker::verifier {

// One site's log given to a report.
struct ReportLogInput {
  std::string log_path;       // audit.log; its checkpoints beside it (AuditCheckpointsPath)
  std::string key_path;       // the site's public key file, as the proof command names it
  crypto::PublicIdentity key;
  // The site's store folder ("" when unknown): a capsule's maxOpens is read from the policy of
  // <store>/<id>.capsule when it is there.
  std::string store;
  // A checkpoint of this site that a witness holds (spec/VERIFIER.md "Witnesses"), and where it
  // was found; the log must be consistent with it.
  std::optional<Checkpoint> witnessed;
  std::string witness_source;
};

// What the report's lists keep (the events table has everything).
inline constexpr size_t kReportHistoryItems = 100;   // per capsule
inline constexpr size_t kReportListItems = 50;       // capsules per requester, reasons shown
inline constexpr size_t kReportTransfers = 200;      // sends and receipts per capsule

// What the figures keep, so that their memory is bounded whatever the log holds (a requester
// chooses its purposes, and denial reasons quote them): the first kReportMaxKeys distinct
// denial reasons and requester-and-purpose pairs met, the first kReportMaxCapsules capsules,
// of each text they are keyed by (reason, requester, purpose, capsule id) its first
// kReportMaxText bytes, and of the texts of a capsule's history items and of the paths a
// requester was permitted their first kReportMaxItemText bytes (a longer text is cut and ends
// in "..."; texts alike up to there count as one). Entries past these counts are counted in
// AuditReport's other_* figures. Some 40 MiB at most, whatever the log.
inline constexpr size_t kReportMaxKeys = 1000;
inline constexpr size_t kReportMaxCapsules = 200;
inline constexpr size_t kReportMaxText = 1024;
inline constexpr size_t kReportMaxItemText = 128;

// `text` as the figures keep it: at most `max` bytes (at least 4), cut at a UTF-8 boundary and
// ended by "..." when it was longer.
std::string ReportCut(std::string_view text, size_t max = kReportMaxText);

// The kind of an entry in a capsule's history: "opened" (an open permit), "denied" (an open
// deny), "open-<decision>" for any other open decision, and otherwise the event itself
// ("received", "sent", "refused", "release-failed", "mount-ended", ...).
std::string ReportKindOf(const AuditRecord& record);

struct ReportSite {
  std::string name;         // the site its checkpoints name ("" for a log with none yet)
  std::string fingerprint;  // of its key
  std::string log_path, key_path;
  uint64_t entries = 0;      // verified entries, all in the report
  uint64_t checkpoints = 0;  // checkpoints verified (their roots; see every_signature)
  bool every_signature = true;  // whether each checkpoint's signature was verified, or the latest
  Checkpoint latest;         // the latest checkpoint (default for an empty log)
  std::optional<uint64_t> witnessed_size;  // consistent with this witnessed checkpoint
  std::string witness_source;
  uint64_t left_out = 0;     // entries appended after verification, not in the report
};

struct ReportHistoryItem {
  size_t site = 0;  // index into AuditReport::sites
  uint64_t index = 0;
  int64_t time = 0;
  std::string kind, requester, purpose;
};

struct ReportCapsule {
  std::string id, issuer;  // issuer: the first non-empty one logged
  uint64_t events = 0;
  // Per site (index into sites): entries by kind, and the sum of `uses` (the capsule's use
  // count there, spec/AUDIT.md "Entries").
  std::map<size_t, std::map<std::string, uint64_t>> kinds;
  std::map<size_t, int64_t> uses;
  std::vector<ReportHistoryItem> history;    // the first kReportHistoryItems, by site then index
  std::vector<ReportHistoryItem> transfers;  // "sent", "received", "refused" (kReportTransfers)
  // maxOpens of the capsule's permit rules, by rule id, where its policy was found.
  std::vector<std::pair<std::string, uint32_t>> max_opens;
  bool policy_known = false;
};

struct ReportRequester {
  std::string requester, purpose;  // of "open" entries
  uint64_t permits = 0, denies = 0, other = 0;
  std::set<std::string> opened;    // capsule ids permitted (the first kReportListItems)
  uint64_t opened_total = 0;       // distinct capsule ids permitted
  std::set<std::string> paths;     // paths permitted (the first kReportListItems)
};

struct AuditReport {
  int64_t generated = 0;  // when, seconds since the epoch
  std::vector<ReportLogInput> inputs;
  std::vector<ReportSite> sites;
  uint64_t total = 0;
  std::map<std::string, uint64_t> by_decision, by_event;
  std::map<std::string, uint64_t> denial_reasons;  // deny entries per reason ("" for none)
  std::map<std::string, ReportCapsule> capsules;   // by capsule id ("" for entries with none)
  std::map<std::pair<std::string, std::string>, ReportRequester> requesters;
  // Past the kept keys (kReportMaxKeys, kReportMaxCapsules): denials counted under a reason
  // that was not kept, "open" entries of requester-and-purpose pairs not kept, and entries of
  // capsules not kept.
  uint64_t other_reason_denials = 0, other_requester_entries = 0, other_capsule_entries = 0;
  // Per hour (time / 3600): permits and denies.
  std::map<int64_t, std::pair<uint64_t, uint64_t>> hours;
  std::optional<int64_t> first_time, last_time;
};

// Verifies each log and gathers the figures (see the contract above). kDataLoss / kNotFound /
// kInvalidArgument from VerifyAuditLog naming the log; kInvalidArgument when the same log is
// given twice.
// With `every_signature`, every checkpoint's signature is verified (spec/AUDIT.md section 7, as
// `capsule audit verify`); without, every root and the latest signature (VerifyAuditLog).
absl::StatusOr<AuditReport> BuildAuditReport(std::vector<ReportLogInput> inputs, int64_t now,
                                             bool every_signature = true);

// The two steps of BuildAuditReport, apart so that a test can change a log between them as a
// racing writer or an attacker could. VerifyReportLogs verifies every log and keeps, per site,
// what was verified (entries, latest checkpoint); GatherReportFigures then reads each log up to
// that size and adds the figures: kDataLoss naming the log unless it read exactly the verified
// entries. On an error the report holds partial figures: throw it away.
absl::StatusOr<AuditReport> VerifyReportLogs(std::vector<ReportLogInput> inputs, int64_t now,
                                             bool every_signature = true);
absl::Status GatherReportFigures(AuditReport* report);

// Writes the page to `out`. The logs are read again for the events table, and streamed into
// `out` as they are read: kDataLoss if they no longer hold the entries that were verified, and
// then `out` holds part of a page, which the caller MUST discard (the command writes through
// capsule::AtomicFileWriter and commits only on success).
absl::Status WriteAuditReportHtml(const AuditReport& report, capsule::WritableFile* out);

// Exposed for tests: text made safe inside HTML (EscapeForTerminal, then & < > " ' as
// entities), and JSON text made safe inside a <script type="application/json"> block.
std::string ReportHtmlText(std::string_view text);
std::string ReportScriptSafeJson(std::string_view json);
// The page's script, its style sheet, and the Content-Security-Policy that admits that script
// alone (audit_report_page.cc).
std::string_view ReportScript();
std::string_view ReportStyle();
std::string ReportContentSecurityPolicy();

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_AUDIT_REPORT_H_

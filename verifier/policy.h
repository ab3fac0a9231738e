// Access policies (spec/POLICY.md; schema spec/policy.capnp): parsing with precise errors, and
// evaluation to a decision value with its reasons. "Denied" is a result, not an error.
//
// Semantics: default deny. A request is permitted for a file when at least one permit rule
// matches it and no forbid rule matches it; a request is permitted when it is permitted for every
// requested file. A rule matches a file when every condition it states holds (a field absent from
// a rule does not constrain): site, region, storage labels (the site must carry every listed
// label), requester, purpose, paths (some glob matches the file or one of its ancestors), time
// window [notBefore, notAfter), and for permit rules maxOpens > opens already counted. Rule order
// never matters. Inputs come only from the capsule, the site, the request and one clock reading.
#ifndef BUNKER_VERIFIER_POLICY_H_
#define BUNKER_VERIFIER_POLICY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/glob.h"

namespace bunker::verifier {

struct Rule {
  enum class Effect { kPermit, kForbid };
  std::string id;
  Effect effect = Effect::kPermit;
  std::optional<std::vector<std::string>> sites, regions, storage, requesters, purposes;
  std::optional<std::vector<capsule::PathGlob>> paths;
  std::optional<int64_t> not_before;  // seconds since the epoch, inclusive
  std::optional<int64_t> not_after;   // exclusive
  std::optional<uint32_t> max_opens;  // >= 1

  // Whether the rule states a condition only a site can answer (site, region, storage,
  // maxOpens).
  bool NeedsSite() const { return sites || regions || storage || max_opens; }
};

struct Policy {
  std::vector<Rule> rules;
};

// Parses and validates policy JSON through spec/policy.capnp. kInvalidArgument with the JSON path
// of the first problem, e.g. `$.rules[1].maxOpens: must be at least 1`, for: malformed JSON, an
// unknown field, a wrong type, version other than 1, an empty rule list, an empty or duplicate
// rule id, an unknown effect, an empty condition list, a bad fingerprint, glob or RFC 3339 time,
// notBefore >= notAfter, maxOpens < 1.
absl::StatusOr<Policy> ParsePolicy(std::string_view json);

// Warnings about a valid policy, one line each: e.g. "no rule can ever permit" (no permit rule,
// or every permit rule's time window is empty).
std::vector<std::string> PolicyWarnings(const Policy& policy);

// What a request brings to an evaluation. Fields the caller does not know stay unset; a rule
// that states a condition on an unset field does not match.
struct Request {
  std::optional<std::string> site;
  std::optional<std::string> region;
  std::optional<std::vector<std::string>> storage;
  std::optional<std::string> requester;  // fingerprint text "bk1:..."
  std::optional<std::string> purpose;
  std::vector<std::string> files;        // normalized paths of the files requested
  int64_t now = 0;                       // seconds since the epoch
  uint64_t opens_so_far = 0;             // key releases already counted for this capsule here
};

struct Decision {
  bool permit = false;
  // The rules that decided: for a permit, the permit rules used; for a deny, the forbid rules
  // that matched (may be empty when simply no permit rule matched).
  std::vector<std::string> rules;
  // One line per failing condition or forbid match, e.g.
  // `rule east-training: purpose "eval" is not one of [training]`.
  std::vector<std::string> reasons;
  // Requested files that are not permitted.
  std::vector<std::string> denied_files;
  // Whether a permit used a rule with maxOpens (the caller must count this release).
  bool counts_use = false;
};

// Bounds on the reasons (and rule ids) a decision carries into an audit record or a reply
// (spec/AUDIT.md "Entries"): a policy of many rules with long glob lists, denied for many files,
// can explain itself at length, and the record must still fit in kMaxAuditEntrySize.
inline constexpr size_t kMaxReasonLineSize = 1024;
inline constexpr size_t kMaxReasonsSize = 32 * 1024;

// `lines`, bounded: each line at most kMaxReasonLineSize bytes (cut at a UTF-8 boundary and
// ended with "..."); lines kept in order while their encoded size (the text, its NUL, padding to
// a word and one list pointer, as spec/audit.capnp lays them out) stays within `max_size`; then,
// if any were left out, one line "... N more <what> (see capsule policy explain)". The result's
// encoded size never exceeds max_size + 128.
std::vector<std::string> BoundLines(std::vector<std::string> lines, size_t max_size,
                                    std::string_view what);

// Evaluates `request` against `policy`. Never fails: an evaluation error denies, with a reason.
Decision Evaluate(const Policy& policy, const Request& request);

// Whether the site described by `request` (site, region, storage, now) may hold the capsule at
// all, as a transfer receiver checks before any data moves: some permit rule's site, region,
// storage and time conditions hold. Requester, purpose, paths and maxOpens are for the open to
// decide. `rules` of the result name the admitting rules; `reasons` say why each failed.
Decision AdmitsSite(const Policy& policy, const Request& request);

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_POLICY_H_

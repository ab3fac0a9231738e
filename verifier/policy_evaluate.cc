// Evaluate and AdmitsSite: a request against a policy (spec/POLICY.md "Evaluation").
#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "capsule/paths.h"
#include "crypto/keys.h"
#include "verifier/policy.h"
#include "verifier/policy_internal.h"
#include "capsule/utc.h"

namespace bunker::verifier {
namespace {

using policy_internal::Printable;
using policy_internal::ToString;

// Evaluate: file-specific reasons are given for this many denied files, then summarized, so a
// million-file request cannot produce a million-line decision (denied_files stays complete).
constexpr size_t kMaxDetailedFiles = 20;

// --- Evaluation ---------------------------------------------------------------------------

std::string ListText(const std::vector<std::string>& values) {
  std::vector<std::string> shown;
  for (const std::string& v : values) shown.push_back(Printable(v));
  return absl::StrCat("[", absl::StrJoin(shown, ", "), "]");
}

std::string GlobsText(const std::vector<capsule::PathGlob>& globs) {
  std::vector<std::string> patterns;
  for (const capsule::PathGlob& g : globs) patterns.push_back(g.pattern());
  return ListText(patterns);
}

bool Contains(const std::vector<std::string>& values, const std::string& v) {
  return std::find(values.begin(), values.end(), v) != values.end();
}

std::string Reason(const Rule& rule, std::string_view what) {
  return absl::StrCat("rule ", Printable(rule.id), ": ", std::string(what));
}

// A "one of" condition on a single request value.
void CheckOneOf(const Rule& rule, const char* name,
                const std::optional<std::vector<std::string>>& allowed,
                const std::optional<std::string>& value, std::vector<std::string>* failures) {
  if (!allowed) return;
  if (!value) {
    failures->push_back(Reason(
        rule, absl::StrCat("no ", name, " given; the rule requires one of ", ListText(*allowed))));
  } else if (!Contains(*allowed, *value)) {
    failures->push_back(Reason(rule, absl::StrCat(name, " ", capsule::QuotePath(*value),
                                                  " is not one of ", ListText(*allowed))));
  }
}

// The conditions of `rule` that do not depend on the file, each failing one as a reason line.
std::vector<std::string> FileIndependentFailures(const Rule& rule, const Request& request,
                                                 const std::optional<std::string>& requester) {
  std::vector<std::string> failures;
  CheckOneOf(rule, "site", rule.sites, request.site, &failures);
  CheckOneOf(rule, "region", rule.regions, request.region, &failures);
  if (rule.storage) {
    if (!request.storage) {
      failures.push_back(Reason(rule, absl::StrCat("no storage labels given; the rule requires ",
                                                   ListText(*rule.storage))));
    } else {
      std::vector<std::string> missing;
      for (const std::string& label : *rule.storage) {
        if (!Contains(*request.storage, label)) missing.push_back(label);
      }
      if (!missing.empty()) {
        failures.push_back(Reason(rule, absl::StrCat("storage lacks ", ListText(missing),
                                                     " (site has ",
                                                     ListText(*request.storage), ")")));
      }
    }
  }
  CheckOneOf(rule, "requester", rule.requesters, requester, &failures);
  CheckOneOf(rule, "purpose", rule.purposes, request.purpose, &failures);
  if (rule.not_before && request.now < *rule.not_before) {
    failures.push_back(
        Reason(rule, absl::StrCat("not valid until ", capsule::FormatUtc(*rule.not_before))));
  }
  if (rule.not_after && request.now >= *rule.not_after) {
    failures.push_back(
        Reason(rule, absl::StrCat("expired at ", capsule::FormatUtc(*rule.not_after))));
  }
  if (rule.effect == Rule::Effect::kPermit && rule.max_opens &&
      request.opens_so_far >= *rule.max_opens) {
    failures.push_back(Reason(rule, absl::StrCat("maxOpens ", *rule.max_opens, " reached")));
  }
  return failures;
}

bool PathMatches(const Rule& rule, const std::string& file) {
  if (!rule.paths) return true;
  return std::any_of(rule.paths->begin(), rule.paths->end(),
                     [&](const capsule::PathGlob& g) { return g.MatchesPathOrAncestor(file); });
}

// Ordered, duplicate-free lines.
class Lines {
 public:
  void Add(std::string line) {
    if (seen_.insert(line).second) lines_.push_back(std::move(line));
  }
  std::vector<std::string> Take() { return std::move(lines_); }

 private:
  std::set<std::string> seen_;
  std::vector<std::string> lines_;
};

Decision DenyWith(std::string reason) {
  Decision d;
  d.reasons.push_back(std::move(reason));
  return d;
}

}  // namespace

Decision Evaluate(const Policy& policy, const Request& request) {
  if (request.files.empty()) return DenyWith("the request names no files");
  std::optional<std::string> requester;
  if (request.requester) {
    absl::StatusOr<crypto::Fingerprint> fp = crypto::Fingerprint::Parse(*request.requester);
    if (!fp.ok()) {
      return DenyWith(absl::StrCat("requester ", capsule::QuotePath(*request.requester),
                                   " is not a key fingerprint"));
    }
    requester = fp->ToString();
  }

  // Rule order never matters: rules are visited by id, so the decision, including the order
  // of its lines, is the same for any order of the same rules.
  struct Checked {
    const Rule* rule;
    std::vector<std::string> failures;  // file-independent
  };
  std::vector<Checked> checked;
  for (const Rule& rule : policy.rules) {
    checked.push_back({&rule, FileIndependentFailures(rule, request, requester)});
  }
  std::stable_sort(checked.begin(), checked.end(), [](const Checked& a, const Checked& b) {
    return std::tie(a.rule->id, a.rule->effect) < std::tie(b.rule->id, b.rule->effect);
  });
  const bool any_permit_rule =
      std::any_of(policy.rules.begin(), policy.rules.end(),
                  [](const Rule& r) { return r.effect == Rule::Effect::kPermit; });

  Decision d;
  Lines reasons;
  std::set<std::string> permit_ids, forbid_ids;
  bool counts_use = false;
  size_t detailed = 0;
  for (const std::string& file : request.files) {
    const bool detail = detailed < kMaxDetailedFiles;
    absl::StatusOr<std::string> normalized = capsule::NormalizeEntryPath(file);
    if (!normalized.ok() || *normalized != file) {
      d.denied_files.push_back(file);
      if (detail) {
        ++detailed;
        reasons.Add(absl::StrCat("requested path ", capsule::QuotePath(file),
                                 " is not a normalized relative path"));
      }
      continue;
    }
    std::vector<const Rule*> unlimited, limited, forbidders;
    for (const Checked& c : checked) {
      if (!c.failures.empty() || !PathMatches(*c.rule, file)) continue;
      if (c.rule->effect == Rule::Effect::kForbid) {
        forbidders.push_back(c.rule);
      } else {
        (c.rule->max_opens ? limited : unlimited).push_back(c.rule);
      }
    }
    if (forbidders.empty() && (!unlimited.empty() || !limited.empty())) {
      // Use rules without maxOpens when they suffice, so that a file anyone may open
      // anyway does not spend a limited rule's budget.
      const std::vector<const Rule*>& used = unlimited.empty() ? limited : unlimited;
      for (const Rule* r : used) permit_ids.insert(r->id);
      if (unlimited.empty()) counts_use = true;
      continue;
    }
    d.denied_files.push_back(file);
    if (detail) ++detailed;
    if (!forbidders.empty()) {
      for (const Rule* f : forbidders) {
        // Past the detail cap, each deciding forbid rule is still named once, with a file.
        if (forbid_ids.insert(f->id).second || detail) {
          reasons.Add(Reason(*f, absl::StrCat("forbids ", Printable(file))));
        }
      }
      continue;
    }
    if (!any_permit_rule) {
      reasons.Add("no rule permits: the policy has no permit rule");
      continue;
    }
    for (const Checked& c : checked) {
      if (c.rule->effect != Rule::Effect::kPermit) continue;
      for (const std::string& f : c.failures) reasons.Add(f);
      if (c.failures.empty() && detail) {
        // Only the path can have failed.
        reasons.Add(Reason(*c.rule, absl::StrCat("path ", Printable(file), " is not matched by ",
                                                 GlobsText(*c.rule->paths))));
      }
    }
  }
  if (d.denied_files.empty()) {
    d.permit = true;
    d.rules.assign(permit_ids.begin(), permit_ids.end());
    d.counts_use = counts_use;
    return d;
  }
  d.rules.assign(forbid_ids.begin(), forbid_ids.end());
  if (d.denied_files.size() > detailed) {
    reasons.Add(absl::StrCat("... and ", d.denied_files.size() - detailed,
                             " more denied files (see the denied file list)"));
  }
  d.reasons = reasons.Take();
  return d;
}

std::vector<std::string> BoundLines(std::vector<std::string> lines, size_t max_size,
                                    std::string_view what) {
  // Cost of one text in a Cap'n Proto list: its pointer, its bytes and NUL rounded up to a word.
  auto cost = [](const std::string& s) { return 8 + (s.size() + 1 + 7) / 8 * 8; };
  std::vector<std::string> out;
  size_t used = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string& line = lines[i];
    if (line.size() > kMaxReasonLineSize) {
      size_t cut = kMaxReasonLineSize - 3;
      // Not inside a UTF-8 sequence: back up over continuation bytes.
      while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
      line.resize(cut);
      line += "...";
    }
    if (used + cost(line) > max_size) {
      out.push_back(absl::StrCat("... ", lines.size() - i, " more ", std::string(what),
                                 " (see capsule policy explain)"));
      return out;
    }
    used += cost(line);
    out.push_back(std::move(line));
  }
  return out;
}

Decision AdmitsSite(const Policy& policy, const Request& request) {
  Decision d;
  std::vector<const Rule*> rules;
  for (const Rule& rule : policy.rules) rules.push_back(&rule);
  std::sort(rules.begin(), rules.end(), [](const Rule* a, const Rule* b) { return a->id < b->id; });
  for (const Rule* rule : rules) {
    if (rule->effect != Rule::Effect::kPermit) continue;
    // Only the conditions about the site and the time: the rest is the open's business.
    Rule site_only = *rule;
    site_only.requesters.reset();
    site_only.purposes.reset();
    site_only.max_opens.reset();
    const std::vector<std::string> failures =
        FileIndependentFailures(site_only, request, std::nullopt);
    if (failures.empty()) {
      d.rules.push_back(rule->id);
    } else {
      d.reasons.insert(d.reasons.end(), failures.begin(), failures.end());
    }
  }
  d.permit = !d.rules.empty();
  if (d.permit) d.reasons.clear();
  if (!d.permit && d.reasons.empty()) d.reasons.push_back("the policy has no permit rule");
  return d;
}

}  // namespace bunker::verifier

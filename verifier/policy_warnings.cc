// PolicyWarnings: rules that can never matter (spec/POLICY.md "Warnings").
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "capsule/paths.h"
#include "verifier/policy.h"
#include "verifier/policy_internal.h"

namespace bunker::verifier {
namespace {

using policy_internal::Printable;

// --- Warnings -----------------------------------------------------------------------------

bool HasGlobMeta(std::string_view s) { return s.find_first_of("*?[\\") != std::string_view::npos; }

// The literal directory a pattern covers entirely, when it is one: the pattern without trailing
// "**" components, if no glob character remains ("" for "**": everything). Paths match through
// their ancestors, so "pii" and "pii/**" both cover pii and everything below it.
std::optional<std::string> CoveredPrefix(const capsule::PathGlob& glob) {
  std::string prefix = glob.pattern();
  while (true) {
    while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
    if (prefix == "**") {
      prefix.clear();
    } else if (absl::EndsWith(prefix, "/**")) {
      prefix.resize(prefix.size() - 3);
      continue;
    }
    break;
  }
  if (HasGlobMeta(prefix)) return std::nullopt;
  return prefix;
}

// Whether every path `permit` can match is also matched by `forbid`. Conservative: false when
// unsure.
bool GlobCovers(const capsule::PathGlob& forbid, const capsule::PathGlob& permit) {
  if (forbid.pattern() == permit.pattern()) return true;
  const std::optional<std::string> prefix = CoveredPrefix(forbid);
  if (!prefix) return false;
  if (prefix->empty()) return true;
  const std::string& p = permit.pattern();
  return p == *prefix || absl::StartsWith(p, *prefix + "/");
}

// Whether forbid rule `f` states no condition but paths, so it applies always.
bool OnlyPaths(const Rule& f) {
  return !f.sites && !f.regions && !f.storage && !f.requesters && !f.purposes && !f.not_before &&
         !f.not_after;
}

bool RuleCovers(const Rule& forbid, const Rule& permit) {
  if (!OnlyPaths(forbid)) return false;
  if (!forbid.paths) return true;
  if (!permit.paths) {
    return std::any_of(forbid.paths->begin(), forbid.paths->end(), [](const capsule::PathGlob& g) {
      const std::optional<std::string> prefix = CoveredPrefix(g);
      return prefix && prefix->empty();
    });
  }
  return std::all_of(permit.paths->begin(), permit.paths->end(), [&](const capsule::PathGlob& p) {
    return std::any_of(forbid.paths->begin(), forbid.paths->end(),
                       [&](const capsule::PathGlob& f) { return GlobCovers(f, p); });
  });
}

}  // namespace

std::vector<std::string> PolicyWarnings(const Policy& policy) {
  std::vector<std::string> warnings;
  size_t permits = 0, dead = 0;
  for (const Rule& p : policy.rules) {
    if (p.effect != Rule::Effect::kPermit) continue;
    ++permits;
    if (p.not_before && p.not_after && *p.not_before >= *p.not_after) {
      warnings.push_back(absl::StrCat("rule ", Printable(p.id),
                                      " can never permit: its time window is empty"));
      ++dead;
      continue;
    }
    for (const Rule& f : policy.rules) {
      if (f.effect == Rule::Effect::kForbid && RuleCovers(f, p)) {
        warnings.push_back(absl::StrCat("rule ", Printable(p.id), " can never permit: rule ",
                                        Printable(f.id), " forbids every path it covers"));
        ++dead;
        break;
      }
    }
  }
  // A request that does not state a requester or purpose matches no rule that names one, forbid
  // rules included (POLICY.md "Evaluation"): such a forbid rule only binds honest requests.
  for (const Rule& f : policy.rules) {
    if (f.effect != Rule::Effect::kForbid) continue;
    if (f.requesters || f.purposes) {
      warnings.push_back(absl::StrCat(
          "rule ", Printable(f.id), " forbids only requests that name ",
          f.requesters ? "a listed requester" : "a listed purpose",
          "; one that names none is not forbidden by it (forbid by path, or permit narrowly)"));
    }
  }
  if (permits == 0) {
    warnings.push_back("no rule can ever permit: the policy has no permit rule");
  } else if (dead == permits) {
    warnings.push_back("no rule can ever permit: every permit rule is blocked (see above)");
  }
  return warnings;
}

}  // namespace bunker::verifier

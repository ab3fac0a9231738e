// libFuzzer target: the policy parser (spec/POLICY.md "Validation") and the evaluator.
// Any input must be rejected with a one-line error that names a JSON path, or, if it parses,
// yield warnings and a decision without failing, the same for the rules in reverse order.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "verifier/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bunker::verifier;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<Policy> policy = ParsePolicy(text);
  if (!policy.ok()) {
    const absl::string_view m = policy.status().message();
    if (policy.status().code() != absl::StatusCode::kInvalidArgument || m.empty() ||
        m[0] != '$' || m.find('\n') != absl::string_view::npos) {
      std::abort();
    }
    return 0;
  }
  (void)PolicyWarnings(*policy);
  Request r;
  r.site = "site-b";
  r.region = "cn-east-1";
  r.storage = std::vector<std::string>{"encrypted-at-rest"};
  r.purpose = "training";
  r.files = {"train/a.txt", "pii/names.csv", "README"};
  r.now = 1767225600;
  r.opens_so_far = 2;
  const Decision d = Evaluate(*policy, r);
  std::reverse(policy->rules.begin(), policy->rules.end());
  const Decision e = Evaluate(*policy, r);
  if (d.permit != e.permit || d.rules != e.rules || d.reasons != e.reasons ||
      d.denied_files != e.denied_files || d.counts_use != e.counts_use) {
    std::abort();  // rule order must never matter
  }
  if (d.permit != d.denied_files.empty()) std::abort();
  return 0;
}

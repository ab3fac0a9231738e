// The minimal check seal applies to a policy before binding it: well-formed JSON whose top level
// is an object. Evaluating policies is verifier/'s job.
#ifndef BUNKER_CAPSULE_POLICY_TEXT_H_
#define BUNKER_CAPSULE_POLICY_TEXT_H_

#include <string_view>

#include "absl/status/status.h"

namespace bunker::capsule {

// kInvalidArgument "policy is not valid JSON: ..." or "policy must be a JSON object".
absl::Status CheckPolicyJson(std::string_view text);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_POLICY_TEXT_H_

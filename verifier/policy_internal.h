// Small helpers shared by the policy's parser (policy.cc) and evaluator (policy_evaluate.cc);
// not part of the API.
#ifndef BUNKER_VERIFIER_POLICY_INTERNAL_H_
#define BUNKER_VERIFIER_POLICY_INTERNAL_H_

#include <algorithm>
#include <string>
#include <string_view>

#include "capsule/paths.h"
#include "kj/string.h"

namespace bunker::verifier::policy_internal {

inline std::string ToString(kj::StringPtr s) { return std::string(s.cStr(), s.size()); }

inline bool HasControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// A path or value for a reason line: as is when plainly printable, quoted and escaped otherwise.
inline std::string Printable(std::string_view s) {
  const bool plain = !s.empty() && !HasControl(s) &&
                     s.find_first_of("\"\\ ") == std::string_view::npos;
  return plain ? std::string(s) : capsule::QuotePath(s);
}

}  // namespace bunker::verifier::policy_internal

#endif  // BUNKER_VERIFIER_POLICY_INTERNAL_H_

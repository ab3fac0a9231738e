#include "capsule/policy_text.h"

#include "absl/strings/str_cat.h"
#include "capnp/compat/json.h"
#include "capnp/message.h"
#include "capsule/format.h"

namespace bunker::capsule {

absl::Status CheckPolicyJson(std::string_view text) {
  if (text.size() > kMaxPolicySize) {
    return absl::InvalidArgumentError(absl::StrCat("policy exceeds ", kMaxPolicySize, " bytes"));
  }
  try {
    capnp::JsonCodec codec;
    codec.setMaxNestingDepth(32);
    capnp::MallocMessageBuilder builder;
    auto root = builder.initRoot<capnp::JsonValue>();
    codec.decodeRaw(kj::ArrayPtr<const char>(text.data(), text.size()), root);
    if (!root.isObject()) return absl::InvalidArgumentError("policy must be a JSON object");
  } catch (const kj::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy is not valid JSON (", e.getDescription().cStr(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace bunker::capsule

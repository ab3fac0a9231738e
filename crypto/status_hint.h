// Hints carried inside an absl::Status: what the user can do about an error, set where the error
// is made and printed by the CLI as a "hint:" line (README "Exit status"). A payload, not text
// in the message, so that no caller has to recognise an error by its wording.
#ifndef BUNKER_CRYPTO_STATUS_HINT_H_
#define BUNKER_CRYPTO_STATUS_HINT_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/cord.h"

namespace bunker {

// The payload type URL of a hint (absl::Status::SetPayload). Its value is one line of UTF-8.
inline constexpr char kHintTypeUrl[] = "type.bunker/hint";

// `status` with `hint` attached; an OK status stays as it is (Abseil keeps no payload on OK).
inline absl::Status WithHint(absl::Status status, std::string_view hint) {
  status.SetPayload(kHintTypeUrl, absl::Cord(std::string(hint)));
  return status;
}

// The hint WithHint attached, or "" if there is none.
inline std::string HintOf(const absl::Status& status) {
  const auto hint = status.GetPayload(kHintTypeUrl);
  return hint ? std::string(*hint) : std::string();
}

}  // namespace bunker

#endif  // BUNKER_CRYPTO_STATUS_HINT_H_

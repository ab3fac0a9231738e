// libFuzzer target: identity PEM parsing (crypto/keys.h), and the fast path that reads the
// layout keygen writes without OpenSSL (crypto/raw_key_pem.h). Any input is either parsed or
// refused with kInvalidArgument; whatever the fast path accepts, OpenSSL reads to the same keys
// (the same text with CRLF line ends, which only OpenSSL takes).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "crypto/keys.h"
#include "crypto/raw_key_pem.h"

namespace {

std::string Crlf(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += '\r';
    out += c;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bunker::crypto;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  absl::StatusOr<Identity> id = Identity::FromPem(text);
  if (!id.ok() && id.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  if (raw_key_pem::DecodePrivate(text).has_value()) {
    absl::StatusOr<Identity> slow = Identity::FromPem(Crlf(text));
    if (!id.ok() || !slow.ok() || !(slow->public_identity() == id->public_identity()) ||
        slow->Sign({}) != id->Sign({})) {
      std::abort();
    }
  }

  absl::StatusOr<PublicIdentity> pub = PublicIdentity::FromPem(text);
  if (!pub.ok() && pub.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  if (raw_key_pem::DecodePublic(text).has_value()) {
    absl::StatusOr<PublicIdentity> slow = PublicIdentity::FromPem(Crlf(text));
    if (!pub.ok() || !slow.ok() || !(*slow == *pub)) std::abort();
  }
  return 0;
}

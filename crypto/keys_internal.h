// Helpers shared by keys.cc and key_wrap.cc; not part of the API.
#ifndef BUNKER_CRYPTO_KEYS_INTERNAL_H_
#define BUNKER_CRYPTO_KEYS_INTERNAL_H_

#include <cstdint>

#include "absl/types/span.h"

namespace bunker::crypto::keys_internal {

// An empty absl::Span may have data() == nullptr; C libraries get a valid pointer regardless.
inline const uint8_t* NonNull(absl::Span<const uint8_t> bytes) {
  static const uint8_t kEmpty = 0;
  return bytes.empty() ? &kEmpty : bytes.data();
}

}  // namespace bunker::crypto::keys_internal

#endif  // BUNKER_CRYPTO_KEYS_INTERNAL_H_

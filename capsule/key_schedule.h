// FORMAT.md "Key schedule": from the random per-capsule data key to the chunk AEAD key and the
// key commitment. Both bind the format version, suite, chunk size and capsule id, so a reader
// that is fed a different suite or chunk size derives different keys and fails closed.
//   params     = u16 BE version || u16 BE suite || u32 BE chunk size || capsule id
//   payloadKey = HKDF-SHA256(ikm = dataKey, salt = capsule id, info = kPayloadKeyLabel || 0 || params)
//   commitment = HKDF-SHA256(ikm = dataKey, salt = capsule id, info = kCommitmentLabel || 0 || params)
#ifndef BUNKER_CAPSULE_KEY_SCHEDULE_H_
#define BUNKER_CAPSULE_KEY_SCHEDULE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "capsule/manifest.h"
#include "crypto/aead.h"
#include "crypto/secret.h"

namespace bunker::capsule {

struct PayloadKeys {
  std::unique_ptr<crypto::Aead> aead;  // the chunk cipher
  crypto::Sha256Digest commitment{};
};

// Derives the keys for `manifest`'s version, suite, chunk size and capsule id.
absl::StatusOr<PayloadKeys> DerivePayloadKeys(const crypto::SecretBytes& data_key,
                                              const Manifest& manifest);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_KEY_SCHEDULE_H_

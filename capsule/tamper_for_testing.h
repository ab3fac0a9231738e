// Test-only tools to take a capsule apart and put it back together, optionally re-signing a
// modified manifest: they model splicers and malicious issuers for tests and spec/vectors.
// Never linked into the programs.
#ifndef BUNKER_CAPSULE_TAMPER_FOR_TESTING_H_
#define BUNKER_CAPSULE_TAMPER_FOR_TESTING_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/manifest.h"
#include "crypto/keys.h"

namespace bunker::capsule::testing {

// The regions of a capsule file (FORMAT.md "Layout").
struct Parts {
  std::vector<uint8_t> header, chunks, table, manifest, signature, footer;
};

// Splits a well-formed capsule (the manifest must decode).
absl::StatusOr<Parts> Split(const std::vector<uint8_t>& capsule);
std::vector<uint8_t> Join(const Parts& parts);

// Decodes the manifest, applies `mutate`, re-encodes, re-signs with `signer` and fixes the
// footer: an attacker who holds `signer`'s key.
absl::StatusOr<std::vector<uint8_t>> Resign(const std::vector<uint8_t>& capsule,
                                            const crypto::Identity& signer,
                                            const std::function<void(Manifest&)>& mutate);

}  // namespace bunker::capsule::testing

#endif  // BUNKER_CAPSULE_TAMPER_FOR_TESTING_H_

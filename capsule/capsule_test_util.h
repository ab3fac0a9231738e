// Shared fixtures for capsule/ tests: temporary trees, identities, in-memory capsules, and a
// way to rewrite and re-sign a capsule's manifest to model a malicious issuer or splicer.
#ifndef BUNKER_CAPSULE_CAPSULE_TEST_UTIL_H_
#define BUNKER_CAPSULE_CAPSULE_TEST_UTIL_H_

#include <functional>
#include <string>
#include <vector>

#include "capsule/manifest.h"
#include "capsule/tamper_for_testing.h"
#include "capsule/writer.h"
#include "crypto/keys.h"

namespace bunker::capsule::testing {

// A fresh empty directory under the test's temporary directory.
std::string MakeTempDir();
void WriteFile(const std::string& path, const std::string& contents, int mode = 0644);
std::string ReadFile(const std::string& path);
bool Exists(const std::string& path);
// Names in a directory (not recursive), sorted, without "." and "..".
std::vector<std::string> ListDir(const std::string& path);
// Deterministic pseudo-random bytes.
std::vector<uint8_t> PatternBytes(size_t n, uint32_t seed);

struct Keys {
  crypto::Identity issuer = crypto::Identity::Generate();
  crypto::Identity alice = crypto::Identity::Generate();
  crypto::Identity bob = crypto::Identity::Generate();
  crypto::Identity mallory = crypto::Identity::Generate();
};

// Seals raw payload bytes (no archive) with the low-level writer; `archive_size` bytes of the
// payload count as the archive.
std::vector<uint8_t> SealRaw(const Keys& keys, const std::vector<uint8_t>& payload,
                             uint32_t chunk_size = 4096,
                             crypto::Suite suite = crypto::Suite::kAes256Gcm, int threads = 2,
                             const std::string& policy = "");

// Seals a directory as `capsule seal` does, to bytes in memory, with `policy` (JSON, "" for
// none).
std::vector<uint8_t> SealDirectory(const Keys& keys, const std::string& dir,
                                   uint32_t chunk_size = 4096, const std::string& policy = "");

// Split/Resign that fail the test instead of returning a status.
Parts MustSplit(const std::vector<uint8_t>& capsule);
std::vector<uint8_t> MustResign(const std::vector<uint8_t>& capsule, const crypto::Identity& signer,
                            const std::function<void(Manifest&)>& mutate);

}  // namespace bunker::capsule::testing

#endif  // BUNKER_CAPSULE_CAPSULE_TEST_UTIL_H_

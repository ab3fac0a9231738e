// Identity and trust files on disk (`NAME.key` / `NAME.pub`, PEM; see crypto/keys.h).
#ifndef BUNKER_CAPSULE_KEY_FILES_H_
#define BUNKER_CAPSULE_KEY_FILES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/keys.h"

namespace bunker::capsule {

// Writes `base`.key (mode 0600) and `base`.pub (0644). Refuses (kAlreadyExists) if either
// exists; never leaves a half-written key behind.
absl::Status WriteIdentityFiles(const crypto::Identity& identity, const std::string& base);

// Loads a private identity. kPermissionDenied if the file is readable or writable by group or
// others (as ssh does); kInvalidArgument if it is not a Bunker private key. The file's bytes
// pass only through guarded memory and never appear in errors.
absl::StatusOr<crypto::Identity> LoadIdentity(const std::string& path);

// Loads a public identity file.
absl::StatusOr<crypto::PublicIdentity> LoadPublicIdentity(const std::string& path);

// Loads trusted issuers: each path is a .pub file or a directory whose *.pub files are loaded.
// kInvalidArgument if nothing is loaded from a directory; errors name the bad file.
absl::StatusOr<std::vector<crypto::PublicIdentity>> LoadTrust(
    const std::vector<std::string>& paths);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_KEY_FILES_H_

// The client side of the local verifier protocol (site/service.h): what `capsule open/ls/cat/
// policy explain --site` do when the site file names a socket. The client holds no site key; it
// passes the capsule as an open descriptor and proves --as by signing the service's challenge.
#ifndef BUNKER_SITE_CLIENT_H_
#define BUNKER_SITE_CLIENT_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/file_index.h"
#include "crypto/keys.h"
#include "site/protocol.h"

namespace bunker::site {

struct ServiceCall {
  WireRequest request;
  int capsule_fd = -1;  // open for reading; stays the caller's
  int output_fd = -1;   // cat, --to-tar -: stays the caller's
  std::vector<int> mount_fds;  // mount: /dev/fuse and fusermount3's socket; stay the caller's
  const crypto::Identity* requester = nullptr;            // --as with a private key: signs
  std::optional<crypto::PublicIdentity> requester_public;  // explain with a .pub: unsigned
  std::function<void(uint64_t done, uint64_t total)> progress;
  std::function<absl::Status(const std::vector<capsule::FileEntry>&)> entries;
  std::function<absl::Status(const std::vector<MountInfo>&)> mounts;
  std::function<bool()> cancelled;  // true: hang up, which cancels the request at the service
};

// Asks the service at `socket_path`. The service's own answer (permit, deny, error) is in the
// result's status; an error here is about reaching it: kUnavailable "cannot reach the site's
// verifier at PATH: ..." or "... closed the connection", kCancelled when `cancelled` said so
// ("interrupted; nothing was written", or "interrupted after N bytes were written to the
// output" when the service had written part of it: counted by the relay, or as the growth of
// an output that is a regular file).
absl::StatusOr<WireResult> CallService(const std::string& socket_path, const ServiceCall& call);

}  // namespace bunker::site

#endif  // BUNKER_SITE_CLIENT_H_

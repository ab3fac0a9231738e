// One request to a site's verifier, as `capsule open/ls/cat/policy explain` make it: the same
// code serves it whether the verifier service runs it for a local client (site/service.h) or the
// operator's own process runs it with the site key (direct mode) or a recipient runs it offline.
#ifndef BUNKER_SITE_REQUEST_H_
#define BUNKER_SITE_REQUEST_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/beneath.h"
#include "capsule/file_index.h"
#include "capsule/io.h"
#include "site/gate.h"
#include "verifier/policy.h"

namespace bunker::site {

enum class Command { kOpen, kToTar, kCat, kLs, kExplain, kMount, kMounts };

// "open", "to-tar", "cat", "ls", "explain", "mount", "mounts".
const char* CommandName(Command command);

struct SiteRequest {
  Command command = Command::kOpen;
  Requester who;
  std::vector<std::string> only;  // open, explain
  std::string destination;        // open; to-tar into a file (empty: into output_fd)
  std::string path;               // cat
  int output_fd = -1;             // cat; to-tar into a stream
  int threads = 0;                // 0: all cores
  int64_t now = 0;
  std::optional<capsule::FileOwner> owner;  // give released files to this user
  std::optional<Rights> acting_for;         // the requester's rights bound its destinations
  std::function<void(uint64_t done, uint64_t total)> progress;
  std::function<bool()> cancelled;
  // mount: the permitted tree, handed over to be served (the permit is recorded already).
  std::function<absl::Status(std::unique_ptr<MountedCapsule>)> mounted;
  MountOptions mount;
  // mount, on the client's side: the kernel mount's descriptors (site/mount.h) to pass.
  std::vector<int> mount_fds;
  std::string mountpoint;
  // ls: the permitted entries, in batches.
  std::function<absl::Status(const std::vector<capsule::FileEntry>&)> entries;
};

// What a request did. An explain carries its decision whether it permits or not; every other
// command returns a deny as kPermissionDenied instead.
struct Outcome {
  std::string capsule_id;
  verifier::Decision decision;
  std::string requester;  // fingerprint, "" for none
  uint64_t files = 0;     // open: extracted; explain: requested; mount: entries served
  uint64_t directories = 0;
  uint64_t symlinks = 0;
  uint64_t bytes = 0;     // open: file contents; to-tar, cat: bytes written
  int64_t not_after = 0;  // mount: when it ends by itself (0: never)
};

// Limits on what a request may bring, so that every decision fits one audit record.
absl::Status CheckRequestLimits(const SiteRequest& request);

// Serves `request` on `capsule` (named `capsule_name` in errors) through `gate`. Destinations
// are resolved against the gate's site (ResolveDestination), or, offline, LocalDestination.
absl::StatusOr<Outcome> HandleRequest(const Gate& gate,
                                      std::unique_ptr<capsule::RandomAccessFile> capsule,
                                      const std::string& capsule_name, const SiteRequest& request);

}  // namespace bunker::site

#endif  // BUNKER_SITE_REQUEST_H_

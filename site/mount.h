// `capsule mount`: a capsule's permitted files as a read-only FUSE file system served by the
// site's verifier (spec/VERIFIER.md "Mounts"). Two halves:
//
//  - The user's side (MountFuseDevice, UnmountFuse): the user's own process has the kernel mount
//    made by fusermount3 (setuid; root runs it too), so that the mount belongs to the user and,
//    without allow_other, only the user's uid can enter it. fusermount3 runs with auto_unmount:
//    it stays in the background holding the mount until the other end of its socket ("comm")
//    closes, then detaches the mount. Both descriptors (/dev/fuse and comm) go to the service.
//  - The service's side (FuseServer): it serves the FUSE protocol on the passed /dev/fuse
//    descriptor from a MountedCapsule (the gate's release) on several threads, and ends the mount
//    itself (closing both descriptors, so that fusermount3 detaches it) when asked, when the
//    permit's time window closes, or when the daemon stops. A daemon killed outright closes
//    them too: the mount point is then dead (ENOTCONN) until fusermount3 has detached it.
//
// The kernel mount exists from MountFuseDevice on, but it answers nothing (every access waits)
// until the service decided, recorded the permit and started serving; a deny closes it.
#ifndef BUNKER_SITE_MOUNT_H_
#define BUNKER_SITE_MOUNT_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "capsule/fd.h"
#include "site/mounted_capsule.h"

namespace bunker::site {

// The two descriptors of a fresh kernel mount.
struct FuseDevice {
  capsule::Fd fuse;  // /dev/fuse, connected to the mount
  capsule::Fd comm;  // fusermount3's socket: closing every copy of it detaches the mount
};

// Mounts an empty FUSE file system at `mountpoint` (an existing directory the caller may mount
// on) with fusermount3: read-only, nosuid, nodev, default_permissions, auto_unmount, named
// "bunker" with subtype `subtype`. kUnavailable when fusermount3 is missing; kFailedPrecondition
// with fusermount3's own message when it refuses (not permitted, not a directory, ...).
absl::StatusOr<FuseDevice> MountFuseDevice(const std::string& mountpoint,
                                           const std::string& subtype);

// Detaches the FUSE mount at `mountpoint` (fusermount3 -u; `lazy`: -z). kFailedPrecondition
// with its message when it fails (not mounted, not the caller's).
absl::Status UnmountFuse(const std::string& mountpoint, bool lazy);

// Whether `fd` is a descriptor of /dev/fuse.
bool IsFuseDevice(int fd);

struct FuseServeOptions {
  int threads = 4;        // FUSE worker threads
  uid_t uid = 0;          // owner shown for every entry (the requester)
  gid_t gid = 0;
  // Called once, on the server's own thread, after the mount ended and the descriptors were
  // closed, with why it ended ("unmounted", "notAfter", "stopped", ...) and the capsule (its
  // final usage). Must not destroy the server.
  std::function<void(const std::string& why, const MountedCapsule& capsule)> ended;
};

// Serves one mount. Thread-safe.
class FuseServer {
 public:
  // Takes both descriptors; serving starts at once (the kernel's INIT included).
  static absl::StatusOr<std::unique_ptr<FuseServer>> Start(
      std::unique_ptr<MountedCapsule> capsule, FuseDevice device, FuseServeOptions options);
  // Ends the mount (if still live) and waits for its threads.
  ~FuseServer();

  // Asks the mount to end: reads fail from now on, the kernel's page cache of its files is
  // dropped, both descriptors are closed. Returns at once.
  void End(const std::string& why);
  bool ended() const;
  const MountedCapsule& capsule() const;

  struct Impl;  // defined and used only in mount.cc (the FUSE callbacks reach it)

 private:
  explicit FuseServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_MOUNT_H_

// The site's verifier service (spec/VERIFIER.md): the site daemon's Unix socket through which
// local users ask for capsules to be opened, listed, read or explained. The service alone holds
// the site key, the state folder and the release: a user needs to read the site file and the
// capsule, never the key.
//
// Per connection: the peer's uid, gid and pid come from the socket (SO_PEERCRED); the service
// sends a fresh challenge; the client sends one request with the capsule as an open descriptor
// (the service never opens a path a user names) and, for cat and --to-tar -, an output
// descriptor; a requester key (--as) must sign the challenge and the request. Files released
// into a destination are given to the requesting uid and gid. Each request runs on its own
// thread; at most `max_requests` at once and `max_per_uid` per uid, the rest are refused with
// kResourceExhausted. A client that hangs up cancels its request (staging is removed).
// A mount (site/mount.h) outlives its request: the service serves it until it is unmounted, its
// permit's time window closes or the service stops, then appends its summary to the audit log.
#ifndef BUNKER_SITE_SERVICE_H_
#define BUNKER_SITE_SERVICE_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/io.h"
#include "capsule/s3_client.h"
#include "crypto/keys.h"
#include "site/site_config.h"

namespace bunker::site {

struct ServiceOptions {
  const SiteConfig* site = nullptr;             // must outlive the service
  const crypto::Identity* identity = nullptr;   // the site key; must outlive the service
  std::vector<crypto::PublicIdentity> trusted;  // issuers
  // The requester each local uid stands for when it gives no --as (site file "users").
  std::map<uid_t, crypto::PublicIdentity> users;
  // Asked before every request: non-OK refuses it with that status (e.g. a witness saw a newer
  // checkpoint of this site than its own log holds). May be empty.
  std::function<absl::Status()> healthy;
  std::function<void(const std::string&)> log;  // one line per request; may be empty
  size_t max_requests = 32;
  size_t max_per_uid = 4;
  int request_timeout_seconds = 30;  // for a client to send its request
  // Mounts (site/mount.h): the decrypted-chunk cache one uid's mounts may hold together, what
  // all uids' mounts may hold together (0: 4 x mount_cache_bytes), the FUSE threads of each
  // mount, and how many live mounts one uid may hold.
  uint64_t mount_cache_bytes = uint64_t{256} << 20;
  uint64_t mount_cache_total_bytes = 0;
  int mount_threads = 4;
  size_t max_mounts_per_uid = 16;
  // Opens an object of the site's S3 store with the daemon's credentials. A request may name one
  // (RequestBody.capsuleUrl) instead of passing a descriptor; the service first checks that it
  // lies inside the site file's "store" (StoreObjectOf). Empty: such requests are refused. (A
  // capsule of a store folder, "<id>.capsule", the service opens itself: OpenStoreFile.)
  // `cancelled` (thread-safe) answers true once the request is to stop (the service stops, its
  // client hung up): reads of the object should then end soon (s3::OpenObject's `cancelled`).
  std::function<absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>>(
      const capsule::s3::Location&, std::function<bool()> cancelled)>
      open_store_object;
};

// The location of `url` if it names an object inside `site`'s S3 store ("store":
// "s3://BUCKET/PREFIX": the same bucket, a key under PREFIX/); kPermissionDenied naming the store
// otherwise (another bucket or prefix, or a site whose store is not in S3), kInvalidArgument for
// a malformed URL.
absl::StatusOr<capsule::s3::Location> StoreObjectOf(const SiteConfig& site,
                                                    const std::string& url);

// The capsule `name` of `site`'s own store folder, opened for reading with the daemon's rights,
// for a user who names it (RequestBody.capsuleUrl, spec/VERIFIER.md "Capsules in the site's
// store"): `name` must be exactly "<capsule id>.capsule" (32 lowercase hex characters), a regular
// file directly in the folder of "store", reached without following a symbolic link
// (capsule::OpenBeneath). No other file can be named: not a path, not "..", not the store's
// .incoming, not a link planted in the store. kPermissionDenied naming the store for any other
// name, a symbolic link, or a site whose store is in S3; kNotFound when the store does not hold
// the capsule; kInvalidArgument when the name is not a regular file.
absl::StatusOr<capsule::Fd> OpenStoreFile(const SiteConfig& site, const std::string& name);

// Loads the site file's "users" (user name -> public key file) into uids. Unknown users are
// kInvalidArgument naming them.
absl::StatusOr<std::map<uid_t, crypto::PublicIdentity>> LoadUsers(const SiteConfig& site);

class VerifierService {
 public:
  // Binds the site's socket (replacing a stale socket file, never anything else), makes it
  // connectable by anyone (access is governed by its folder's permissions, see
  // spec/VERIFIER.md "Deployment") and starts accepting. kInvalidArgument without a socket path,
  // kUnavailable if it cannot listen.
  static absl::StatusOr<std::unique_ptr<VerifierService>> Start(ServiceOptions options);
  // Stops accepting, cancels running requests and waits for them.
  ~VerifierService();

 private:
  struct Impl;
  explicit VerifierService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_SERVICE_H_

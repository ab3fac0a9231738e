// The stores capsule bytes live in (spec/STORE.md): a site's received capsules, behind one
// interface with two implementations, a local folder (this file) and an S3 bucket
// (capsule/s3_store.h).
//
// A store holds complete, verified capsules under their id, and capsules being received
// (IncomingCapsule, capsule/incoming.h) that appear under their id only complete. Ids are the
// manifest's capsule id in lowercase hex (32 characters, capsule::Manifest::IdHex).
//
// Threading: the methods of one Store may be called from several threads at once.
#ifndef BUNKER_CAPSULE_STORE_H_
#define BUNKER_CAPSULE_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capsule/incoming.h"
#include "capsule/io.h"
#include "crypto/keys.h"

namespace bunker::capsule {

// Whether `id` is a capsule id as a store names it: 32 lowercase hex characters.
bool IsCapsuleId(const std::string& id);

class Store {
 public:
  virtual ~Store() = default;

  // What the store is, for logs: the folder's path or "s3://BUCKET/PREFIX". Never a secret.
  virtual std::string Describe() const = 0;

  // The stored capsule `id`, to read: kNotFound when the store does not hold it (a capsule
  // being received is not held). The bytes are those stored: a reader checks them as always.
  virtual absl::StatusOr<std::unique_ptr<RandomAccessFile>> Open(const std::string& id) = 0;

  // The ids of the capsules stored, sorted; names that are not capsule ids are skipped. An
  // empty list for a store that does not exist yet.
  virtual absl::StatusOr<std::vector<std::string>> List() = 0;

  // Checks the prelude (capsule::CheckPrelude: kDataLoss, kInvalidArgument, kPermissionDenied)
  // and creates or resumes the capsule's durable partial form and its journal. Resuming
  // requires the same prelude byte for byte (kDataLoss otherwise). kAlreadyExists if the store
  // already holds the capsule. Error texts may reach a peer: no local paths in them.
  virtual absl::StatusOr<std::unique_ptr<IncomingCapsule>> Begin(
      const Prelude& prelude, absl::Span<const crypto::PublicIdentity> trusted) = 0;

  // Whether only this site's daemon can put capsules in the store (a folder only it may write),
  // so that every capsule listed was received by it: the depot then records a receipt at start
  // for each one that lacks it. False for an S3 bucket, which others may write to: what is found
  // there is never put on record (spec/STORE.md "Receipts").
  virtual bool OnlyItsDaemonWrites() const { return true; }

  // At start, before serving: cleans up what a crash left (for S3, abandoned uploads). Returns
  // one line per action, for the log.
  virtual absl::StatusOr<std::vector<std::string>> Recover() { return std::vector<std::string>(); }
};

// The local-folder store: ID.capsule in `folder`, partial capsules in `folder`/.incoming
// (spec/STORE.md "Local folder"). The folder is created (0700) when the first capsule arrives;
// it must be the daemon's own (no other user may write to it: spec/TRANSFER.md "Push"), and
// an offer is refused before anything is written unless the capsule fits on its file system
// with `keep_free` bytes to spare (LocalIncoming::Begin).
std::shared_ptr<Store> MakeLocalStore(std::string folder, uint64_t keep_free = 0);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_STORE_H_

// The destination side of extraction (capsule/extract.h): where the tree goes, and the private
// directory it is built in until it is renamed there. Everything is done relative to directory
// descriptors, never following a symlink (capsule/beneath.h).
#ifndef BUNKER_CAPSULE_STAGING_H_
#define BUNKER_CAPSULE_STAGING_H_

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capsule/beneath.h"
#include "capsule/fd.h"
#include "capsule/tree_writer.h"

namespace bunker::capsule {

// Where the extracted tree goes, settled before the first byte is read.
struct Destination {
  Fd parent;  // O_PATH descriptor of the destination's parent
  std::string base;
  bool replace = false;  // an empty directory is there already
  mode_t replaced_mode = 0;
};

// Checks `relative` below `root_fd` as a destination: it must not exist, or be an empty
// directory (not a symlink to one). Its missing parents are made with MakeDirsBeneath, 0755
// and the process's own (never given away: a name a user can swap is never chowned), recorded
// in `created`. `display` names the destination in errors. With `owner` (a release for
// another user), an empty directory there is replaced only when it is the owner's. Codes:
// kInvalidArgument for a bad path, kAlreadyExists when something else is there,
// kPermissionDenied for a symlink on the way or another user's directory, else the errno's
// code.
absl::StatusOr<Destination> PrepareDestination(int root_fd, const std::string& relative,
                                               const std::string& display,
                                               CreatedDirs* created,
                                               const std::optional<FileOwner>& owner);

// The private staging directory ".<base>.bunker-XXXXXX" (0700, ours) beside the destination,
// with the tree's root inside it. The destructor removes it and, unless Commit() succeeded,
// everything in it (RemoveContentsBeneath through the descriptor of the root). Not movable.
class Staging {
 public:
  Staging() = default;
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  ~Staging();

  // Makes the staging directory in `d.parent` (which must outlive this) and the root inside it
  // (given to `owner`). kPermissionDenied if the directory was swapped for one that is not ours
  // and private while being made.
  absl::Status Create(const Destination& d, const std::string& display,
                      const std::optional<FileOwner>& owner);

  // The writer of the tree; valid after a successful Create().
  TreeWriter* writer() { return &*writer_; }

  // Moves the root to the destination, between descriptors: renameat2(RENAME_NOREPLACE) for a
  // new destination, renameat over the empty directory being replaced (rename(2) refuses a
  // non-empty one). kAlreadyExists when something else is there by now.
  absl::Status Commit(const Destination& d, const std::string& display);

 private:
  int parent_ = -1;
  std::string name_;
  Fd dir_;
  std::optional<TreeWriter> writer_;
  bool committed_ = false;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_STAGING_H_

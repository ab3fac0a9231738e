// Walks a directory tree that others may be changing, for sealing it: every entry is listed,
// entered and opened relative to a descriptor of the directory that holds it, never by a path
// and never through a symbolic link, so nothing outside the tree can be read through the walk.
//
// What a caller may rely on:
//  - The walk starts from a directory the caller opened; it never resolves a path from the
//    current directory or from the root. Each entry is listed with readdir and described by
//    fstatat(AT_SYMLINK_NOFOLLOW): a symlink is an entry of its own, never followed.
//  - A subdirectory is entered with openat(O_DIRECTORY | O_NOFOLLOW) and must still be the
//    directory that was listed (same device and inode): a directory swapped for a symlink,
//    another directory or a file between listing and entering ends the walk with kAborted
//    "\"PATH\" changed while it was being sealed". OpenListedFile checks files the same way.
//  - Order (that of libarchive's disk reader, which sealing used before; FORMAT.md section 10
//    leaves it unspecified): a directory's entries in readdir order, each visited as it is
//    listed; then its subdirectories, last listed first, each walked the same way.
//  - An entry that disappears between readdir and fstatat is skipped (it was removed while the
//    walk ran). Any other failure names the path (relative to the root) with its errno's code
//    (capsule/io.h ErrnoCode), e.g. kPermissionDenied for a directory that may not be read.
//  - Memory: the names of the subdirectories listed but not yet walked, on the current path
//    (as libarchive's walk held them). Descriptors: at most kHeldDirectories + 3 at a time
//    whatever the depth; a deeper directory is closed while its subdirectories are walked and
//    reopened from its held ancestor afterwards, checking each directory on the way again.
#ifndef BUNKER_CAPSULE_TREE_WALK_H_
#define BUNKER_CAPSULE_TREE_WALK_H_

#include <sys/stat.h>

#include <cstddef>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capsule/fd.h"

namespace bunker::capsule {

// One listed entry, valid during the visit only.
struct WalkEntry {
  int dir_fd;               // the directory that holds it
  const std::string& name;  // its name in that directory
  const std::string& path;  // relative to the root, '/'-separated, not normalized
  const struct stat& st;    // fstatat(dir_fd, name, AT_SYMLINK_NOFOLLOW)
};

// Called for every entry in walk order. A non-OK status ends the walk with that status. A
// directory entry is entered after its visit (after its parent has been listed to the end).
using WalkVisitor = std::function<absl::Status(const WalkEntry&)>;

// The directories (the root and the levels below it) that the walk keeps open while their
// subdirectories are walked; deeper ones are closed meanwhile and reopened when needed.
inline constexpr size_t kHeldDirectories = 16;

// Walks the tree below the directory `root_fd` (not visited itself; the walk reads it through
// a descriptor of its own, so `root_fd` is left as it is). See the contract above.
absl::Status WalkTree(int root_fd, const WalkVisitor& visit);

// Opens the regular file `entry` for reading (O_NOFOLLOW | O_NONBLOCK | O_NOCTTY), relative to
// its directory. kAborted "changed while it was being sealed" unless it is still the listed
// regular file (same device and inode); other failures are the errno's status naming the path.
absl::StatusOr<Fd> OpenListedFile(const WalkEntry& entry);

// The target of the symlink `entry`, read relative to its directory. kAborted "changed while
// it was being sealed" if it is no longer a symlink of the listed size.
absl::StatusOr<std::string> ReadListedLink(const WalkEntry& entry);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_TREE_WALK_H_

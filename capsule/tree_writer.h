// TreeWriter: creates the entries of an extraction below a root directory held by descriptor.
//
// The write side of ExtractArchive (capsule/extract.h), which decides what is written; this
// decides only how, so that nothing can redirect a write:
//  - Every entry is created relative to a directory descriptor: its parent is opened from the
//    root with OpenBeneath (no symlink, never outside the root), and the entry itself with
//    openat(O_CREAT | O_EXCL | O_NOFOLLOW), mkdirat, symlinkat or linkat (never
//    AT_SYMLINK_FOLLOW). A symlink in the tree is never gone through, whatever its target.
//  - Missing parent directories are created as needed ("implicit" directories), with the mode
//    mkdir(0777) gives under the umask and no time restored.
//  - Directories stay u+rwx while the tree is filled; their final modes (mode & 0777, not
//    umasked) and times are applied by Finish(), deepest first.
//  - With an owner, every created entry (and the root) is given to it; EPERM from chown is
//    kPermissionDenied (see GiveTo). Without one, no chown call is made.
//  - Errors name the entry path ("cannot extract \"a/b\": ..."), with the errno's code
//    (ErrnoCode): e.g. kResourceExhausted for a full disk.
// Not thread-safe. The caller removes the tree on failure (RemoveContentsBeneath).
#ifndef BUNKER_CAPSULE_TREE_WRITER_H_
#define BUNKER_CAPSULE_TREE_WRITER_H_

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capsule/beneath.h"
#include "capsule/fd.h"

namespace bunker::capsule {

// Access and modification times to restore; UTIME_OMIT (the default) leaves one as it is.
struct EntryTimes {
  struct timespec atime = {0, UTIME_OMIT};
  struct timespec mtime = {0, UTIME_OMIT};
  bool any() const { return atime.tv_nsec != UTIME_OMIT || mtime.tv_nsec != UTIME_OMIT; }
};

class TreeWriter {
 public:
  // Makes the directory `name` (one component) in `parent_fd` with mkdirat(0777) under the
  // umask and returns a writer for the tree below it. The root is given to `owner` in FinishRoot.
  // `display` names the destination in errors.
  static absl::StatusOr<TreeWriter> MakeRoot(int parent_fd, const std::string& name,
                                             const std::optional<FileOwner>& owner,
                                             const std::string& display);

  TreeWriter(TreeWriter&&) = default;
  TreeWriter& operator=(TreeWriter&&) = default;

  // A descriptor of the root directory (opened for reading), owned by this writer.
  int root_fd() const { return root_.get(); }

  // All entry paths below are normalized (NormalizeEntryPath) and below the root; the caller
  // checked that they were not used before (EntryTree), except that MakeDirectory may name a
  // directory already created implicitly.

  // A directory whose `perm` (& 0777) and `times` are applied by Finish().
  absl::Status MakeDirectory(const std::string& path, mode_t perm, const EntryTimes& times);

  // Creates an empty regular file (mode 0600 until FinishFile) and returns it open for writing.
  absl::StatusOr<Fd> CreateFile(const std::string& path);
  // Extends `file` to `size` if only `written` bytes were written (a sparse tail), then sets
  // its mode and times.
  absl::Status FinishFile(const std::string& path, int file, uint64_t written, uint64_t size,
                          mode_t perm, const EntryTimes& times);

  // A symlink to `target` (not checked here) with `times`.
  absl::Status MakeSymlink(const std::string& path, const std::string& target,
                           const EntryTimes& times);

  // A hard link at `path` to the regular file created earlier at `target`.
  absl::Status MakeHardLink(const std::string& path, const std::string& target);

  // Applies the directories' final modes and times, deepest first. Nothing may be created
  // afterwards.
  absl::Status Finish();

  // Gives the root its final mode: `mode` if set, else the one mkdir gave it. Separate from
  // Finish() because moving a directory to another parent needs write permission on it: call
  // this once the root has been renamed into place.
  absl::Status FinishRoot(std::optional<mode_t> mode);

 private:
  struct DirState {
    mode_t mode;  // final mode
    EntryTimes times;
  };

  TreeWriter(Fd root, std::optional<FileOwner> owner, std::string display)
      : root_(std::move(root)), owner_(owner), display_(std::move(display)) {}

  // The descriptor of `path`'s parent directory, created (implicitly) if needed. Owned by the
  // writer, valid until the next call.
  absl::StatusOr<int> ParentOf(const std::string& path);
  // mkdirat + open without following; leaves the new directory u+rwx (Finish gives it to the
  // owner, after its final mode and times).
  absl::Status CreateDirectory(int parent, const std::string& path, DirState* state);
  absl::Status Error(const std::string& path, int err) const;
  absl::Status Wrap(const std::string& path, const absl::Status& status) const;

  Fd root_;
  std::optional<FileOwner> owner_;
  std::string display_;
  mode_t root_mode_ = 0;                  // what mkdir gave the root
  std::map<std::string, DirState> dirs_;  // every directory created below the root
  std::string cached_parent_path_;        // the last parent, to spare OpenBeneath per entry
  Fd cached_parent_;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_TREE_WRITER_H_

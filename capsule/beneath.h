// File system operations confined below a directory descriptor, never following a symlink.
//
// What a caller may rely on:
//  - Every path argument here is relative to a directory descriptor the caller holds, and is
//    resolved without following any symbolic link (on any component, the last one included) and
//    without leaving that directory: an attacker who can rename or plant entries in the tree
//    while we work can make an operation fail, but never redirect it outside the tree or
//    through a link. Checking a path and then using it by name is the race this prevents.
//  - Paths are checked before any system call (CheckRelativePath): one or more '/'-separated
//    names, none empty, "." or "..", each at most NAME_MAX bytes, the whole below PATH_MAX.
//  - A symlink on the way is kPermissionDenied with a one-line message naming the path
//    ("\"a/b\" is or goes through a symbolic link"); other failures carry the errno's code
//    (capsule/io.h ErrnoCode) and name the path.
//  - Descriptors are opened O_CLOEXEC and returned as Fd.
#ifndef BUNKER_CAPSULE_BENEATH_H_
#define BUNKER_CAPSULE_BENEATH_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capsule/fd.h"
#include "capsule/io.h"

namespace bunker::capsule {

// The user and group that created files are given to (chown), e.g. by a privileged verifier
// extracting on behalf of another user.
struct FileOwner {
  uid_t uid = 0;
  gid_t gid = 0;
};

// `<what> "<path>": <strerror(err)>` (the path escaped to one line) with ErrnoCode(err).
absl::Status PathError(std::string_view what, std::string_view path, int err);

// OK if `relative` is acceptable to the functions below (see the contract above); otherwise
// kInvalidArgument naming the path and the rule.
absl::Status CheckRelativePath(std::string_view relative);

// Opens `relative` below `dirfd` with open(2) `flags` (O_CLOEXEC is added; O_NOFOLLOW is implied)
// and `mode` (used only with O_CREAT). Uses openat2(2) with RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; where the kernel lacks openat2 (ENOSYS), walks
// the path one component at a time with openat(O_PATH | O_DIRECTORY | O_NOFOLLOW), which gives
// the same guarantees. With O_PATH, a symlink as the last component is refused too (never an
// fd to a link). kInvalidArgument for a bad path, kPermissionDenied for a symlink on the way,
// otherwise the errno's code, e.g. kNotFound.
absl::StatusOr<Fd> OpenBeneath(int dirfd, std::string_view relative, int flags, mode_t mode = 0);

namespace internal {
// The component-by-component fallback of OpenBeneath, exposed so that tests can exercise it on
// kernels that have openat2. Same contract.
absl::StatusOr<Fd> OpenBeneathByWalking(int dirfd, std::string_view relative, int flags,
                                        mode_t mode);
}  // namespace internal

// Whether the directory open at `dir_fd` holds nothing but "." and "..". It is read through a
// description of its own (openat(dir_fd, ".")), so the caller's descriptor and its offset are
// untouched. A failure (e.g. a directory the process may not read) is `what` and the errno, with
// ErrnoCode's code.
absl::StatusOr<bool> DirectoryIsEmpty(int dir_fd, std::string_view what);

// Gives `name` below `dirfd` (or `dirfd` itself when `name` is empty) to `owner` with
// fchownat(AT_SYMLINK_NOFOLLOW). `name` must be a single component. EPERM becomes
// kPermissionDenied "this process cannot give files to uid N (a verifier service needs
// CAP_CHOWN)"; `what` names the file in other errors.
absl::Status GiveTo(int dirfd, std::string_view name, const FileOwner& owner,
                    std::string_view what);

// The directories MakeDirsBeneath created, each held as (descriptor of its parent, name), so
// that they can be taken back without resolving a path again. Unless Keep() was called, the
// destructor removes them, deepest first, with unlinkat(AT_REMOVEDIR): a directory that is no
// longer empty (or no longer a directory) stays. Not thread-safe.
class CreatedDirs {
 public:
  CreatedDirs() = default;
  CreatedDirs(const CreatedDirs&) = delete;
  CreatedDirs& operator=(const CreatedDirs&) = delete;
  ~CreatedDirs();

  void Add(Fd parent, std::string name) { dirs_.emplace_back(std::move(parent), std::move(name)); }
  // The created directories are to stay (the operation that needed them succeeded).
  void Keep() { dirs_.clear(); }
  bool empty() const { return dirs_.empty(); }

 private:
  std::vector<std::pair<Fd, std::string>> dirs_;  // outermost first
};

// mkdir -p of `relative` below `dirfd`: each missing component is made with mkdirat(`mode`,
// less the umask) and every component is then opened with O_NOFOLLOW | O_DIRECTORY, so no
// symlink is ever followed. Components it made are appended to `created` and, with `owner`,
// given to the owner (GiveTo). Returns an O_PATH descriptor of the last directory, usable as the
// dirfd of *at calls. kPermissionDenied for a symlink on the way (or a refused chown),
// kInvalidArgument for a bad path or a component that is not a directory, otherwise the errno's
// code. On error the directories made so far are in `created`, for the caller to drop.
absl::StatusOr<Fd> MakeDirsBeneath(int dirfd, std::string_view relative, mode_t mode,
                                   CreatedDirs* created,
                                   const std::optional<FileOwner>& owner = std::nullopt);

// Removes `relative` below `dirfd` and everything under it, never following a symlink. Best
// effort (errors are ignored). A directory without u+rwx is made u+rwx (fchmodat, right after
// checking without following that it is a directory) so that its entries can be removed: use
// it only on trees no one else can write to, such as a private staging directory. Holds a few
// descriptors at a time whatever the depth.
void RemoveTreeBeneath(int dirfd, std::string_view relative);

// Like RemoveTreeBeneath, for everything inside the directory `dirfd` (which stays, made u+rwx
// when `dirfd` was opened for reading). Paths below `dirfd` are limited by CheckRelativePath.
void RemoveContentsBeneath(int dirfd);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_BENEATH_H_

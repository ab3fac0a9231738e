#include "capsule/beneath.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>  // struct open_how, RESOLVE_*; glibc 2.36 has no wrapper
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "capsule/paths.h"

namespace bunker::capsule {
namespace {

constexpr int kOpenat2Retries = 16;  // EAGAIN: a concurrent rename somewhere in the filesystem

absl::Status SymlinkError(std::string_view path) {
  return absl::PermissionDeniedError(
      absl::StrCat(QuotePath(path), " is or goes through a symbolic link"));
}

std::vector<std::string_view> Components(std::string_view relative) {
  std::vector<std::string_view> names;
  size_t start = 0;
  while (true) {
    const size_t slash = relative.find('/', start);
    if (slash == std::string_view::npos) {
      names.push_back(relative.substr(start));
      return names;
    }
    names.push_back(relative.substr(start, slash - start));
    start = slash + 1;
  }
}

// After an open of `name` below `dirfd` failed with `err`: a symlink there gets the symlink
// error for `path` (O_NOFOLLOW | O_DIRECTORY reports ENOTDIR for one, O_NOFOLLOW alone ELOOP).
absl::Status OpenError(int dirfd, const std::string& name, std::string_view path, int err) {
  struct stat st;
  if (err == ELOOP ||
      (err == ENOTDIR && ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
       S_ISLNK(st.st_mode))) {
    return SymlinkError(path);
  }
  return PathError("cannot open", path, err);
}

// With O_PATH | O_NOFOLLOW, open(2) returns a descriptor of a final symlink instead of failing.
absl::StatusOr<Fd> RefuseSymlinkFd(Fd fd, int flags, std::string_view path) {
  if ((flags & O_PATH) != 0) {
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return PathError("cannot open", path, errno);
    if (S_ISLNK(st.st_mode)) return SymlinkError(path);
  }
  return fd;
}

}  // namespace

absl::Status PathError(std::string_view what, std::string_view path, int err) {
  return absl::Status(ErrnoCode(err), absl::StrCat(std::string(what), " ", QuotePath(path), ": ",
                                                   std::strerror(err)));
}

absl::Status CheckRelativePath(std::string_view relative) {
  auto bad = [&](std::string_view rule) {
    return absl::InvalidArgumentError(
        absl::StrCat("path ", QuotePath(relative), " ", std::string(rule)));
  };
  if (relative.empty()) return bad("is empty");
  if (relative.front() == '/') return bad("is absolute");
  if (relative.size() >= PATH_MAX) return bad(absl::StrCat("is ", PATH_MAX, " bytes or longer"));
  if (relative.find('\0') != std::string_view::npos) return bad("contains a NUL byte");
  for (std::string_view name : Components(relative)) {
    if (name.empty()) return bad("has an empty component");
    if (name == "." || name == "..")
      return bad(absl::StrCat("has a '", std::string(name), "' component"));
    if (name.size() > NAME_MAX) {
      return bad(absl::StrCat("has a component longer than ", NAME_MAX, " bytes"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Fd> OpenBeneath(int dirfd, std::string_view relative, int flags, mode_t mode) {
  if (absl::Status s = CheckRelativePath(relative); !s.ok()) return s;
  const std::string path(relative);
  struct open_how how;
  std::memset(&how, 0, sizeof how);
  // No O_NOFOLLOW: with O_PATH it would return a descriptor of a final symlink, which
  // RESOLVE_NO_SYMLINKS otherwise refuses with ELOOP like every other symlink on the path.
  how.flags = static_cast<uint64_t>((flags | O_CLOEXEC) & ~O_NOFOLLOW);
  // openat2 refuses a mode without O_CREAT or O_TMPFILE.
  if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE) how.mode = mode;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0;; ++attempt) {
    const long fd = ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
    if (fd >= 0) return Fd(static_cast<int>(fd));
    const int err = errno;
    if (err == ENOSYS) return internal::OpenBeneathByWalking(dirfd, relative, flags, mode);
    if (err == EAGAIN && attempt < kOpenat2Retries) continue;
    if (err == ELOOP) return SymlinkError(relative);
    if (err == EXDEV) {
      return absl::PermissionDeniedError(
          absl::StrCat(QuotePath(relative), " resolves outside its directory"));
    }
    return PathError("cannot open", relative, err);
  }
}

namespace internal {

absl::StatusOr<Fd> OpenBeneathByWalking(int dirfd, std::string_view relative, int flags,
                                        mode_t mode) {
  if (absl::Status s = CheckRelativePath(relative); !s.ok()) return s;
  const std::vector<std::string_view> names = Components(relative);
  Fd current;
  int at = dirfd;
  for (size_t i = 0; i + 1 < names.size(); ++i) {
    const std::string name(names[i]);
    // O_PATH: crossing a directory needs only search permission, as in path resolution.
    Fd next(::openat(at, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) return OpenError(at, name, relative, errno);
    current = std::move(next);
    at = current.get();
  }
  const std::string last(names.back());
  Fd fd(::openat(at, last.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd.valid()) return OpenError(at, last, relative, errno);
  return RefuseSymlinkFd(std::move(fd), flags, relative);
}

}  // namespace internal

absl::StatusOr<bool> DirectoryIsEmpty(int dir_fd, std::string_view what) {
  Fd own(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!own.valid()) return ErrnoStatus(std::string(what), errno);
  DIR* listing = ::fdopendir(own.get());
  if (listing == nullptr) return ErrnoStatus(std::string(what), errno);
  own.release();  // now owned by `listing`
  bool empty = true;
  errno = 0;
  while (const struct dirent* ent = ::readdir(listing)) {
    const std::string_view name = ent->d_name;
    if (name != "." && name != "..") {
      empty = false;
      break;
    }
  }
  const int err = errno;
  ::closedir(listing);
  if (empty && err != 0) return ErrnoStatus(std::string(what), err);
  return empty;
}

absl::Status GiveTo(int dirfd, std::string_view name, const FileOwner& owner,
                    std::string_view what) {
  const std::string n(name);
  const int flags = AT_SYMLINK_NOFOLLOW | (n.empty() ? AT_EMPTY_PATH : 0);
  if (::fchownat(dirfd, n.c_str(), owner.uid, owner.gid, flags) == 0) return absl::OkStatus();
  const int err = errno;
  if (err == EPERM) {
    return absl::PermissionDeniedError(absl::StrCat("this process cannot give files to uid ",
                                                    owner.uid,
                                                    " (a verifier service needs CAP_CHOWN): chown ",
                                                    QuotePath(what), ": ", std::strerror(err)));
  }
  return PathError("cannot change the owner of", what, err);
}

CreatedDirs::~CreatedDirs() {
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    ::unlinkat(it->first.get(), it->second.c_str(), AT_REMOVEDIR);
  }
}

absl::StatusOr<Fd> MakeDirsBeneath(int dirfd, std::string_view relative, mode_t mode,
                                   CreatedDirs* created, const std::optional<FileOwner>& owner) {
  if (absl::Status s = CheckRelativePath(relative); !s.ok()) return s;
  Fd current;
  int at = dirfd;
  size_t end = 0;
  for (std::string_view component : Components(relative)) {
    end += (end == 0 ? 0 : 1) + component.size();
    const std::string_view so_far = relative.substr(0, end);
    const std::string name(component);
    // mkdirat never follows a symlink in the last component (EEXIST), and the open below
    // refuses one, so a link planted at any time is never gone through.
    const bool made = ::mkdirat(at, name.c_str(), mode) == 0;
    if (!made && errno != EEXIST) return PathError("cannot create directory", so_far, errno);
    Fd next(::openat(at, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      const int err = errno;
      if (made) {  // renamed or replaced since we made it: not ours to remove any more
        return PathError("cannot open the new directory", so_far, err);
      }
      return OpenError(at, name, so_far, err);
    }
    if (made) {
      // What we opened must be the directory we just made: someone who can write the parent
      // could have renamed another directory (not theirs) into its place, which must never be
      // given to the owner below.
      struct stat st;
      if (::fstat(next.get(), &st) != 0 || st.st_uid != ::geteuid()) {
        return absl::PermissionDeniedError(absl::StrCat(
            QuotePath(so_far), " was replaced while it was being created"));
      }
      Fd parent(::fcntl(at, F_DUPFD_CLOEXEC, 0));
      if (!parent.valid()) return PathError("cannot create directory", so_far, errno);
      created->Add(std::move(parent), name);
      if (owner.has_value()) {
        if (absl::Status s = GiveTo(next.get(), "", *owner, so_far); !s.ok()) return s;
      }
    }
    current = std::move(next);
    at = current.get();
  }
  return current;
}

namespace {

void RemoveChildren(int dirfd, const std::string& relative);

// Removes `relative` (not empty) below `dirfd`. The parent is opened again for each entry rather
// than kept open across the recursion, so that a deep tree does not hold one descriptor per level.
void RemoveEntry(int dirfd, const std::string& relative) {
  const size_t slash = relative.rfind('/');
  const std::string name = slash == std::string::npos ? relative : relative.substr(slash + 1);
  auto open_parent = [&]() -> Fd {
    if (slash == std::string::npos) return Fd(::fcntl(dirfd, F_DUPFD_CLOEXEC, 0));
    absl::StatusOr<Fd> parent = OpenBeneath(dirfd, relative.substr(0, slash), O_PATH | O_DIRECTORY);
    return parent.ok() ? *std::move(parent) : Fd();
  };
  {
    Fd parent = open_parent();
    if (!parent.valid()) return;
    struct stat st;
    if (::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
      ::unlinkat(parent.get(), name.c_str(), 0);
      return;
    }
    // A 0500 or 0000 directory can be neither listed nor emptied as it is. Made u+rwx through
    // a descriptor opened without following a symlink (fchmodat would follow one swapped in).
    if ((st.st_mode & S_IRWXU) != S_IRWXU) {
      Fd dir(::openat(parent.get(), name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!dir.valid()) return;
      struct stat opened;
      if (::fstat(dir.get(), &opened) != 0 || opened.st_ino != st.st_ino ||
          opened.st_dev != st.st_dev) {
        return;
      }
      const std::string proc = absl::StrCat("/proc/self/fd/", dir.get());
      ::chmod(proc.c_str(), S_IRWXU);  // the very inode opened above
    }
  }
  RemoveChildren(dirfd, relative);
  Fd parent = open_parent();
  if (parent.valid()) ::unlinkat(parent.get(), name.c_str(), AT_REMOVEDIR);
}

// Removes what is in the directory `relative` below `dirfd` ("" for `dirfd` itself).
void RemoveChildren(int dirfd, const std::string& relative) {
  std::vector<std::string> children;
  {
    Fd dir;
    if (relative.empty()) {
      dir.Reset(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    } else {
      absl::StatusOr<Fd> opened = OpenBeneath(dirfd, relative, O_RDONLY | O_DIRECTORY);
      if (opened.ok()) dir = *std::move(opened);
    }
    if (!dir.valid()) return;
    DIR* listing = ::fdopendir(dir.get());
    if (listing == nullptr) return;
    dir.release();  // now owned by `listing`
    while (const struct dirent* ent = ::readdir(listing)) {
      const std::string_view child = ent->d_name;
      if (child != "." && child != "..") children.emplace_back(child);
    }
    ::closedir(listing);
  }
  // The listing is closed before recursing: a few descriptors at a time, whatever the depth.
  for (const std::string& child : children) {
    RemoveEntry(dirfd, relative.empty() ? child : absl::StrCat(relative, "/", child));
  }
}

}  // namespace

void RemoveTreeBeneath(int dirfd, std::string_view relative) {
  if (!CheckRelativePath(relative).ok()) return;
  RemoveEntry(dirfd, std::string(relative));
}

void RemoveContentsBeneath(int dirfd) {
  struct stat st;
  if (::fstat(dirfd, &st) == 0 && (st.st_mode & S_IRWXU) != S_IRWXU) ::fchmod(dirfd, S_IRWXU);
  RemoveChildren(dirfd, "");
}

}  // namespace bunker::capsule

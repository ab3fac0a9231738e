#include "capsule/tree_walk.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/paths.h"

namespace bunker::capsule {
namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

// `path` as messages show it: the root is ".".
std::string Shown(const std::string& path) { return QuotePath(path.empty() ? "." : path); }

absl::Status Changed(const std::string& path) {
  return absl::AbortedError(absl::StrCat(Shown(path), " changed while it was being sealed"));
}

absl::Status ReadError(const std::string& path, int err) {
  return ErrnoStatus(absl::StrCat("cannot read ", Shown(path)), err);
}

std::string Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : absl::StrCat(dir, "/", name);
}

// A subdirectory listed and not walked yet, as fstatat saw it.
struct Subdir {
  std::string name;
  dev_t dev;
  ino_t ino;
};

// A directory on the walk's current path.
struct Frame {
  Fd fd;  // closed while a deep frame's subdirectories are walked (see kHeldDirectories)
  dev_t dev;
  ino_t ino;
  std::string name;             // in its parent ("" for the root)
  size_t path_length;           // its path is this prefix of the walk's current path
  std::vector<Subdir> pending;  // walked from the back: last listed first, as libarchive did
};

// Opens the subdirectory `name` of `parent_fd`, which must still be the directory (dev, ino)
// that was listed. A symlink (ELOOP under O_NOFOLLOW), a non-directory (ENOTDIR), nothing
// (ENOENT) or another directory in its place is a change during sealing.
absl::StatusOr<Fd> EnterDirectory(int parent_fd, const std::string& name, dev_t dev, ino_t ino,
                                  const std::string& path) {
  Fd fd(::openat(parent_fd, name.c_str(),
                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ELOOP || errno == ENOTDIR || errno == ENOENT) return Changed(path);
    return ReadError(path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ReadError(path, errno);
  if (!S_ISDIR(st.st_mode) || st.st_dev != dev || st.st_ino != ino) return Changed(path);
  return fd;
}

// Reads the directory of `frame` (at `path`) to the end through a description of its own,
// visiting each entry and noting its subdirectories.
absl::Status ListDirectory(Frame& frame, const std::string& path, const WalkVisitor& visit) {
  Fd own(::openat(frame.fd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!own.valid()) return ReadError(path, errno);
  std::unique_ptr<DIR, DirCloser> dir(::fdopendir(own.get()));
  if (!dir) return ReadError(path, errno);
  own.release();  // closedir closes it
  std::string entry_path;
  while (true) {
    errno = 0;
    const struct dirent* de = ::readdir(dir.get());
    if (de == nullptr) {
      if (errno != 0) return ReadError(path, errno);
      return absl::OkStatus();
    }
    const std::string name(de->d_name);
    if (name == "." || name == "..") continue;
    entry_path = Join(path, name);
    struct stat st;
    if (::fstatat(frame.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed since readdir: as if removed before the walk
      return ReadError(entry_path, errno);
    }
    absl::Status s = visit(WalkEntry{frame.fd.get(), name, entry_path, st});
    if (!s.ok()) return s;
    if (S_ISDIR(st.st_mode)) frame.pending.push_back(Subdir{name, st.st_dev, st.st_ino});
  }
}

// Opens the directory of stack[i] again (it was closed while its subdirectories were walked)
// from its nearest ancestor still open, entering each directory on the way as listed.
// `path` is stack[i]'s path.
absl::Status Reopen(std::vector<Frame>& stack, size_t i, const std::string& path) {
  size_t j = i;
  while (!stack[j].fd.valid()) --j;  // stack[0], the root, is always open
  Fd fd;
  int parent = stack[j].fd.get();
  for (size_t k = j + 1; k <= i; ++k) {
    absl::StatusOr<Fd> next = EnterDirectory(parent, stack[k].name, stack[k].dev, stack[k].ino,
                                             path.substr(0, stack[k].path_length));
    if (!next.ok()) return next.status();
    fd = std::move(*next);
    parent = fd.get();
  }
  stack[i].fd = std::move(fd);
  return absl::OkStatus();
}

}  // namespace

absl::Status WalkTree(int root_fd, const WalkVisitor& visit) {
  struct stat st;
  if (::fstat(root_fd, &st) != 0) return ReadError("", errno);
  // A description of its own: listing moves its offset, not the caller's.
  Fd root(::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return ReadError("", errno);
  std::vector<Frame> stack;
  stack.push_back(Frame{std::move(root), st.st_dev, st.st_ino, "", 0, {}});
  std::string path;  // of the directory at the top of the stack
  absl::Status s = ListDirectory(stack.back(), path, visit);
  if (!s.ok()) return s;
  while (!stack.empty()) {
    const size_t top = stack.size() - 1;
    if (stack[top].pending.empty()) {
      stack.pop_back();
      if (!stack.empty()) path.resize(stack.back().path_length);
      continue;
    }
    if (!stack[top].fd.valid()) {
      if (s = Reopen(stack, top, path); !s.ok()) return s;
    }
    Subdir sub = std::move(stack[top].pending.back());
    stack[top].pending.pop_back();
    const std::string child_path = Join(path, sub.name);
    absl::StatusOr<Fd> child = EnterDirectory(stack[top].fd.get(), sub.name, sub.dev, sub.ino,
                                              child_path);
    if (!child.ok()) return child.status();
    // Descriptors stay bounded whatever the depth: below the first kHeldDirectories levels, a
    // directory is closed while its subdirectories are walked (Reopen brings it back).
    if (top >= kHeldDirectories) stack[top].fd.Reset();
    path = child_path;
    stack.push_back(
        Frame{std::move(*child), sub.dev, sub.ino, std::move(sub.name), path.size(), {}});
    if (s = ListDirectory(stack.back(), path, visit); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<Fd> OpenListedFile(const WalkEntry& entry) {
  Fd fd(::openat(entry.dir_fd, entry.name.c_str(),
                 O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) {
    // ENXIO: a socket now (open refuses one); EISDIR, a directory: either is a change.
    if (errno == ELOOP || errno == ENOENT || errno == ENXIO || errno == EISDIR) {
      return Changed(entry.path);
    }
    return ReadError(entry.path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ReadError(entry.path, errno);
  if (!S_ISREG(st.st_mode) || st.st_dev != entry.st.st_dev || st.st_ino != entry.st.st_ino) {
    return Changed(entry.path);
  }
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);  // a hint: its failure is harmless
  return fd;
}

absl::StatusOr<std::string> ReadListedLink(const WalkEntry& entry) {
  // The target's length is the link's size; a link that no longer has that size (or is no
  // longer a link: EINVAL) changed since it was listed.
  constexpr off_t kMaxTarget = 1 << 16;
  if (entry.st.st_size < 0 || entry.st.st_size > kMaxTarget) return Changed(entry.path);
  std::string target(static_cast<size_t>(entry.st.st_size) + 1, '\0');
  const ssize_t n = ::readlinkat(entry.dir_fd, entry.name.c_str(), target.data(), target.size());
  if (n < 0) {
    if (errno == EINVAL || errno == ENOENT) return Changed(entry.path);
    return ReadError(entry.path, errno);
  }
  if (n != entry.st.st_size) return Changed(entry.path);
  target.resize(static_cast<size_t>(n));
  return target;
}

}  // namespace bunker::capsule

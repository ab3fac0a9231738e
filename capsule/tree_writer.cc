#include "capsule/tree_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "capsule/paths.h"

namespace bunker::capsule {
namespace {

constexpr int kOpenDir = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

// "a/b/c" -> {"a/b", "c"}; "c" -> {"", "c"}.
std::pair<std::string, std::string> Split(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

size_t Depth(const std::string& path) { return std::count(path.begin(), path.end(), '/'); }

}  // namespace

absl::StatusOr<TreeWriter> TreeWriter::MakeRoot(int parent_fd, const std::string& name,
                                                const std::optional<FileOwner>& owner,
                                                const std::string& display) {
  auto fail = [&](int err) {
    return PathError("cannot create a staging directory beside", display, err);
  };
  if (::mkdirat(parent_fd, name.c_str(), 0777) != 0) return fail(errno);
  Fd root(::openat(parent_fd, name.c_str(), kOpenDir));
  if (!root.valid()) return fail(errno);
  TreeWriter writer(std::move(root), owner, display);
  struct stat st;
  if (::fstat(writer.root_.get(), &st) != 0) return fail(errno);
  writer.root_mode_ = st.st_mode & 0777;
  if ((st.st_mode & S_IRWXU) != S_IRWXU && ::fchmod(writer.root_.get(), st.st_mode | S_IRWXU)) {
    return fail(errno);
  }
  if (owner.has_value()) {
    // Whether this process may give files away at all, before the first byte is read: the
    // root goes to the owner and back (both need CAP_CHOWN unless the owner is ourselves).
    // Entries are given away last, after their modes and times (see FinishFile).
    if (absl::Status s = GiveTo(writer.root_.get(), "", *owner, display); !s.ok()) return s;
    const FileOwner self{::geteuid(), ::getegid()};
    if (absl::Status s = GiveTo(writer.root_.get(), "", self, display); !s.ok()) return s;
  }
  return writer;
}

absl::Status TreeWriter::Error(const std::string& path, int err) const {
  return PathError("cannot extract", path, err);
}

absl::Status TreeWriter::Wrap(const std::string& path, const absl::Status& status) const {
  return absl::Status(status.code(),
                      absl::StrCat("cannot extract ", QuotePath(path), ": ", status.message()));
}

absl::Status TreeWriter::CreateDirectory(int parent, const std::string& path, DirState* state) {
  const std::string name = Split(path).second;
  if (::mkdirat(parent, name.c_str(), 0777) != 0) return Error(path, errno);
  Fd dir(::openat(parent, name.c_str(), kOpenDir));
  if (!dir.valid()) return Error(path, errno);
  struct stat st;
  if (::fstat(dir.get(), &st) != 0) return Error(path, errno);
  state->mode = st.st_mode & 0777;  // what mkdir gave, kept for an implicit directory
  // A directory of mode 0500 (or a umask of 0222) must still take its entries.
  if ((st.st_mode & S_IRWXU) != S_IRWXU && ::fchmod(dir.get(), st.st_mode | S_IRWXU) != 0) {
    return Error(path, errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<int> TreeWriter::ParentOf(const std::string& path) {
  const std::string parent = Split(path).first;
  if (parent.empty()) return root_.get();
  if (cached_parent_.valid() && parent == cached_parent_path_) return cached_parent_.get();
  cached_parent_.Reset();
  // Missing ancestors, outermost first: an entry may come without its directories.
  for (size_t end = parent.find('/');; end = parent.find('/', end + 1)) {
    const std::string ancestor = parent.substr(0, end);
    if (dirs_.count(ancestor) == 0) {
      int at = root_.get();
      Fd opened;
      const std::string above = Split(ancestor).first;
      if (!above.empty()) {
        absl::StatusOr<Fd> fd = OpenBeneath(root_.get(), above, O_PATH | O_DIRECTORY);
        if (!fd.ok()) return Wrap(path, fd.status());
        opened = *std::move(fd);
        at = opened.get();
      }
      DirState state;
      if (absl::Status s = CreateDirectory(at, ancestor, &state); !s.ok()) return s;
      dirs_.emplace(ancestor, state);
    }
    if (end == std::string::npos) break;
  }
  absl::StatusOr<Fd> fd = OpenBeneath(root_.get(), parent, O_PATH | O_DIRECTORY);
  if (!fd.ok()) return Wrap(path, fd.status());
  cached_parent_ = *std::move(fd);
  cached_parent_path_ = parent;
  return cached_parent_.get();
}

absl::Status TreeWriter::MakeDirectory(const std::string& path, mode_t perm,
                                       const EntryTimes& times) {
  auto it = dirs_.find(path);
  if (it == dirs_.end()) {
    absl::StatusOr<int> parent = ParentOf(path);
    if (!parent.ok()) return parent.status();
    DirState state;
    if (absl::Status s = CreateDirectory(*parent, path, &state); !s.ok()) return s;
    it = dirs_.emplace(path, state).first;
  }
  it->second.mode = perm & 0777;
  it->second.times = times;
  return absl::OkStatus();
}

absl::StatusOr<Fd> TreeWriter::CreateFile(const std::string& path) {
  absl::StatusOr<int> parent = ParentOf(path);
  if (!parent.ok()) return parent.status();
  const std::string name = Split(path).second;
  Fd file(
      ::openat(*parent, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!file.valid()) return Error(path, errno);
  return file;
}

absl::Status TreeWriter::FinishFile(const std::string& path, int file, uint64_t written,
                                    uint64_t size, mode_t perm, const EntryTimes& times) {
  if (written < size && ::ftruncate(file, static_cast<off_t>(size)) != 0) {
    return Error(path, errno);
  }
  if (::fchmod(file, perm & 0777) != 0) return Error(path, errno);
  struct timespec ts[2] = {times.atime, times.mtime};
  if (times.any() && ::futimens(file, ts) != 0) return Error(path, errno);
  // Given away last: changing the mode or times of a file one no longer owns needs CAP_FOWNER,
  // which a verifier service does not have (only CAP_CHOWN).
  if (owner_.has_value()) {
    if (absl::Status s = GiveTo(file, "", *owner_, path); !s.ok()) return Wrap(path, s);
  }
  return absl::OkStatus();
}

absl::Status TreeWriter::MakeSymlink(const std::string& path, const std::string& target,
                                     const EntryTimes& times) {
  absl::StatusOr<int> parent = ParentOf(path);
  if (!parent.ok()) return parent.status();
  const std::string name = Split(path).second;
  if (::symlinkat(target.c_str(), *parent, name.c_str()) != 0) return Error(path, errno);
  struct timespec ts[2] = {times.atime, times.mtime};
  if (times.any() && ::utimensat(*parent, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
    return Error(path, errno);
  }
  if (owner_.has_value()) {
    if (absl::Status s = GiveTo(*parent, name, *owner_, path); !s.ok()) return Wrap(path, s);
  }
  return absl::OkStatus();
}

absl::Status TreeWriter::MakeHardLink(const std::string& path, const std::string& target) {
  const auto [target_dir, target_name] = Split(target);
  Fd target_parent;
  int from = root_.get();
  if (!target_dir.empty()) {
    absl::StatusOr<Fd> fd = OpenBeneath(root_.get(), target_dir, O_PATH | O_DIRECTORY);
    if (!fd.ok()) return Wrap(path, fd.status());
    target_parent = *std::move(fd);
    from = target_parent.get();
  }
  absl::StatusOr<int> parent = ParentOf(path);
  if (!parent.ok()) return parent.status();
  // Flags 0: a symlink at `target` would be linked itself, never followed (the caller also
  // checked that `target` is a regular file it created).
  if (::linkat(from, target_name.c_str(), *parent, Split(path).second.c_str(), 0) != 0) {
    return Error(path, errno);
  }
  return absl::OkStatus();
}

absl::Status TreeWriter::Finish() {
  cached_parent_.Reset();
  cached_parent_path_.clear();
  // Deepest first: a parent stays u+rwx (reachable) until all below it is done, and setting a
  // child's mode or times does not touch the parent's mtime.
  std::vector<const std::pair<const std::string, DirState>*> order;
  order.reserve(dirs_.size());
  for (const auto& entry : dirs_) order.push_back(&entry);
  std::stable_sort(order.begin(), order.end(),
                   [](const auto* a, const auto* b) { return Depth(a->first) > Depth(b->first); });
  for (const auto* entry : order) {
    const std::string& path = entry->first;
    absl::StatusOr<Fd> dir = OpenBeneath(root_.get(), path, O_RDONLY | O_DIRECTORY);
    if (!dir.ok()) return Wrap(path, dir.status());
    if (::fchmod(dir->get(), entry->second.mode) != 0) return Error(path, errno);
    struct timespec ts[2] = {entry->second.times.atime, entry->second.times.mtime};
    if (entry->second.times.any() && ::futimens(dir->get(), ts) != 0) return Error(path, errno);
    if (owner_.has_value()) {
      if (absl::Status s = GiveTo(dir->get(), "", *owner_, path); !s.ok()) return Wrap(path, s);
    }
  }
  return absl::OkStatus();
}

absl::Status TreeWriter::FinishRoot(std::optional<mode_t> mode) {
  if (::fchmod(root_.get(), mode.value_or(root_mode_)) != 0) {
    return PathError("cannot set the mode of", display_, errno);
  }
  if (owner_.has_value()) return GiveTo(root_.get(), "", *owner_, display_);
  return absl::OkStatus();
}

}  // namespace bunker::capsule

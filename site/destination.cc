// Destinations (site/gate.h): where a release may create things, resolved once to a directory
// descriptor and a path below it. Nothing here follows a symlink that a requester could plant:
// the site's destinations come from the operator's site file; the rest is created no-follow.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "capsule/paths.h"
#include "crypto/status_macros.h"
#include "site/gate.h"

namespace bunker::site {
namespace {

std::string CurrentDir() {
  char buf[PATH_MAX];
  return ::getcwd(buf, sizeof buf) != nullptr ? std::string(buf) : std::string("/");
}

// Lexical absolute form of `path`; kInvalidArgument for a ".." component (which the kernel
// would resolve through whatever symlink precedes it, unlike a lexical collapse).
absl::StatusOr<std::string> Absolute(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty destination");
  std::vector<std::string> parts;
  const std::string full = path[0] == '/' ? path : CurrentDir() + "/" + path;
  for (absl::string_view p : absl::StrSplit(full, '/', absl::SkipEmpty())) {
    if (p == ".") continue;
    if (p == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("destination ", capsule::QuotePath(path), " contains '..'; name it without"));
    }
    parts.emplace_back(p);
  }
  return "/" + absl::StrJoin(parts, "/");
}

absl::StatusOr<capsule::Fd> OpenDir(const std::string& path, const std::string& shown) {
  const int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(capsule::ErrnoCode(err),
                        absl::StrCat("cannot use destination ", capsule::QuotePath(shown), ": ",
                                     std::strerror(err)));
  }
  return capsule::Fd(fd);
}

}  // namespace

absl::StatusOr<Destination> ResolveDestination(const SiteConfig& site, const std::string& path) {
  BUNKER_ASSIGN_OR_RETURN(const std::string abs, Absolute(path));
  for (const std::string& d : site.destinations) {
    std::vector<std::string> roots = {d};
    char real[PATH_MAX];
    if (::realpath(d.c_str(), real) != nullptr && d != real) roots.emplace_back(real);
    for (const std::string& root : roots) {
      const std::string prefix = root == "/" ? root : root + "/";
      if (abs.size() <= prefix.size() || !absl::StartsWith(abs, prefix)) continue;
      Destination out;
      out.relative = abs.substr(prefix.size());
      out.shown = path;
      BUNKER_RETURN_IF_ERROR(capsule::CheckRelativePath(out.relative));
      BUNKER_ASSIGN_OR_RETURN(out.root, OpenDir(d, d));
      return out;
    }
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "destination ", capsule::QuotePath(path), " is not under any of the site's destinations (",
      absl::StrJoin(site.destinations, ", "), ")"));
}

absl::StatusOr<Destination> LocalDestination(const std::string& path) {
  BUNKER_ASSIGN_OR_RETURN(const std::string abs, Absolute(path));
  if (abs == "/") {
    return absl::InvalidArgumentError(
        absl::StrCat("destination ", capsule::QuotePath(path), " must name a new or an empty "
                                                              "directory or file"));
  }
  // The nearest existing ancestor of the new entry is the caller's own tree: resolve it with
  // realpath once, then create the rest below its descriptor.
  std::string ancestor = abs.substr(0, abs.rfind('/'));
  if (ancestor.empty()) ancestor = "/";
  struct stat st;
  while (ancestor != "/" && ::stat(ancestor.c_str(), &st) != 0) {
    ancestor = ancestor.substr(0, ancestor.rfind('/'));
    if (ancestor.empty()) ancestor = "/";
  }
  char real[PATH_MAX];
  if (::realpath(ancestor.c_str(), real) == nullptr) {
    const int err = errno;
    return absl::Status(capsule::ErrnoCode(err),
                        absl::StrCat("cannot use destination ", capsule::QuotePath(path), ": ",
                                     std::strerror(err)));
  }
  Destination out;
  out.relative = abs.substr(ancestor == "/" ? 1 : ancestor.size() + 1);
  out.shown = path;
  BUNKER_RETURN_IF_ERROR(capsule::CheckRelativePath(out.relative));
  BUNKER_ASSIGN_OR_RETURN(out.root, OpenDir(real, path));
  return out;
}

absl::Status CheckDestinationFree(const Destination& to) {
  struct stat st;
  const std::string shown = capsule::QuotePath(to.shown);
  absl::StatusOr<capsule::Fd> fd = capsule::OpenBeneath(to.root.get(), to.relative,
                                                        O_RDONLY | O_DIRECTORY);
  if (fd.ok()) {
    // An empty directory is accepted (extraction replaces it); anything in it is not.
    capsule::Fd dup(::openat(fd->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    DIR* dir = dup.valid() ? ::fdopendir(dup.release()) : nullptr;
    if (dir == nullptr) return absl::OkStatus();  // the release reports what is wrong
    bool empty = true;
    while (const struct dirent* e = ::readdir(dir)) {
      const std::string_view name = e->d_name;
      if (name != "." && name != "..") {
        empty = false;
        break;
      }
    }
    ::closedir(dir);
    if (!empty) return absl::AlreadyExistsError(absl::StrCat("destination ", shown, " is not empty"));
    return absl::OkStatus();
  }
  if (absl::IsNotFound(fd.status())) return absl::OkStatus();
  if (absl::IsInvalidArgument(fd.status()) &&
      ::fstatat(to.root.get(), to.relative.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      !S_ISDIR(st.st_mode)) {
    return absl::AlreadyExistsError(
        absl::StrCat("destination ", shown, " already exists and is not a directory"));
  }
  return fd.status();
}

}  // namespace bunker::site

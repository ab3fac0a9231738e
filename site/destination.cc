// Destinations (site/gate.h): where a release may create things, resolved once to a directory
// descriptor and a path below it. Nothing here follows a symlink that a requester could plant:
// the site's destinations come from the operator's site file; the rest is created no-follow.
#include <fcntl.h>
#include <pwd.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "capsule/beneath.h"
#include "capsule/paths.h"
#include "crypto/status_hint.h"
#include "crypto/status_macros.h"
#include "site/gate.h"

namespace bunker::site {
namespace {

// The name of the user this process runs as (the site's user, in its daemon), for hints.
std::string DaemonUser() {
  struct passwd pw, *found = nullptr;
  char buf[4096];
  if (::getpwuid_r(::geteuid(), &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return absl::StrCat(::geteuid());
}

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

std::string Joined(const std::string& root, absl::string_view relative) {
  if (relative.empty()) return root;
  return absl::StrCat(root == "/" ? "" : root, "/", relative);
}

absl::Status MayNot(const std::string& what, const std::string& folder, const Rights& r) {
  return absl::PermissionDeniedError(absl::StrCat("uid ", r.uid, " may not ", what, " ",
                                                  capsule::QuotePath(folder),
                                                  ": the site's verifier releases only where "
                                                  "its requester could write"));
}

// The parent of `relative` below the site destination `root` (opened as `fd`), for `r`: each
// folder on the way searchable by `r`, the parent writable, nothing created. Each folder is
// checked on the descriptor the walk goes on with, so a rename after its check changes
// nothing. Then what is at the destination: an existing directory must be `r`'s.
absl::StatusOr<Destination> ParentFor(capsule::Fd fd, const std::string& root,
                                      const std::string& relative, const std::string& shown,
                                      const Rights& r) {
  const size_t slash = relative.rfind('/');
  const std::string parent = slash == std::string::npos ? "" : relative.substr(0, slash);
  Destination out;
  out.shown = shown;
  out.relative = slash == std::string::npos ? relative : relative.substr(slash + 1);
  out.root = std::move(fd);
  size_t at = 0;
  while (true) {
    const std::string folder =
        at == 0 ? root : Joined(root, absl::string_view(parent).substr(0, at - 1));
    struct stat st;
    if (::fstat(out.root.get(), &st) != 0) return capsule::PathError("cannot use", folder, errno);
    const bool last = at >= parent.size();
    if (!MayAccess(out.root.get(), st, r, last ? (W_OK | X_OK) : X_OK)) {
      return MayNot(last ? "create entries in" : "search", folder, r);
    }
    if (last) break;
    const size_t end = std::min(parent.find('/', at), parent.size());
    absl::StatusOr<capsule::Fd> next =
        capsule::OpenBeneath(out.root.get(), parent.substr(at, end - at), O_PATH | O_DIRECTORY);
    if (!next.ok()) {
      const std::string missing = Joined(root, absl::string_view(parent).substr(0, end));
      if (absl::IsNotFound(next.status())) {
        return absl::NotFoundError(absl::StrCat(
            "folder ", capsule::QuotePath(missing),
            " does not exist: the site's verifier creates only the destination itself "
            "(mkdir -p its parent first)"));
      }
      if (absl::IsPermissionDenied(next.status()) &&
          absl::StrContains(next.status().message(), "symbolic link")) {
        return absl::PermissionDeniedError(absl::StrCat(
            capsule::QuotePath(missing), " is or goes through a symbolic link"));
      }
      if (absl::IsPermissionDenied(next.status())) {  // the daemon's own rights fall short
        return absl::PermissionDeniedError(absl::StrCat(
            "the site's verifier cannot search folder ", capsule::QuotePath(missing),
            ": a destination's folders must be searchable by the site's user too"));
      }
      return absl::Status(next.status().code(),
                          absl::StrCat("cannot use destination ", capsule::QuotePath(shown), ": ",
                                       next.status().message()));
    }
    out.root = *std::move(next);
    at = end + 1;
  }
  // An archive's new name is made durable by syncing its folder, which the daemon must be able
  // to read: found out before anything is decided, not after the file is named.
  if (capsule::Fd readable(::openat(out.root.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      !readable.valid()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the site's verifier cannot read folder ", capsule::QuotePath(Joined(root, parent)),
        " (it syncs the folder of what it releases): ", std::strerror(errno)));
  }
  // The daemon creates the release with its own rights too: the folder must be writable by
  // the site's user as well as by the requester (a destination root is mode 1777).
  if (::faccessat(out.root.get(), ".", W_OK | X_OK, AT_EACCESS) != 0) {
    // A user's own `mkdir ROOT/alice` (0755) is the usual cause: say both ways out.
    return WithHint(
        absl::PermissionDeniedError(absl::StrCat(
            "the site's verifier cannot create entries in folder ",
            capsule::QuotePath(Joined(root, parent)),
            ": a destination's folder must be writable by the site's user too (as the site's "
            "destinations are, mode 1777)")),
        absl::StrCat("release straight into the destination (", root,
                     "/NAME), or let the site's user write your folder: setfacl -m u:",
                     DaemonUser(), ":rwx ", Joined(root, parent)));
  }
  struct stat st;
  if (::fstatat(out.root.get(), out.relative.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISDIR(st.st_mode)) {
    if (st.st_uid != r.uid && r.uid != 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          "destination ", capsule::QuotePath(shown), " is a folder of uid ", st.st_uid,
          ", not yours: name a new one, or an empty folder of your own"));
    }
    // In a sticky folder only the owner of an entry (or of the folder) may replace it.
    struct stat folder;
    if (::fstat(out.root.get(), &folder) == 0 && (folder.st_mode & S_ISVTX) != 0 &&
        folder.st_uid != ::geteuid() && st.st_uid != ::geteuid()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "destination ", capsule::QuotePath(shown),
          " exists in a sticky folder, where the site's verifier cannot replace it: remove it "
          "(the release creates it)"));
    }
  }
  return out;
}

}  // namespace

bool MayAccess(int fd, const struct stat& st, const Rights& rights, int want) {
  if (rights.uid == 0) return true;
  mode_t bits;
  if (st.st_uid == rights.uid) {
    bits = (st.st_mode >> 6) & 7;
  } else {
    // With an access ACL the group bits are its mask, not the group's rights, and named
    // entries may deny more: only the owner class is read exactly.
    const std::string proc = absl::StrCat("/proc/self/fd/", fd);
    if (::getxattr(proc.c_str(), "system.posix_acl_access", nullptr, 0) >= 0) return false;
    const bool member =
        st.st_gid == rights.gid ||
        std::find(rights.groups.begin(), rights.groups.end(), st.st_gid) != rights.groups.end();
    bits = member ? (st.st_mode >> 3) & 7 : st.st_mode & 7;
  }
  return (static_cast<int>(bits) & want) == want;
}

absl::StatusOr<Destination> ResolveDestination(const SiteConfig& site, const std::string& path,
                                               const std::optional<Rights>& acting_for) {
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
      if (acting_for) return ParentFor(std::move(out.root), d, out.relative, path, *acting_for);
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
    const absl::StatusOr<bool> empty = capsule::DirectoryIsEmpty(fd->get(), "");
    if (!empty.ok()) return absl::OkStatus();  // the release reports what is wrong
    if (!*empty) return absl::AlreadyExistsError(absl::StrCat("destination ", shown, " is not empty"));
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

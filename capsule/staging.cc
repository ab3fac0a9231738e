#include "capsule/staging.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "capsule/paths.h"
#include "crypto/status_macros.h"

namespace bunker::capsule {
namespace {

constexpr char kRoot[] = "root";  // the tree's root inside the staging directory
constexpr int kStagingAttempts = 100;

}  // namespace

absl::StatusOr<Destination> PrepareDestination(int root_fd, const std::string& relative,
                                               const std::string& display,
                                               CreatedDirs* created,
                                               const std::optional<FileOwner>& owner) {
  if (absl::Status s = CheckRelativePath(relative); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("destination ", QuotePath(display), " is not usable: ", s.message()));
  }
  Destination d;
  const size_t slash = relative.rfind('/');
  if (slash == std::string::npos) {
    d.base = relative;
    d.parent.Reset(::fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
    if (!d.parent.valid()) return PathError("cannot use destination", display, errno);
  } else {
    d.base = relative.substr(slash + 1);
    absl::StatusOr<Fd> parent =
        // Never given to `owner`: a directory reached by a name that a user can swap (even one
        // the call just made) must not be chowned; the parents stay the process's own, 0755
        // under the verifier's umask (spec/VERIFIER.md "Destinations").
        MakeDirsBeneath(root_fd, relative.substr(0, slash), 0755, created, std::nullopt);
    if (!parent.ok()) {
      return absl::Status(parent.status().code(),
                          absl::StrCat("cannot create the parent of destination ",
                                       QuotePath(display), ": ", parent.status().message()));
    }
    d.parent = *std::move(parent);
  }

  struct stat st;
  if (::fstatat(d.parent.get(), d.base.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    Fd dir;
    if (S_ISDIR(st.st_mode)) {
      dir.Reset(::openat(d.parent.get(), d.base.c_str(),
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    }
    // Not a directory, or no longer one (a symlink swapped in is never followed).
    if (!dir.valid() || ::fstat(dir.get(), &st) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("destination ", QuotePath(display),
                                                   " already exists and is not a directory"));
    }
    // Checked on the directory opened, the one that will be replaced: whoever can write the
    // parent may have put an empty directory of theirs there (its mode would be kept).
    if (owner.has_value() && owner->uid != 0 && st.st_uid != owner->uid) {
      return absl::PermissionDeniedError(
          absl::StrCat("destination ", QuotePath(display), " is a folder of uid ", st.st_uid,
                       ", not yours: name a new one, or an empty folder of your own"));
    }
    BUNKER_ASSIGN_OR_RETURN(
        const bool empty,
        DirectoryIsEmpty(dir.get(), absl::StrCat("cannot read destination ", QuotePath(display))));
    if (!empty) {
      return absl::AlreadyExistsError(
          absl::StrCat("destination ", QuotePath(display), " is not empty"));
    }
    d.replace = true;
    d.replaced_mode = st.st_mode & 07777;
  } else if (errno != ENOENT) {
    return PathError("cannot use destination", display, errno);
  }
  return d;
}

Staging::~Staging() {
  if (writer_.has_value()) {
    if (!committed_) {
      RemoveContentsBeneath(writer_->root_fd());
      ::unlinkat(dir_.get(), kRoot, AT_REMOVEDIR);
    }
    writer_.reset();
  }
  // By name, in a parent others may write to: rmdir only ever removes an empty directory.
  if (dir_.valid()) ::unlinkat(parent_, name_.c_str(), AT_REMOVEDIR);
}

absl::Status Staging::Create(const Destination& d, const std::string& display,
                             const std::optional<FileOwner>& owner) {
  parent_ = d.parent.get();
  auto fail = [&](int err) {
    return PathError("cannot create a staging directory beside", display, err);
  };
  // The base name is shortened so that the staging name stays within NAME_MAX.
  const std::string prefix = absl::StrCat(".", d.base.substr(0, 128), ".bunker-");
  for (int attempt = 0; !dir_.valid(); ++attempt) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char random[6];
    if (::getrandom(random, sizeof random, 0) != static_cast<ssize_t>(sizeof random)) {
      return fail(errno);
    }
    name_ = prefix;
    for (unsigned char r : random) name_ += kAlphabet[r % (sizeof kAlphabet - 1)];
    // 0700 for the whole run: no other user can look into or race with a half-written tree.
    if (::mkdirat(parent_, name_.c_str(), 0700) != 0) {
      if (errno == EEXIST && attempt < kStagingAttempts) continue;
      return fail(errno);
    }
    dir_.Reset(::openat(parent_, name_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir_.valid()) return fail(errno);  // swapped already: not ours to remove
    // Whoever can write to the parent could swap in a directory of their own between mkdirat
    // and openat, to look into the tree; they cannot make one that is ours and private.
    struct stat st;
    if (::fstat(dir_.get(), &st) != 0) return fail(errno);
    if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
      dir_.Reset();
      return absl::PermissionDeniedError(absl::StrCat(
          "the staging directory beside ", QuotePath(display), " was replaced while made"));
    }
  }
  // The tree's root is a subdirectory made with mkdir(2), so that it ends up with the ordinary
  // umask-derived mode, not the staging directory's 0700.
  BUNKER_ASSIGN_OR_RETURN(TreeWriter writer,
                          TreeWriter::MakeRoot(dir_.get(), kRoot, owner, display));
  writer_.emplace(std::move(writer));
  return absl::OkStatus();
}

absl::Status Staging::Commit(const Destination& d, const std::string& display) {
  int r;
  if (d.replace) {
    r = ::renameat(dir_.get(), kRoot, d.parent.get(), d.base.c_str());
  } else {
    r = ::renameat2(dir_.get(), kRoot, d.parent.get(), d.base.c_str(), RENAME_NOREPLACE);
    // A filesystem without RENAME_NOREPLACE: a plain rename still refuses anything at `base`
    // but an empty directory, which is what a replacing extraction accepts anyway.
    if (r != 0 && errno == EINVAL)
      r = ::renameat(dir_.get(), kRoot, d.parent.get(), d.base.c_str());
  }
  if (r != 0) {
    const int err = errno;
    if (err == ENOTEMPTY || err == EEXIST) {
      return absl::AlreadyExistsError(
          absl::StrCat("destination ", QuotePath(display),
                       err == EEXIST ? " appeared during extraction" : " is not empty"));
    }
    if (err == ENOTDIR) {
      return absl::AlreadyExistsError(absl::StrCat("destination ", QuotePath(display),
                                                   " already exists and is not a directory"));
    }
    return PathError("cannot move the extracted tree to", display, err);
  }
  committed_ = true;
  return absl::OkStatus();
}

}  // namespace bunker::capsule

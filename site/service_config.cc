// What the verifier service takes from the site file besides the gate's own settings: which
// s3:// capsules it may read (the site's store), and which local users' keys sign requests
// (site/service.h).
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>

#include <cerrno>

#include <map>
#include <string>

#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "capsule/beneath.h"
#include "capsule/io.h"
#include "capsule/paths.h"
#include "capsule/store.h"
#include "capsule/key_files.h"
#include "crypto/status_macros.h"
#include "site/service.h"

namespace bunker::site {

absl::StatusOr<capsule::s3::Location> StoreObjectOf(const SiteConfig& site,
                                                    const std::string& url) {
  BUNKER_ASSIGN_OR_RETURN(capsule::s3::Location at, capsule::s3::ParseUrl(url));
  if (!capsule::s3::IsS3Url(site.store)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "site ", site.site, " keeps its capsules on disk, not in S3: it reads no s3:// URL"));
  }
  absl::StatusOr<capsule::s3::Location> store = capsule::s3::ParseUrl(site.store);
  if (!store.ok()) return store.status();
  std::string prefix = store->key;
  if (!prefix.empty() && prefix.back() != '/') prefix += '/';
  if (at.bucket != store->bucket || at.key.size() <= prefix.size() ||
      at.key.compare(0, prefix.size(), prefix) != 0 || at.key.back() == '/') {
    return absl::PermissionDeniedError(absl::StrCat(
        "site ", site.site, " reads only capsules inside its own store ",
        capsule::s3::ToUrl(capsule::s3::Location{store->bucket, prefix}), "; ", url, " is outside it"));
  }
  // Only capsules, named as the store names them (<prefix><capsule id>.capsule): never its
  // markers, uploads in progress or anything else kept under the prefix.
  absl::string_view name = absl::string_view(at.key).substr(prefix.size());
  constexpr absl::string_view kSuffix = ".capsule";
  if (!absl::ConsumeSuffix(&name, kSuffix) || !capsule::IsCapsuleId(std::string(name))) {
    return absl::PermissionDeniedError(absl::StrCat(
        "site ", site.site, " reads only capsules of its store, named ",
        capsule::s3::ToUrl(capsule::s3::Location{store->bucket, prefix}),
        "<32 lowercase hex>.capsule; ", url, " is not one"));
  }
  return at;
}

absl::StatusOr<capsule::Fd> OpenStoreFile(const SiteConfig& site, const std::string& name) {
  if (site.StoreIsS3() || site.store.empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "site ", site.site, " keeps its capsules in ", site.store.empty() ? "no store" : site.store,
        ", not in a folder: it reads no capsule by name"));
  }
  // Only a capsule's own name, never a path: the daemon's rights reach no other file for a user.
  absl::string_view id = name;
  if (!absl::ConsumeSuffix(&id, ".capsule") || !capsule::IsCapsuleId(std::string(id))) {
    return absl::PermissionDeniedError(absl::StrCat(
        "site ", site.site, " reads only capsules of its store, named ", site.store,
        "/<32 lowercase hex>.capsule; ", capsule::QuotePath(name), " is not one"));
  }
  // The store folder is the site file's own (the operator's, symlinks allowed); below it, the
  // capsule is reached without following a link.
  const int dir = ::open(site.store.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("capsule ", id, " is not in the store ", site.store));
    }
    return capsule::ErrnoStatus(absl::StrCat("cannot open the store ", site.store), errno);
  }
  capsule::Fd store(dir);
  // O_NONBLOCK: a FIFO planted in the store must not hang the daemon.
  absl::StatusOr<capsule::Fd> fd = capsule::OpenBeneath(store.get(), name, O_RDONLY | O_NONBLOCK);
  if (!fd.ok()) {
    if (absl::IsNotFound(fd.status())) {
      return absl::NotFoundError(absl::StrCat("capsule ", id, " is not in the store ", site.store));
    }
    if (absl::IsPermissionDenied(fd.status())) {
      return absl::PermissionDeniedError(absl::StrCat(site.store, "/", name,
                                                      " is not a capsule of the store: ",
                                                      fd.status().message()));
    }
    return fd.status();
  }
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) {
    return capsule::ErrnoStatus(absl::StrCat("cannot stat ", site.store, "/", name), errno);
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(site.store, "/", name, " is not a regular file"));
  }
  return std::move(*fd);
}

absl::StatusOr<std::map<uid_t, crypto::PublicIdentity>> LoadUsers(const SiteConfig& site) {
  std::map<uid_t, crypto::PublicIdentity> out;
  for (const auto& [user, key_path] : site.users) {
    struct passwd pw, *found = nullptr;
    char buf[4096];
    if (::getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(site.path, ": $.users: no local user named \"", user, "\""));
    }
    BUNKER_ASSIGN_OR_RETURN(crypto::PublicIdentity key, capsule::LoadPublicIdentity(key_path));
    out[found->pw_uid] = key;
  }
  return out;
}

}  // namespace bunker::site

// What the verifier service takes from the site file besides the gate's own settings: which
// s3:// capsules it may read (the site's store), and which local users' keys sign requests
// (site/service.h).
#include <pwd.h>

#include <map>
#include <string>

#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
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

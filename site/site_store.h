// The store a site's daemon keeps received capsules in (capsule/store.h), as its site file
// says: a local folder, or "store": "s3://BUCKET/PREFIX" with the optional "s3" settings
// (spec/STORE.md, spec/POLICY.md "Site configuration").
#ifndef BUNKER_SITE_SITE_STORE_H_
#define BUNKER_SITE_SITE_STORE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "capsule/s3_client.h"
#include "capsule/store.h"
#include "site/site_config.h"

namespace bunker::site {

// Opens the site's store; touches nothing remote. For S3: endpoint, region and credentials as
// capsule::s3::ConfigFromEnvironment (the site file's credentialsFile first, its endpoint and
// region over the environment's); the spool and journals in <state>/s3-spool; this daemon's id
// in <state>/daemon-id (made at first use). `log` gets the store's lines (may be empty).
// kInvalidArgument for a bad URL, kNotFound when no credentials are found, kPermissionDenied for
// a credentials file others may read.
// `client`: the client SiteS3Client made (shared with whatever else in the daemon reads the
// store); null: one is made here.
absl::StatusOr<std::shared_ptr<capsule::Store>> OpenSiteStore(
    const SiteConfig& site, std::function<void(const std::string&)> log,
    std::shared_ptr<capsule::s3::Client> client = nullptr);

// The S3 client of a site whose store is in S3, with the site file's "s3" settings (as
// OpenSiteStore); touches nothing remote.
absl::StatusOr<std::shared_ptr<capsule::s3::Client>> SiteS3Client(const SiteConfig& site);

// This daemon's id among the daemons of one bucket: <state>/daemon-id, 16 random hex
// characters written once (atomically) and read afterwards.
absl::StatusOr<std::string> DaemonId(const std::string& state);

}  // namespace bunker::site

#endif  // BUNKER_SITE_SITE_STORE_H_

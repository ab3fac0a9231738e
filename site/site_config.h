// Site configuration files (spec/site.capnp, spec/POLICY.md "Site configuration"), JSON.
#ifndef BUNKER_SITE_SITE_CONFIG_H_
#define BUNKER_SITE_SITE_CONFIG_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "verifier/verifier.h"

namespace bunker::site {

// One entry of "witnesses": a peer that keeps our audit checkpoints, and its daemon's address.
struct SiteWitness {
  std::string key;      // absolute path of its public key file (also one of `peers`)
  std::string address;  // host:port
};

// The largest "mountCacheMiB" a site file may give (1 TiB of cache).
inline constexpr uint64_t kMaxMountCacheMiB = uint64_t{1} << 20;

struct SiteConfig {
  std::string path;                     // the configuration file itself
  std::string site;
  std::string region;
  std::vector<std::string> storage;
  std::string identity;                 // absolute path
  std::vector<std::string> trust;       // absolute paths
  std::vector<std::string> destinations;  // absolute, normalized paths
  std::string state;                    // absolute path
  std::string listen;                   // transfer daemon fields, not validated here
  std::vector<std::string> peers;
  std::string store;  // an absolute path, or "s3://BUCKET/PREFIX" (spec/STORE.md)
  // "s3": how to reach an S3 store; empty strings when absent (the AWS conventions apply).
  std::string s3_credentials_file;  // absolute path
  std::string s3_endpoint;
  std::string s3_region;
  uint64_t s3_part_mib = 0;  // 0: the default
  std::string socket;  // the verifier service's Unix socket (absolute); "" for none
  // Local user name -> requester public key file (absolute), for requests without --as.
  std::vector<std::pair<std::string, std::string>> users;
  std::vector<SiteWitness> witnesses;   // spec/POLICY.md "Site configuration"
  // "mountCacheMiB": the bound on one mount's decrypted-chunk cache, in MiB; 0 when absent (the
  // daemon's default applies). At most kMaxMountCacheMiB.
  uint64_t mount_cache_mib = 0;

  bool StoreIsS3() const { return store.rfind("s3://", 0) == 0; }

  // The facts a policy decision needs.
  verifier::SiteFacts Facts() const { return {site, region, storage, state, nullptr}; }
};

// Loads and validates `path`: known fields only (kInvalidArgument with the JSON path of an
// unknown one), `site`, `identity`, `state` and at least one `trust` and `destinations` entry
// required; relative paths resolved against the file's folder.
absl::StatusOr<SiteConfig> LoadSiteConfig(const std::string& path);


}  // namespace bunker::site

#endif  // BUNKER_SITE_SITE_CONFIG_H_

#include "site/site_store.h"

#include <sys/stat.h>

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/s3_client.h"
#include "capsule/s3_store.h"
#include "crypto/secret.h"

namespace bunker::site {

absl::StatusOr<std::string> DaemonId(const std::string& state) {
  const std::string path = state + "/daemon-id";
  absl::StatusOr<std::string> text = capsule::ReadSmallFile(path, 256);
  if (text.ok()) {
    std::string id(absl::StripAsciiWhitespace(*text));
    if (id.empty() || id.size() > 64 ||
        id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos) {
      return absl::DataLossError(absl::StrCat(path, " is not a daemon id (1 to 64 of [a-z0-9-])"));
    }
    return id;
  }
  if (!absl::IsNotFound(text.status())) return text.status();
  ::mkdir(state.c_str(), 0700);
  uint8_t raw[8];
  crypto::RandomBytes(absl::MakeSpan(raw));
  std::string id;
  for (uint8_t b : raw) absl::StrAppend(&id, absl::Hex(b, absl::kZeroPad2));
  absl::StatusOr<std::unique_ptr<capsule::AtomicFileWriter>> w =
      capsule::AtomicFileWriter::Create(path, 0600);
  if (!w.ok()) return w.status();
  const std::string line = id + "\n";
  absl::Status s = (*w)->Append(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(line.data()), line.size()));
  if (s.ok()) s = (*w)->Commit();
  if (absl::IsAlreadyExists(s)) return DaemonId(state);  // another start made it first
  if (!s.ok()) return s;
  return id;
}

absl::StatusOr<std::shared_ptr<capsule::s3::Client>> SiteS3Client(const SiteConfig& site) {
  absl::StatusOr<capsule::s3::Config> config =
      capsule::s3::ConfigFromEnvironment(site.s3_credentials_file);
  if (!config.ok()) return config.status();
  if (!site.s3_endpoint.empty()) config->endpoint = site.s3_endpoint;
  if (!site.s3_region.empty()) config->region = site.s3_region;
  absl::StatusOr<std::unique_ptr<capsule::s3::Client>> client =
      capsule::s3::Client::Create(std::move(*config));
  if (!client.ok()) return client.status();
  return std::shared_ptr<capsule::s3::Client>(std::move(*client));
}

absl::StatusOr<std::shared_ptr<capsule::Store>> OpenSiteStore(
    const SiteConfig& site, std::function<void(const std::string&)> log,
    std::shared_ptr<capsule::s3::Client> client) {
  if (!site.StoreIsS3()) return capsule::MakeLocalStore(site.store);
  absl::StatusOr<capsule::s3::Location> at = capsule::s3::ParseUrl(site.store);
  if (!at.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(site.path, ": $.store: ", at.status().message()));
  }
  std::string prefix = at->key;
  if (!prefix.empty() && prefix.back() != '/') prefix += '/';
  if (prefix.size() > capsule::kMaxPrefixSize) {
    return absl::InvalidArgumentError(absl::StrCat(site.path, ": $.store: the prefix is longer than ",
                                                   capsule::kMaxPrefixSize, " bytes"));
  }
  if (client == nullptr) {
    absl::StatusOr<std::shared_ptr<capsule::s3::Client>> made = SiteS3Client(site);
    if (!made.ok()) return made.status();
    client = std::move(*made);
  }
  absl::StatusOr<std::string> daemon = DaemonId(site.state);
  if (!daemon.ok()) return daemon.status();
  capsule::S3StoreOptions o;
  o.client = std::move(client);
  o.bucket = at->bucket;
  o.prefix = prefix;
  o.spool = site.state + "/s3-spool";
  o.boots_file = site.state + "/s3-boots";
  o.daemon_id = *daemon;
  if (site.s3_part_mib != 0) o.min_part_size = site.s3_part_mib << 20;
  o.log = std::move(log);
  return capsule::MakeS3Store(std::move(o));
}

}  // namespace bunker::site

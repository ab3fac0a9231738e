// How open, ls, cat and policy explain reach a verifier: the site's service over its socket
// (the deployed shape), the site key in this process (--direct, for the operator), or a
// recipient's own key offline. Presentation stays in the commands.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "capsule/io.h"
#include "capsule/key_files.h"
#include "capsule/s3_client.h"
#include "capsule/store.h"
#include "cli/context.h"
#include "site/client.h"
#include "site/gate.h"
#include "site/site_config.h"
#include "site/state_lock.h"

namespace bunker::cli {
namespace {

// The requester named by --as: a private key (possession proves it), or, when the command
// releases nothing, a public one.
struct AsKey {
  std::optional<crypto::Identity> identity;
  std::optional<crypto::PublicIdentity> public_only;
  std::optional<crypto::PublicIdentity> Public() const {
    if (identity) return identity->public_identity();
    return public_only;
  }
};

absl::StatusOr<AsKey> LoadAs(const Args& a, bool may_be_public) {
  AsKey out;
  if (!a.Has("as")) return out;
  absl::StatusOr<crypto::Identity> as = capsule::LoadIdentity(a.Get("as"));
  if (as.ok()) {
    out.identity.emplace(std::move(*as));
  } else if (may_be_public && absl::StrContains(as.status().message(), "is a public key")) {
    absl::StatusOr<crypto::PublicIdentity> pub = capsule::LoadPublicIdentity(a.Get("as"));
    if (!pub.ok()) return pub.status();
    out.public_only = *pub;
  } else {
    return as.status();
  }
  return out;
}

std::string AbsolutePath(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  char buf[PATH_MAX];
  if (::getcwd(buf, sizeof buf) == nullptr) return path;
  return absl::StrCat(buf, "/", path);
}

// The name of `capsule_path` in `site`'s store folder ("<id>.capsule"), which only the site's
// user may read, when the user names a capsule of that folder: a bare capsule id that is no file
// here, or a path whose folder is the store (the same folder, however reached) and whose name is
// "<id>.capsule". Empty otherwise (and for a store in S3): the capsule is then the user's to open.
// Only a hint to the service, which checks the name itself (site::OpenStoreFile).
std::string StoreNameOf(const site::SiteConfig& site, const std::string& capsule_path) {
  if (site.store.empty() || site.StoreIsS3()) return "";
  struct stat st {};
  if (capsule::IsCapsuleId(capsule_path) && ::stat(capsule_path.c_str(), &st) != 0) {
    return capsule_path + ".capsule";
  }
  const size_t slash = capsule_path.rfind('/');
  const std::string folder = slash == std::string::npos ? "."
                             : slash == 0               ? "/"
                                                        : capsule_path.substr(0, slash);
  const std::string name =
      slash == std::string::npos ? capsule_path : capsule_path.substr(slash + 1);
  absl::string_view id = name;
  if (!absl::ConsumeSuffix(&id, ".capsule") || !capsule::IsCapsuleId(std::string(id))) return "";
  struct stat in {}, store {};
  if (::stat(folder.c_str(), &in) != 0 || ::stat(site.store.c_str(), &store) != 0) return "";
  if (in.st_dev != store.st_dev || in.st_ino != store.st_ino) return "";
  return name;
}

site::WireRequest ToWire(const site::SiteRequest& r) {
  site::WireRequest w;
  w.command = r.command;
  w.purpose = r.who.purpose;
  w.only = r.only;
  w.destination = r.destination.empty() ? "" : AbsolutePath(r.destination);
  w.path = r.path;
  w.threads = static_cast<uint32_t>(std::max(0, r.threads));
  w.mountpoint = r.mountpoint;
  w.cache_bytes = r.mount.cache_bytes;
  return w;
}

}  // namespace

std::vector<OptionSpec> ReleaseOptions() {
  return {
      {"site", true, false,
       "site configuration: its verifier, identity, trust and rules; CAPSULE may then be the id "
       "of a capsule in the site's store",
       "FILE"},
      {"identity", true, false, "your private key (a recipient), without --site", "KEY"},
      {"trust", true, true, "trusted issuer public key or folder, without --site", "PUB|DIR"},
      {"as", true, false, "the requester's private key, for policies naming requesters", "KEY"},
      {"purpose", true, false, "the declared purpose, for policies naming purposes", "P"},
      {"direct", false, false,
       "with --site: decide in this process with the site key (operators), not via the "
       "site's verifier service"},
  };
}

std::string ReleaseUsageProblem(const Args& a) {
  if (a.Has("site") && (a.Has("identity") || a.Has("trust"))) {
    return "with --site, the identity and trusted keys come from the site file";
  }
  if (!a.Has("site") && !a.Has("identity")) {
    return "give --site SITE.json, or --identity KEY with --trust";
  }
  if (!a.Has("site") && a.Has("direct")) return "--direct goes with --site";
  if (a.Has("identity") && !a.Has("trust")) {
    return "--trust is required: name the issuer public keys you trust";
  }
  return "";
}

absl::StatusOr<SiteRun> RunSiteRequest(const Context& ctx, const std::string& capsule_path,
                                       site::SiteRequest request) {
  const Args& a = ctx.args();
  if (a.Has("purpose")) request.who.purpose = a.Get("purpose");
  request.now = static_cast<int64_t>(std::time(nullptr));
  absl::Status limits = site::CheckRequestLimits(request);
  if (!limits.ok()) return limits;
  const bool explain = request.command == site::Command::kExplain;
  absl::StatusOr<AsKey> as = LoadAs(a, /*may_be_public=*/explain);
  if (!as.ok()) return as.status();
  request.who.key = as->Public();

  SiteRun run;
  std::optional<site::SiteConfig> config;
  if (a.Has("site")) {
    absl::StatusOr<site::SiteConfig> loaded = site::LoadSiteConfig(a.Get("site"));
    if (!loaded.ok()) return loaded.status();
    config = std::move(*loaded);
    run.site = config->site;
    run.region = config->region;
    run.storage = config->storage;
  }

  if (config && !config->socket.empty() && !a.Has("direct")) {
    // The deployed shape: the site's verifier decides and releases; this process only passes
    // the capsule (opened with the user's own rights) and, for streams, its output.
    // A capsule of the site's own store (an s3:// object, or "<id>.capsule" of its store
    // folder, which only the site's user may read) is named, and the service reads it from
    // there; any other file is passed open (the service never opens a path a user names).
    capsule::Fd capsule_fd;
    site::ServiceCall call;
    call.request = ToWire(request);
    const std::string stored = StoreNameOf(*config, capsule_path);
    if (capsule::s3::IsS3Url(capsule_path)) {
      absl::StatusOr<capsule::s3::Location> at = capsule::s3::ParseUrl(capsule_path);
      if (!at.ok()) return at.status();
      call.request.capsule_url = capsule_path;
    } else if (!stored.empty()) {
      call.request.capsule_url = stored;
    } else {
      // O_NONBLOCK: a FIFO must not hang us; the service takes only a regular file.
      const int fd = ::open(capsule_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) {
        return capsule::ErrnoStatus(absl::StrCat("cannot open ", capsule_path), errno);
      }
      capsule_fd.Reset(fd);
    }
    call.capsule_fd = capsule_fd.get();
    call.output_fd = request.output_fd;
    call.mount_fds = request.mount_fds;
    if (as->identity) call.requester = &*as->identity;
    call.requester_public = as->public_only;
    call.progress = request.progress;
    call.entries = request.entries;
    call.cancelled = [] { return Interrupted(); };
    absl::StatusOr<site::WireResult> result = site::CallService(config->socket, call);
    if (!result.ok()) return result.status();  // an interrupt says what it left written
    run.status = result->status;
    run.outcome = std::move(result->outcome);
    run.site = result->site;
    run.region = result->region;
    run.storage = result->storage;
    return run;
  }

  // In this process: the operator with the site key (--direct, or a site without a service),
  // or a recipient offline.
  if (request.command == site::Command::kMount) {
    return absl::FailedPreconditionError(
        "capsule mount is served by the site's verifier service: give --site with a site file "
        "that names a \"socket\" (and no --direct)");
  }
  std::optional<crypto::Identity> identity;
  std::vector<crypto::PublicIdentity> trusted;
  {
    const std::string key_path = config ? config->identity : a.Get("identity");
    absl::StatusOr<crypto::Identity> id = capsule::LoadIdentity(key_path);
    if (!id.ok()) {
      if (config && absl::IsPermissionDenied(id.status()) && config->socket.empty()) {
        return absl::PermissionDeniedError(absl::StrCat(
            id.status().message(), "; the site names no verifier service (\"socket\") for "
                                   "its users"));
      }
      return id.status();
    }
    identity.emplace(std::move(*id));
    absl::StatusOr<std::vector<crypto::PublicIdentity>> t =
        capsule::LoadTrust(config ? config->trust : a.GetAll("trust"));
    if (!t.ok()) return t.status();
    trusted = std::move(*t);
  }
  // Then (whoever cannot read the key is told that first): the operator's process writes the
  // site's state (audit log, use counts) as its own user, so only as the user the state belongs
  // to, or the service would be shut out of files written by another (root).
  if (config) {
    absl::Status own = site::CheckRunsAsStateOwner(*config, ctx.Who() + " --direct",
                                                   ctx.Who() + " ... --direct");
    if (!own.ok()) return own;
  }
  std::optional<site::Gate> gate;
  if (config) {
    gate.emplace(*config, *identity, trusted);
  } else {
    gate.emplace(*identity, trusted);
  }
  request.cancelled = [] { return Interrupted(); };
  // A bare capsule id names the site's stored capsule here too (the operator reads the store).
  const std::string path =
      config && capsule::IsCapsuleId(capsule_path) && !StoreNameOf(*config, capsule_path).empty()
          ? absl::StrCat(config->store, "/", capsule_path, ".capsule")
          : capsule_path;
  absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> file =
      capsule::s3::OpenFileOrObject(path, "", request.cancelled);
  if (!file.ok()) return file.status();
  absl::StatusOr<site::Outcome> outcome =
      site::HandleRequest(*gate, std::move(*file), path, request);
  if (!outcome.ok()) {
    if (absl::IsCancelled(outcome.status())) return CheckInterrupted();
    run.status = outcome.status();
  } else {
    run.outcome = std::move(*outcome);
  }
  return run;
}

}  // namespace bunker::cli

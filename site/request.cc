#include "site/request.h"

#include "absl/strings/str_cat.h"
#include "crypto/status_macros.h"

namespace bunker::site {
namespace {

constexpr size_t kEntryBatch = 256;

absl::StatusOr<Destination> DestinationFor(const Gate& gate, const SiteRequest& r) {
  return gate.site() != nullptr ? ResolveDestination(*gate.site(), r.destination, r.acting_for)
                                : LocalDestination(r.destination);
}

ReleaseOptions OptionsFor(const Gate& gate, const SiteRequest& r, uint64_t total) {
  ReleaseOptions o;
  // At a site, a remote capsule's release spool goes to the site's state folder (the daemon's
  // own disk); offline, to $TMPDIR.
  if (gate.site() != nullptr) o.spool_dir = gate.site()->state;
  o.owner = r.owner;
  o.threads = r.threads;
  o.cancelled = r.cancelled;
  if (r.progress) {
    auto progress = r.progress;
    o.progress = [progress, total](uint64_t done) { progress(done, total); };
  }
  return o;
}

}  // namespace

const char* CommandName(Command command) {
  switch (command) {
    case Command::kOpen:
      return "open";
    case Command::kToTar:
      return "to-tar";
    case Command::kCat:
      return "cat";
    case Command::kLs:
      return "ls";
    case Command::kExplain:
      return "explain";
    case Command::kMount:
      return "mount";
    case Command::kMounts:
      return "mounts";
  }
  return "?";
}

absl::Status CheckRequestLimits(const SiteRequest& r) {
  if (r.who.purpose && r.who.purpose->size() > 256) {
    return absl::InvalidArgumentError("--purpose is limited to 256 bytes");
  }
  size_t only_bytes = 0;
  for (const std::string& p : r.only) only_bytes += p.size();
  // Every decision is recorded with its selection: bounded so that a user cannot grow the
  // site's audit log by more than a few KiB per request.
  if (r.only.size() > 64 || only_bytes > 4096) {
    return absl::InvalidArgumentError("--only is limited to 64 patterns of 4 KiB in all");
  }
  if (r.path.size() > 4096 || r.destination.size() > 4096 || r.mountpoint.size() > 4096) {
    return absl::InvalidArgumentError("a path is limited to 4096 bytes");
  }
  return absl::OkStatus();
}

absl::StatusOr<Outcome> HandleRequest(const Gate& gate,
                                      std::unique_ptr<capsule::RandomAccessFile> file,
                                      const std::string& name, const SiteRequest& r) {
  BUNKER_RETURN_IF_ERROR(CheckRequestLimits(r));
  // What would make the release fail is refused before anything is decided or counted.
  std::optional<Destination> to;
  if (r.command == Command::kOpen || (r.command == Command::kToTar && r.output_fd < 0)) {
    BUNKER_ASSIGN_OR_RETURN(to, DestinationFor(gate, r));
    BUNKER_RETURN_IF_ERROR(CheckDestinationFree(*to));
  }
  if ((r.command == Command::kCat || r.command == Command::kToTar) && !to && r.output_fd < 0) {
    return absl::InvalidArgumentError("no output for the release");
  }

  BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<OpenCapsule> capsule,
                          gate.Open(std::move(file), name, r.threads));
  Outcome out;
  out.capsule_id = CapsuleId(*capsule);
  if (r.who.key) out.requester = r.who.key->fingerprint().ToString();

  if (r.command == Command::kExplain) {
    BUNKER_ASSIGN_OR_RETURN(Explanation e, gate.Explain(*capsule, r.who, r.only, r.now));
    out.decision = std::move(e.decision);
    out.files = e.files;
    return out;
  }
  if (r.command == Command::kLs) {
    BUNKER_ASSIGN_OR_RETURN(std::vector<capsule::FileEntry> entries,
                            gate.List(*capsule, r.who, r.now));
    out.files = entries.size();
    if (r.entries) {
      for (size_t i = 0; i < entries.size(); i += kEntryBatch) {
        std::vector<capsule::FileEntry> batch(
            entries.begin() + i, entries.begin() + std::min(entries.size(), i + kEntryBatch));
        BUNKER_RETURN_IF_ERROR(r.entries(batch));
      }
    }
    return out;
  }

  if (r.command == Command::kMounts) return absl::InvalidArgumentError("not a capsule request");
  if (r.command == Command::kMount) {
    if (!r.mounted) return absl::InvalidArgumentError("no FUSE mount to serve");
    Want want;
    want.kind = Want::Kind::kMount;
    want.only = r.only;
    BUNKER_ASSIGN_OR_RETURN(Permit permit, gate.Decide(std::move(capsule), r.who, want, r.now));
    out.decision = permit.decision();
    BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<MountedCapsule> mounted, permit.Mount(r.mount));
    out.files = mounted->node_count() - 1;
    out.not_after = mounted->not_after() == MountedCapsule::kNever ? 0 : mounted->not_after();
    BUNKER_RETURN_IF_ERROR(r.mounted(std::move(mounted)));
    return out;
  }

  Want want;
  switch (r.command) {
    case Command::kOpen:
      want.kind = Want::Kind::kExtract;
      want.only = r.only;
      break;
    case Command::kToTar:
      want.kind = Want::Kind::kArchive;
      break;
    default:
      want.kind = Want::Kind::kFile;
      want.path = r.path;
      break;
  }
  BUNKER_ASSIGN_OR_RETURN(Permit permit, gate.Decide(std::move(capsule), r.who, want, r.now));
  out.decision = permit.decision();
  const capsule::Manifest& m = permit.manifest();
  switch (r.command) {
    case Command::kOpen: {
      BUNKER_ASSIGN_OR_RETURN(capsule::ExtractStats stats,
                              permit.Extract(*to, OptionsFor(gate, r, m.payload_size)));
      out.files = stats.files;
      out.directories = stats.directories;
      out.symlinks = stats.symlinks;
      out.bytes = stats.bytes;
      break;
    }
    case Command::kToTar:
      if (to) {
        BUNKER_ASSIGN_OR_RETURN(out.bytes,
                                permit.WriteArchive(*to, OptionsFor(gate, r, m.payload_size)));
      } else {
        BUNKER_ASSIGN_OR_RETURN(
            out.bytes, permit.StreamArchive(r.output_fd, OptionsFor(gate, r, m.payload_size)));
      }
      break;
    default:
      BUNKER_ASSIGN_OR_RETURN(
          out.bytes, permit.StreamFile(r.output_fd, OptionsFor(gate, r, permit.file()->size)));
      break;
  }
  return out;
}

}  // namespace bunker::site

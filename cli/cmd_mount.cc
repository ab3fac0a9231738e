// capsule mount / umount / mounts: a capsule's permitted files as a read-only FUSE file system,
// served by the site's verifier service (site/mount.h); this process never holds the data key.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "capsule/beneath.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "capsule/utc.h"
#include "cli/context.h"
#include "crypto/status_macros.h"
#include "site/client.h"
#include "site/mount.h"
#include "site/site_config.h"

namespace bunker::cli {
namespace {

// The mount point as a real path: an empty directory (a mount over a file, or over files,
// would hide what is there and serve nothing useful), checked before anything is asked.
absl::StatusOr<std::string> RealDirectory(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) {
    return capsule::ErrnoStatus(absl::StrCat("cannot use ", path, " as a mount point"), errno);
  }
  const capsule::Fd dir(::open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) {
    const int err = errno;
    if (err == ENOTDIR) {
      return absl::InvalidArgumentError(
          absl::StrCat("mount point ", path, " is not a directory (give an empty one)"));
    }
    return capsule::ErrnoStatus(absl::StrCat("cannot use ", path, " as a mount point"), err);
  }
  BUNKER_ASSIGN_OR_RETURN(
      const bool empty,
      capsule::DirectoryIsEmpty(dir.get(), absl::StrCat("cannot read mount point ", path)));
  if (!empty) {
    return absl::AlreadyExistsError(
        absl::StrCat("mount point ", path, " is not empty (give an empty directory)"));
  }
  return std::string(buf);
}

std::string When(int64_t t) { return t == 0 ? "never" : capsule::FormatUtc(t); }

}  // namespace

int RunMount(int argc, char** argv) {
  static const CommandSpec kSpec{
      "mount",
      "CAPSULE MOUNTPOINT --site SITE.json [--as KEY] [--purpose P] [--only GLOB]... "
      "[--cache-mib N]",
      "Mount the files of a capsule that its policy permits, read-only, at MOUNTPOINT (an empty\n"
      "directory). The site's verifier service decrypts on demand, in memory; nothing decrypted\n"
      "is written to disk. Returns once the mount is ready.",
      "The decision is recorded in the site's audit log (and counts as one open for maxOpens)\n"
      "before the files appear; files the policy does not permit are absent. Only your user can\n"
      "enter the mount. It ends with 'capsule umount MOUNTPOINT' (or fusermount3 -u), by itself\n"
      "when the policy's time window closes (reads then fail with EACCES), or when the site's\n"
      "daemon stops; its summary (files opened, bytes read, duration) goes to the audit log.\n"
      "Every byte comes from a chunk authenticated against the signed chunk table: a corrupt\n"
      "chunk makes the reads that need it fail (EIO), never return wrong bytes.",
      {"CAPSULE", "MOUNTPOINT"},
      {{"site", true, false, "site configuration naming the verifier's \"socket\"", "FILE"},
       {"as", true, false, "the requester's private key, for policies naming requesters", "KEY"},
       {"purpose", true, false, "the declared purpose, for policies naming purposes", "P"},
       {"only", true, true, "mount only paths matching GLOB", "GLOB"},
       {"cache-mib", true, false,
        "decrypted-chunk cache in MiB (default and upper bound: the site's mountCacheMiB, 256 "
        "when unset)", "N"},
       {"threads", true, false, "threads decrypting ahead (default: all cores)", "N"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (!a.Has("site")) return ctx.UsageError("--site SITE.json is required");
  absl::StatusOr<int> threads = ctx.Threads();
  if (!threads.ok()) return ctx.UsageError(std::string(threads.status().message()));
  uint64_t cache_mib = 0;
  if (a.Has("cache-mib") && (!absl::SimpleAtoi(a.Get("cache-mib"), &cache_mib) ||
                             cache_mib < 1 || cache_mib > (uint64_t{1} << 20))) {
    return ctx.UsageError("--cache-mib must be a number of MiB from 1");
  }
  absl::StatusOr<site::SiteConfig> config = site::LoadSiteConfig(a.Get("site"));
  if (!config.ok()) return ctx.Fail(config.status());
  if (config->socket.empty()) {
    return ctx.Fail(absl::FailedPreconditionError(absl::StrCat(
                        config->path, " names no verifier \"socket\": a mount is served by "
                                      "the site's verifier service")),
                    "ask the site's operator to run capsuled with a \"socket\"");
  }
  absl::StatusOr<std::string> mountpoint = RealDirectory(a.positionals()[1]);
  if (!mountpoint.ok()) return ctx.Fail(mountpoint.status());

  // The kernel mount is made here, by this user (so that it is this user's), and handed over.
  absl::StatusOr<site::FuseDevice> device = site::MountFuseDevice(*mountpoint, "capsule");
  if (!device.ok()) return ctx.Fail(device.status());

  site::SiteRequest request;
  request.command = site::Command::kMount;
  request.only = a.GetAll("only");
  request.threads = *threads;
  request.mountpoint = *mountpoint;
  request.mount.cache_bytes = cache_mib << 20;
  request.mount_fds = {device->fuse.get(), device->comm.get()};
  absl::StatusOr<SiteRun> run = RunSiteRequest(ctx, a.positionals()[0], request);
  // The service holds its own copies now (or refused); ours go.
  device->fuse.Reset();
  device->comm.Reset();
  const absl::Status failed = !run.ok() ? run.status() : run->status;
  if (!failed.ok()) {
    (void)site::UnmountFuse(*mountpoint, /*lazy=*/true);
    return ctx.Fail(failed);
  }
  std::printf("mounted %llu entries of capsule %s at %s (until %s)\n",
              static_cast<unsigned long long>(run->outcome.files),
              run->outcome.capsule_id.c_str(), TerminalSafe(*mountpoint).c_str(),
              When(run->outcome.not_after).c_str());
  return kExitOk;
}

int RunUmount(int argc, char** argv) {
  static const CommandSpec kSpec{
      "umount",
      "MOUNTPOINT [--lazy]",
      "End a mount made by capsule mount.",
      "The site's verifier service then records the mount's summary in the audit log. A mount\n"
      "still in use (an open file, a shell inside) is busy: end those, or give --lazy to detach\n"
      "it now and let it end when the last user lets go.",
      {"MOUNTPOINT"},
      {{"lazy", false, false, "detach now, end when no longer in use"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  struct stat st;
  if (::stat(ctx.args().positionals()[0].c_str(), &st) != 0) {
    return ctx.Fail(capsule::ErrnoStatus(
        absl::StrCat("cannot unmount ", ctx.args().positionals()[0]), errno));
  }
  absl::Status s = site::UnmountFuse(ctx.args().positionals()[0], ctx.args().Has("lazy"));
  if (!s.ok()) return ctx.Fail(s);
  return kExitOk;
}

int RunMounts(int argc, char** argv) {
  static const CommandSpec kSpec{
      "mounts",
      "--site SITE.json",
      "List your live mounts at a site (all of them for root).",
      "Shows each mount point, its capsule, since when and until when it is served, and what was\n"
      "read so far.",
      {},
      {{"site", true, false, "site configuration naming the verifier's \"socket\"", "FILE"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  if (!ctx.args().Has("site")) return ctx.UsageError("--site SITE.json is required");
  absl::StatusOr<site::SiteConfig> config = site::LoadSiteConfig(ctx.args().Get("site"));
  if (!config.ok()) return ctx.Fail(config.status());
  if (config->socket.empty()) {
    return ctx.Fail(absl::FailedPreconditionError(
        absl::StrCat(config->path, " names no verifier \"socket\"")));
  }
  site::ServiceCall call;
  call.request.command = site::Command::kMounts;
  size_t shown = 0;
  call.mounts = [&shown](const std::vector<site::MountInfo>& mounts) {
    for (const site::MountInfo& m : mounts) {
      std::printf("%s  capsule %s  uid %u  since %s  until %s  files opened %llu  bytes read "
                  "%llu\n",
                  TerminalSafe(m.mountpoint).c_str(), m.capsule_id.c_str(), m.uid,
                  capsule::FormatUtc(m.since).c_str(), When(m.not_after).c_str(),
                  static_cast<unsigned long long>(m.files_opened),
                  static_cast<unsigned long long>(m.bytes_read));
      ++shown;
    }
    return absl::OkStatus();
  };
  call.cancelled = [] { return Interrupted(); };
  absl::StatusOr<site::WireResult> result = site::CallService(config->socket, call);
  if (!result.ok()) return ctx.Fail(result.status());
  if (!result->status.ok()) return ctx.Fail(result->status);
  if (shown == 0) std::printf("no live mounts\n");
  return kExitOk;
}

}  // namespace bunker::cli

#include "site/service.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <malloc.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <list>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "capsule/beneath.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "capsule/key_files.h"
#include "capsule/paths.h"
#include "capsule/store.h"
#include "crypto/secret.h"
#include "crypto/status_macros.h"
#include "site/gate.h"
#include "site/live_mounts.h"
#include "site/mount.h"
#include "site/protocol.h"
#include "site/request.h"
#include "site/staging_sweep.h"

namespace bunker::site {
namespace {

struct Peer {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::vector<gid_t> groups;  // supplementary, as the client had them when it connected
};

// The supplementary groups of the socket's peer (SO_PEERGROUPS); false when unknown.
bool PeerGroups(int sock, std::vector<gid_t>* groups) {
  groups->resize(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    socklen_t len = static_cast<socklen_t>(groups->size() * sizeof(gid_t));
    if (::getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups->data(), &len) == 0) {
      groups->resize(len / sizeof(gid_t));
      return true;
    }
    if (errno != ERANGE) break;
    groups->resize(len / sizeof(gid_t) + 1);
  }
  groups->clear();
  return false;
}

void SetTimeout(int sock, int option, int seconds) {
  struct timeval tv {};
  tv.tv_sec = seconds;
  ::setsockopt(sock, SOL_SOCKET, option, &tv, sizeof tv);
}

// Whether `fd` is a description its sender could write through (not O_PATH, not read-only).
// The daemon writes only through such a one: it never gains a right the client lacked (a pipe
// is reopened through /proc/self/fd with the daemon's own rights, release_io.cc).
bool OpenForWriting(int fd, bool and_reading = false) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || (flags & O_PATH) != 0) return false;
  const int mode = flags & O_ACCMODE;
  return mode == O_RDWR || (mode == O_WRONLY && !and_reading);
}

// Whether writing into `fd` can never leave a daemon thread blocked for as long as a client
// likes: a regular file (whose writes complete), or a socket (written with MSG_DONTWAIT). A pipe
// or FIFO the daemon cannot reopen non-blocking (it is the client's, mode 0600), a terminal
// stopped with Ctrl-S, or a device may block a write for good: the client relays those.
bool CannotHoldTheDaemon(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode));
}

// Whether the client closed its end (it was interrupted or killed) or sent anything after its
// request, which the protocol does not allow: bytes arriving now may be the request's own
// output, written into a client's end of this connection that was passed as the output.
bool HungUp(int sock) {
  struct pollfd p {sock, POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace

struct VerifierService::Impl {
  ServiceOptions options;
  Gate gate;
  capsule::Fd listener;
  std::thread acceptor;
  std::mutex mu;
  size_t running = 0;
  std::map<uid_t, size_t> per_uid;
  std::atomic<bool> stopping{false};
  // Request threads, joined (not detached) so that each one's thread-local state (OpenSSL's)
  // is gone before the service is.
  struct Worker {
    capsule::Fd sock;  // closed after the join, so that Stop can shut it down safely
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::list<std::unique_ptr<Worker>> workers;  // only the acceptor thread touches the list

  LiveMounts mounts;
  // A mount request's share of its uid's cache budget, given back when the request ends (its
  // live mount, if any, counts its own from then on).
  struct CacheGrant {
    LiveMounts* mounts = nullptr;
    uid_t uid = 0;
    uint64_t bytes = 0;
    ~CacheGrant() {
      if (mounts != nullptr) mounts->ReleaseCache(uid, bytes);
    }
  };

  // Serves `mounted` on the descriptors the client passed, until the mount ends; the mount
  // takes `slot`'s place (given back if it cannot be served).
  absl::Status StartMount(std::unique_ptr<MountedCapsule> mounted, capsule::Fd fuse,
                          capsule::Fd comm, const Peer& peer, const std::string& mountpoint,
                          uint64_t cache_bytes, LiveMounts::Slot slot) {
    auto live = std::make_unique<LiveMounts::Mount>();
    live->uid = peer.uid;
    live->mountpoint = mountpoint;
    live->capsule_id = mounted->capsule_id();
    live->since = static_cast<int64_t>(std::time(nullptr));
    live->not_after = mounted->not_after() == MountedCapsule::kNever ? 0 : mounted->not_after();
    live->cache_bytes = cache_bytes;
    Log(absl::StrCat("mount uid=", peer.uid, " capsule=", live->capsule_id, " at ", mountpoint,
                     ": decrypted-chunk cache up to ", cache_bytes >> 20, " MiB"));
    FuseServeOptions serve;
    serve.threads = options.mount_threads;
    serve.uid = peer.uid;
    serve.gid = peer.gid;
    const int64_t since = live->since;
    serve.ended = [this, since, uid = peer.uid, mountpoint](const std::string& why,
                                                           const MountedCapsule& c) {
      const MountedCapsule::Usage u = c.usage();
      absl::Status s = c.RecordEnd(why, since, static_cast<int64_t>(std::time(nullptr)));
      Log(absl::StrCat("mount-ended uid=", uid, " capsule=", c.capsule_id(), " at ", mountpoint,
                       " (", why, "): files opened ", u.files_opened, ", bytes read ",
                       u.bytes_read,
                       s.ok() ? "" : absl::StrCat("; cannot write the audit log: ", s.message())));
    };
    FuseDevice device;
    device.fuse = std::move(fuse);
    device.comm = std::move(comm);
    BUNKER_ASSIGN_OR_RETURN(live->server,
                            FuseServer::Start(std::move(mounted), std::move(device), serve));
    mounts.Add(std::move(slot), std::move(live));
    return absl::OkStatus();
  }

  void ReapFinished() {
    for (auto it = workers.begin(); it != workers.end();) {
      if ((*it)->done.load()) {
        (*it)->thread.join();
        it = workers.erase(it);
      } else {
        ++it;
      }
    }
  }

  explicit Impl(ServiceOptions o)
      : options(std::move(o)),
        gate(*options.site, *options.identity, options.trusted),
        mounts(options.mount_cache_bytes, options.mount_cache_total_bytes) {}

  // One line whatever a client put in it (a mount point, a path quoted in a message).
  void Log(const std::string& line) {
    if (options.log) options.log(capsule::EscapeForTerminal(line, /*keep_newlines=*/false));
  }

  void Accept() {
    while (!stopping.load()) {
      const int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (stopping.load()) return;
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          continue;
        }
        Log(absl::StrCat("verifier socket: accept failed: ", std::strerror(errno)));
        return;
      }
      capsule::Fd sock(fd);
      struct ucred cred {};
      socklen_t len = sizeof cred;
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) continue;
      Peer peer{cred.uid, cred.gid, cred.pid, {}};
      // Unknown groups only narrow what the peer may do (its uid and primary group remain).
      PeerGroups(fd, &peer.groups);
      {
        std::lock_guard<std::mutex> lock(mu);
        if (running >= options.max_requests || per_uid[peer.uid] >= options.max_per_uid) {
          Refuse(sock.get(), absl::ResourceExhaustedError(
                                 "the site's verifier is busy (too many requests at once); "
                                 "try again"));
          continue;
        }
        ++running;
        ++per_uid[peer.uid];
      }
      ReapFinished();
      mounts.Reap();
      auto worker = std::make_unique<Worker>();
      Worker* w = worker.get();
      w->sock = std::move(sock);
      w->thread = std::thread([this, w, peer]() {
        Serve(w->sock.get(), peer);
        // The connection ends now, not when the next client is accepted (the descriptor is
        // closed after the join, see Worker): a client waiting for more reads its end.
        ::shutdown(w->sock.get(), SHUT_RDWR);
        bool idle;
        {
          std::lock_guard<std::mutex> lock(mu);
          --running;
          if (--per_uid[peer.uid] == 0) per_uid.erase(peer.uid);
          idle = running == 0;
        }
        // A release's buffers (read-ahead windows, chunks) were freed into this thread's malloc
        // arena, which keeps them (transfer/chunk_memory.cc raises the trim threshold for the
        // transfers' sake): the last request to end gives them back, so that the daemon's
        // resident memory returns to its idle size between releases instead of adding up.
        if (idle) ::malloc_trim(0);
        w->done.store(true);
      });
      workers.push_back(std::move(worker));
    }
  }

  // A refusal before the request: the client reads the hello, then this result.
  void Refuse(int sock, const absl::Status& status) {
    SetTimeout(sock, SO_SNDTIMEO, 1);
    Hello hello;
    hello.site = options.site->site;
    hello.challenge.assign(kChallengeSize, 0);
    if (!SendHello(sock, hello).ok()) return;
    WireResult r;
    r.status = status;
    (void)SendResult(sock, r);
  }

  void Serve(int sock, const Peer& peer) {
    SetTimeout(sock, SO_RCVTIMEO, options.request_timeout_seconds);
    SetTimeout(sock, SO_SNDTIMEO, 60);
    Hello hello;
    hello.site = options.site->site;
    hello.challenge.resize(kChallengeSize);
    crypto::RandomBytes(absl::MakeSpan(hello.challenge));
    if (!SendHello(sock, hello).ok()) return;
    WireResult result;
    result.site = options.site->site;
    result.region = options.site->region;
    result.storage = options.site->storage;
    std::string what = "request";
    result.status = Handle(sock, peer, hello, &result.outcome, &what);
    const absl::Status sent = SendResult(sock, result);
    Log(absl::StrCat(what, " uid=", peer.uid, " pid=", peer.pid,
                     result.outcome.capsule_id.empty() ? "" : " capsule=",
                     result.outcome.capsule_id, " -> ",
                     sent.ok() ? "" : absl::StrCat("the reply could not be sent (", sent.message(),
                                                   "); the result was: "),
                     result.status.ok() ? "ok" : std::string(result.status.message())));
  }

  absl::Status Handle(int sock, const Peer& peer, const Hello& hello, Outcome* out,
                      std::string* what) {
    // The whole request within the timeout, however the client spaces its bytes.
    BUNKER_ASSIGN_OR_RETURN(
        auto received,
        ReceiveRequest(sock, std::chrono::steady_clock::now() +
                                 std::chrono::seconds(options.request_timeout_seconds)));
    SignedRequest& signed_request = received.first;
    std::vector<capsule::Fd>& fds = received.second;
    BUNKER_ASSIGN_OR_RETURN(WireRequest wire, DecodeRequestBody(signed_request.body));
    *what = CommandName(wire.command);
    const bool needs_output = wire.command == Command::kCat ||
                              (wire.command == Command::kToTar && wire.destination.empty());
    // Without a capsule descriptor when the request names an object of the site's S3 store.
    const size_t capsule_fds = wire.capsule_url.empty() ? 1 : 0;
    const size_t expected_fds = wire.command == Command::kMounts  ? 0
                                : wire.command == Command::kMount ? 2 + capsule_fds
                                : needs_output                    ? 1 + capsule_fds
                                                                  : capsule_fds;
    if (fds.size() != wire.fd_count || fds.size() != expected_fds) {
      return absl::InvalidArgumentError("the request did not pass the descriptors it names");
    }
    if (needs_output && !OpenForWriting(fds[capsule_fds].get())) {
      return absl::InvalidArgumentError("the output descriptor is not open for writing");
    }
    if (needs_output && !CannotHoldTheDaemon(fds[capsule_fds].get())) {
      return absl::InvalidArgumentError(
          "the output must be a regular file or a socket (the capsule command relays pipes, "
          "terminals and devices itself)");
    }
    if (wire.command == Command::kMounts) {
      // The caller's own mounts (root: all); nothing is decided or recorded.
      return SendMounts(sock, mounts.Of(peer.uid));
    }
    // A mount request holds its place among its uid's live mounts from this check on, so that
    // requests running at once are counted against each other (before, each checked the live
    // mounts alone and 4 requests at 15 live mounts made 19).
    std::optional<LiveMounts::Slot> mount_slot;
    if (wire.command == Command::kMount) {
      struct stat st;
      if (!IsFuseDevice(fds[capsule_fds].get()) || !OpenForWriting(fds[capsule_fds].get(), true) ||
          ::fstat(fds[capsule_fds + 1].get(), &st) != 0 || !S_ISSOCK(st.st_mode) ||
          !OpenForWriting(fds[capsule_fds + 1].get(), true)) {
        return absl::InvalidArgumentError(
            "a mount request must pass /dev/fuse and fusermount3's socket");
      }
      mount_slot = mounts.ReserveSlot(peer.uid, options.max_mounts_per_uid);
      if (!mount_slot.has_value()) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "you have ", options.max_mounts_per_uid,
            " live mounts (or mount requests under way); unmount one first"));
      }
    }

    CacheGrant cache_grant;
    SiteRequest r;
    r.command = wire.command;
    r.who.purpose = wire.purpose;
    r.who.uid = peer.uid;
    r.who.pid = peer.pid;
    r.only = wire.only;
    r.destination = wire.destination;
    r.path = wire.path;
    // A client may ask for fewer workers, never for more than the machine has.
    const uint32_t cores = std::max(1u, std::thread::hardware_concurrency());
    r.threads = static_cast<int>(wire.threads == 0 ? cores : std::min(wire.threads, cores));
    r.now = static_cast<int64_t>(std::time(nullptr));
    if (!signed_request.requester_pem.empty()) {
      absl::StatusOr<crypto::PublicIdentity> key =
          crypto::PublicIdentity::FromPem(signed_request.requester_pem);
      if (!key.ok()) return absl::InvalidArgumentError("the requester key is not a public key");
      if (!signed_request.signature.empty()) {
        absl::Status s = crypto::VerifySignature(
            key->sign_key, SignedMessage(hello.challenge, signed_request.body),
            signed_request.signature);
        if (!s.ok()) {
          return absl::PermissionDeniedError(
              absl::StrCat("the request is not signed by requester ",
                           key->fingerprint().ToString(), " (--as must be its private key)"));
        }
      } else if (wire.command != Command::kExplain) {
        return absl::PermissionDeniedError("--as must be a private key: its signature proves "
                                           "the requester");
      }
      r.who.key = *key;
    } else if (auto it = options.users.find(peer.uid); it != options.users.end()) {
      r.who.key = it->second;
    }
    if (wire.command == Command::kOpen || wire.command == Command::kToTar) {
      if (::geteuid() != peer.uid) {
        r.owner = capsule::FileOwner{peer.uid, peer.gid};
        r.acting_for = Rights{peer.uid, peer.gid, peer.groups};
      }
    }
    if (needs_output) r.output_fd = fds[capsule_fds].get();
    if (wire.command == Command::kMount) {
      r.mountpoint = wire.mountpoint;
      r.mount.cache_bytes = mounts.ReserveCache(peer.uid, wire.cache_bytes);
      cache_grant.mounts = &mounts;
      cache_grant.uid = peer.uid;
      cache_grant.bytes = r.mount.cache_bytes;
      r.mount.threads = r.threads;
      r.mounted = [&](std::unique_ptr<MountedCapsule> mounted) {
        return StartMount(std::move(mounted), std::move(fds[capsule_fds]),
                          std::move(fds[capsule_fds + 1]), peer, wire.mountpoint,
                          r.mount.cache_bytes, std::move(*mount_slot));
      };
    }

    auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    std::atomic<bool> gone{false};
    r.progress = [&](uint64_t done, uint64_t total) {
      const auto now = std::chrono::steady_clock::now();
      if (gone.load() || now - last < std::chrono::milliseconds(200)) return;
      last = now;
      if (!SendProgress(sock, done, total).ok()) gone.store(true);
    };
    // Thread-safe: the fetch threads of an S3 store object ask too (open_store_object), so
    // that a read of a slow store ends when the client hangs up or the service stops.
    std::mutex poll_mu;
    auto last_poll = last;
    r.cancelled = [&]() {
      if (stopping.load() || gone.load()) return true;
      std::lock_guard<std::mutex> lock(poll_mu);
      const auto now = std::chrono::steady_clock::now();
      if (now - last_poll < std::chrono::milliseconds(50)) return false;
      last_poll = now;
      if (HungUp(sock)) gone.store(true);
      return gone.load();
    };
    r.entries = [&](const std::vector<capsule::FileEntry>& batch) {
      return SendEntries(sock, batch);
    };
    if (options.healthy) BUNKER_RETURN_IF_ERROR(options.healthy());

    std::unique_ptr<capsule::RandomAccessFile> file;
    std::string name = "the capsule";
    if (wire.capsule_url.empty()) {
      BUNKER_ASSIGN_OR_RETURN(file, capsule::OpenFileDescriptor(fds[0].release(), name));
    } else if (!capsule::s3::IsS3Url(wire.capsule_url)) {
      // A capsule of the site's store folder, by name: the daemon opens it with its own rights,
      // so only "<id>.capsule" directly in that folder (OpenStoreFile).
      BUNKER_ASSIGN_OR_RETURN(capsule::Fd fd, OpenStoreFile(*options.site, wire.capsule_url));
      name = absl::StrCat(options.site->store, "/", wire.capsule_url);
      BUNKER_ASSIGN_OR_RETURN(file, capsule::OpenFileDescriptor(fd.release(), name));
    } else {
      // The daemon reads the object itself, so only from the site's own store.
      BUNKER_ASSIGN_OR_RETURN(capsule::s3::Location at,
                              StoreObjectOf(*options.site, wire.capsule_url));
      if (!options.open_store_object) {
        return absl::FailedPreconditionError(
            "this site's verifier service does not read capsules from S3");
      }
      // A mount's object outlives this request (and its client's socket): only the service's
      // stop ends its reads, which the service outlives.
      std::function<bool()> cancelled = r.cancelled;
      if (wire.command == Command::kMount) cancelled = [this] { return stopping.load(); };
      BUNKER_ASSIGN_OR_RETURN(file, options.open_store_object(at, std::move(cancelled)));
      name = capsule::s3::ToUrl(at);
    }
    absl::StatusOr<Outcome> outcome = HandleRequest(gate, std::move(file), name, r);
    if (!outcome.ok()) return outcome.status();
    *out = std::move(*outcome);
    return absl::OkStatus();
  }
};

VerifierService::VerifierService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

VerifierService::~VerifierService() {
  impl_->stopping.store(true);
  ::shutdown(impl_->listener.get(), SHUT_RDWR);
  if (impl_->acceptor.joinable()) impl_->acceptor.join();
  // Running requests see `stopping` and cancel; a blocked read or write is woken by the
  // shutdown; each thread is joined.
  for (auto& w : impl_->workers) ::shutdown(w->sock.get(), SHUT_RDWR);
  for (auto& w : impl_->workers) w->thread.join();
  impl_->workers.clear();
  // Live mounts end ("stopped"): their files are dropped from the kernel's cache, the mounts
  // detached, and each summary recorded.
  impl_->mounts.EndAll("stopped");
}

absl::StatusOr<std::unique_ptr<VerifierService>> VerifierService::Start(ServiceOptions options) {
  if (options.site == nullptr || options.identity == nullptr || options.site->socket.empty()) {
    return absl::InvalidArgumentError("the site file names no \"socket\"");
  }
  const std::string& path = options.site->socket;
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", path, " is too long"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // A closed client's write must be an error, not a signal that kills the daemon.
  ::signal(SIGPIPE, SIG_IGN);
  // Whatever umask the daemon was started with (the systemd unit's is 0077, for its state),
  // the folders a release creates for its users must be searchable by them: every mode the
  // service relies on is given explicitly, and created parents are 0755 (VERIFIER.md
  // "Destinations").
  ::umask(022);
  capsule::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::UnavailableError("cannot create the verifier socket");
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", path, ": it exists and is not a socket"));
    }
    ::unlink(path.c_str());  // a stale socket of an earlier run
  }
  // Created 0666 (through the umask) so that any local user may connect; the socket's folder
  // decides who can reach it.
  const mode_t old = ::umask(0);
  const int bound = ::bind(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  ::umask(old);
  if (bound != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", path, ": ", std::strerror(bind_errno)));
  }
  if (::listen(fd.get(), 64) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", path, ": ",
                                               std::strerror(errno)));
  }
  // What a crash (kill -9 mid-release) left staged is removed before anyone is served.
  size_t removed = 0;
  for (const std::string& dest : options.site->destinations) {
    capsule::Fd root(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (root.valid()) SweepStaging(root.get(), 16, &removed);
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  if (removed > 0) {
    impl->Log(absl::StrCat("removed ", removed, " staging folder(s) of interrupted releases"));
  }
  impl->listener = std::move(fd);
  Impl* raw = impl.get();
  impl->acceptor = std::thread([raw] { raw->Accept(); });
  impl->Log(absl::StrCat("verifier listening on ", path));
  return std::unique_ptr<VerifierService>(new VerifierService(std::move(impl)));
}

}  // namespace bunker::site

// capsule mount, the service's side (site/mount.h): the FUSE server and its operations, which
// share one server's state (live check, handles, the end of the mount). The user's side
// (fusermount3) is site/fusermount.cc; the file tree and chunk cache live in mounted_capsule.
//
// Every field of a request is the user's to choose: the user can keep a copy of the mount's
// /dev/fuse descriptor and answer requests himself, and whatever he answered (a file handle, an
// inode, a directory offset) comes back in later requests (spec/VERIFIER.md "Mounts"). So
// inodes are looked up in the tree, handles in a table (site/file_handles.h), and no value the
// kernel sends is ever a pointer.
#include "site/mount.h"

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "site/file_handles.h"

namespace bunker::site {
namespace {

constexpr double kForever = 86400.0 * 365;  // attribute and entry timeouts: a capsule is immutable
constexpr size_t kMaxRead = size_t{1} << 20;

}  // namespace

struct FuseServer::Impl {
  std::unique_ptr<MountedCapsule> capsule;
  FuseServeOptions options;
  struct fuse_session* session = nullptr;
  capsule::Fd comm;
  capsule::Fd wake;  // eventfd: the workers stop when it is readable
  std::vector<std::thread> workers;
  std::thread supervisor;

  std::mutex mu;
  std::condition_variable cv;
  std::string end_reason;  // non-empty: end asked (or the kernel went away)
  std::atomic<bool> closing{false};
  std::atomic<bool> finished{false};
  FileHandles handles;  // the open files' read-ahead state, by fuse_file_info::fh

  void AskEnd(const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (end_reason.empty()) end_reason = why;
    }
    cv.notify_all();
  }

  // Whether requests are still answered; otherwise replies EACCES (the window closed).
  bool Live(fuse_req_t req) {
    if (closing.load() || std::time(nullptr) >= capsule->not_after()) {
      if (!closing.load()) AskEnd("notAfter");
      fuse_reply_err(req, EACCES);
      return false;
    }
    return true;
  }

  void Stat(const MountedCapsule::Node& n, struct stat* st) const {
    std::memset(st, 0, sizeof *st);
    st->st_ino = n.ino;
    st->st_nlink = n.nlink;
    st->st_uid = options.uid;
    st->st_gid = options.gid;
    st->st_size = static_cast<off_t>(n.size);
    st->st_blksize = kMaxRead;
    st->st_blocks = static_cast<blkcnt_t>((n.size + 511) / 512);
    st->st_mtim.tv_sec = n.mtime;
    st->st_atim = st->st_ctim = st->st_mtim;
    switch (n.type) {
      case MountedCapsule::Node::Type::kFile:
        st->st_mode = S_IFREG | (n.mode & 01777);
        break;
      case MountedCapsule::Node::Type::kDirectory:
        st->st_mode = S_IFDIR | (n.mode & 01777);
        break;
      case MountedCapsule::Node::Type::kSymlink:
        st->st_mode = S_IFLNK | 0777;
        break;
    }
  }

  void Entry(const MountedCapsule::Node& n, struct fuse_entry_param* e) const {
    std::memset(e, 0, sizeof *e);
    e->ino = n.ino;
    e->generation = 1;
    e->attr_timeout = kForever;
    e->entry_timeout = kForever;
    Stat(n, &e->attr);
  }

  void Work() {
    struct fuse_buf buf {};
    // Each worker waits in its own epoll set: on /dev/fuse with EPOLLEXCLUSIVE, so that a
    // request wakes one worker rather than all of them (with poll() every request woke every
    // worker, and the context switches were a seventh of the daemon's time with 8 readers), and
    // on `wake`, which wakes all of them to stop.
    capsule::Fd ep(::epoll_create1(EPOLL_CLOEXEC));
    struct epoll_event fuse_ev {};
    fuse_ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    fuse_ev.data.u32 = 0;
    struct epoll_event wake_ev {};
    wake_ev.events = EPOLLIN;
    wake_ev.data.u32 = 1;
    if (!ep.valid() ||
        ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fuse_session_fd(session), &fuse_ev) != 0 ||
        ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, wake.get(), &wake_ev) != 0) {
      AskEnd("cannot wait for requests");
      return;
    }
    while (true) {
      struct epoll_event events[2];
      const int r = ::epoll_wait(ep.get(), events, 2, -1);
      if (r < 0) {
        if (errno == EINTR) continue;
        break;
      }
      bool stop = false, gone = false;
      for (int i = 0; i < r; ++i) {
        if (events[i].data.u32 == 1) stop = true;
        if (events[i].data.u32 == 0 && (events[i].events & (EPOLLERR | EPOLLHUP)) != 0) {
          gone = true;
        }
      }
      if (stop) break;
      if (gone) {
        AskEnd("unmounted");
        break;
      }
      const int res = fuse_session_receive_buf(session, &buf);
      if (res == -EINTR || res == -EAGAIN) continue;
      if (res <= 0) {
        AskEnd("unmounted");  // ENODEV: the kernel side went away
        break;
      }
      fuse_session_process_buf(session, &buf);
    }
    std::free(buf.mem);
  }

  void Supervise() {
    std::string why;
    {
      std::unique_lock<std::mutex> lock(mu);
      while (end_reason.empty()) {
        const int64_t closes = capsule->not_after();
        if (closes == MountedCapsule::kNever) {
          cv.wait(lock);
          continue;
        }
        const auto at = std::chrono::system_clock::from_time_t(static_cast<time_t>(
            std::min<int64_t>(closes, std::numeric_limits<int32_t>::max())));
        if (cv.wait_until(lock, at) == std::cv_status::timeout &&
            std::time(nullptr) >= closes && end_reason.empty()) {
          end_reason = "notAfter";
        }
      }
      why = end_reason;
    }
    closing.store(true);
    // What the kernel cached of the files read is dropped while the connection still stands,
    // so that an open file yields nothing more once the mount ended. The files are those the
    // capsule served reads of (or saw opened): opens the user answered himself never reach us,
    // but every read that returned plaintext did.
    if (why != "unmounted") {
      for (uint64_t ino : capsule->FilesOpened()) {
        fuse_lowlevel_notify_inval_inode(session, ino, 0, 0);
      }
    }
    const uint64_t one = 1;
    (void)!::write(wake.get(), &one, sizeof one);
    for (std::thread& t : workers) t.join();
    fuse_session_destroy(session);  // closes /dev/fuse: the connection is aborted
    session = nullptr;
    comm.Reset();  // fusermount3 detaches the mount
    finished.store(true);
    if (options.ended) options.ended(why, *capsule);
  }
};

namespace {

FuseServer::Impl* Self(fuse_req_t req) {
  return static_cast<FuseServer::Impl*>(fuse_req_userdata(req));
}

void OpInit(void* userdata, struct fuse_conn_info* conn) {
  (void)userdata;
  conn->max_readahead = kMaxRead;
  conn->max_write = kMaxRead;  // also what the kernel uses for its largest read (max_pages)
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  // The files never change: no invalidation by mtime, no writeback.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  FuseServer::Impl* s = Self(req);
  if (!s->Live(req)) return;
  const MountedCapsule::Node* n = s->capsule->Lookup(parent, name);
  if (n == nullptr) {
    // A negative entry the kernel may keep: the tree never changes.
    struct fuse_entry_param e {};
    e.ino = 0;
    e.entry_timeout = kForever;
    fuse_reply_entry(req, &e);
    return;
  }
  struct fuse_entry_param e;
  s->Entry(*n, &e);
  fuse_reply_entry(req, &e);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info*) {
  FuseServer::Impl* s = Self(req);
  if (!s->Live(req)) return;
  const MountedCapsule::Node* n = s->capsule->Get(ino);
  if (n == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  s->Stat(*n, &st);
  fuse_reply_attr(req, &st, kForever);
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  FuseServer::Impl* s = Self(req);
  if (!s->Live(req)) return;
  const MountedCapsule::Node* n = s->capsule->Get(ino);
  if (n == nullptr || n->type != MountedCapsule::Node::Type::kSymlink) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  fuse_reply_readlink(req, n->link_target.c_str());
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  FuseServer::Impl* s = Self(req);
  if (!s->Live(req)) return;
  const MountedCapsule::Node* n = s->capsule->Get(ino);
  if (n == nullptr || n->type != MountedCapsule::Node::Type::kFile) {
    fuse_reply_err(req, n == nullptr ? ENOENT : EISDIR);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0) {
    fuse_reply_err(req, EROFS);
    return;
  }
  fi->keep_cache = 1;  // immutable: what the kernel cached stays valid
  fi->fh = s->handles.Open(ino);
  s->capsule->CountOpen(ino);
  if (fuse_reply_open(req, fi) != 0) s->handles.Release(fi->fh);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info* fi) {
  FuseServer::Impl* s = Self(req);
  if (!s->Live(req)) return;
  // `fi->fh` may be anything (file_handles.h): an unknown handle is a read without history,
  // served like any other from the inode, which the tree alone decides on. Refusing it would
  // protect nothing (a handle gives no right) and would fail a client whose opens were answered
  // without a handle (a full table gives kNone).
  const uint64_t offset = static_cast<uint64_t>(off);
  const bool sequential = s->handles.Sequential(fi->fh, ino, offset, 4 * kMaxRead);
  absl::StatusOr<MountedCapsule::Slices> slices = s->capsule->ReadSlices(
      ino, offset, std::min(size, kMaxRead * 4), std::time(nullptr), sequential);
  if (!slices.ok()) {
    if (absl::IsPermissionDenied(slices.status())) {
      s->AskEnd("notAfter");
      fuse_reply_err(req, EACCES);
    } else {
      fuse_reply_err(req, absl::IsNotFound(slices.status()) ? ENOENT : EIO);
    }
    return;
  }
  s->handles.ReadEnded(fi->fh, ino, offset + slices->size());
  // The reply is written to /dev/fuse straight from the cached chunks (one copy, into the
  // kernel); `slices` keeps them alive until it returns.
  std::vector<iovec> iov(slices->spans().size());
  for (size_t i = 0; i < iov.size(); ++i) {
    iov[i].iov_base = const_cast<uint8_t*>(slices->spans()[i].data());
    iov[i].iov_len = slices->spans()[i].size();
  }
  fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
}

void OpRelease(fuse_req_t req, fuse_ino_t, struct fuse_file_info* fi) {
  Self(req)->handles.Release(fi->fh);  // an unknown handle frees nothing
  fuse_reply_err(req, 0);
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  FuseServer::Impl* s = Self(req);
  if (!s->Live(req)) return;
  const MountedCapsule::Node* n = s->capsule->Get(ino);
  if (n == nullptr || n->type != MountedCapsule::Node::Type::kDirectory) {
    fuse_reply_err(req, n == nullptr ? ENOENT : ENOTDIR);
    return;
  }
  fi->keep_cache = 1;
  fi->cache_readdir = 1;
  fuse_reply_open(req, fi);
}

void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  FuseServer::Impl* s = Self(req);
  if (!s->Live(req)) return;
  const MountedCapsule::Node* dir = s->capsule->Get(ino);
  if (dir == nullptr || dir->type != MountedCapsule::Node::Type::kDirectory) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  std::vector<char> buf(std::min<size_t>(size, kMaxRead));
  size_t used = 0;
  const size_t total = dir->children.size() + 2;
  for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < total; ++i) {
    const MountedCapsule::Node* n;
    const char* name;
    if (i == 0) {
      n = dir;
      name = ".";
    } else if (i == 1) {
      n = s->capsule->Get(dir->parent);
      name = "..";
    } else {
      n = s->capsule->Get(dir->children[i - 2].second);
      name = dir->children[i - 2].first.c_str();
    }
    size_t len;
    if (plus) {
      struct fuse_entry_param e;
      s->Entry(*n, &e);
      len = fuse_add_direntry_plus(req, buf.data() + used, buf.size() - used, name, &e,
                                   static_cast<off_t>(i + 1));
    } else {
      struct stat st;
      s->Stat(*n, &st);
      len = fuse_add_direntry(req, buf.data() + used, buf.size() - used, name, &st,
                              static_cast<off_t>(i + 1));
    }
    if (len > buf.size() - used) break;
    used += len;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  ReadDir(req, ino, size, off, false);
}
void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   struct fuse_file_info*) {
  ReadDir(req, ino, size, off, true);
}

void OpReleasedir(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) { fuse_reply_err(req, 0); }

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  FuseServer::Impl* s = Self(req);
  struct statvfs st {};
  st.f_bsize = kMaxRead;
  st.f_frsize = 4096;
  st.f_files = s->capsule->node_count();
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
  fuse_reply_statfs(req, &st);
}

}  // namespace

FuseServer::FuseServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FuseServer::~FuseServer() {
  End("stopped");
  if (impl_->supervisor.joinable()) impl_->supervisor.join();
}

void FuseServer::End(const std::string& why) { impl_->AskEnd(why); }
bool FuseServer::ended() const { return impl_->finished.load(); }
const MountedCapsule& FuseServer::capsule() const { return *impl_->capsule; }

absl::StatusOr<std::unique_ptr<FuseServer>> FuseServer::Start(
    std::unique_ptr<MountedCapsule> capsule, FuseDevice device, FuseServeOptions options) {
  if (!device.fuse.valid() || !IsFuseDevice(device.fuse.get())) {
    return absl::InvalidArgumentError("the mount descriptor is not /dev/fuse");
  }
  auto impl = std::make_unique<Impl>();
  impl->capsule = std::move(capsule);
  impl->options = std::move(options);
  impl->comm = std::move(device.comm);
  impl->wake = capsule::Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->wake.valid()) return absl::UnavailableError("cannot create an eventfd");
  // Several workers poll one descriptor: reads must not block, so that each sees `wake`.
  const int flags = ::fcntl(device.fuse.get(), F_GETFL);
  ::fcntl(device.fuse.get(), F_SETFL, flags | O_NONBLOCK);

  static const struct fuse_lowlevel_ops kOps = [] {
    struct fuse_lowlevel_ops o {};
    o.init = OpInit;
    o.lookup = OpLookup;
    o.getattr = OpGetattr;
    o.readlink = OpReadlink;
    o.open = OpOpen;
    o.read = OpRead;
    o.release = OpRelease;
    o.opendir = OpOpendir;
    o.readdir = OpReaddir;
    o.readdirplus = OpReaddirplus;
    o.releasedir = OpReleasedir;
    o.statfs = OpStatfs;
    return o;
  }();
  char arg0[] = "bunker-mount";
  char* argv[] = {arg0, nullptr};
  struct fuse_args args = FUSE_ARGS_INIT(1, argv);
  impl->session = fuse_session_new(&args, &kOps, sizeof kOps, impl.get());
  if (impl->session == nullptr) return absl::UnavailableError("cannot create a FUSE session");
  // "/dev/fd/N": libfuse serves an already open /dev/fuse descriptor (and owns it from here).
  const std::string fd_path = absl::StrCat("/dev/fd/", device.fuse.get());
  if (fuse_session_mount(impl->session, fd_path.c_str()) != 0) {
    fuse_session_destroy(impl->session);
    return absl::UnavailableError("cannot serve the FUSE descriptor");
  }
  device.fuse.release();
  Impl* raw = impl.get();
  for (int i = 0; i < std::max(1, raw->options.threads); ++i) {
    raw->workers.emplace_back([raw] { raw->Work(); });
  }
  raw->supervisor = std::thread([raw] { raw->Supervise(); });
  return std::unique_ptr<FuseServer>(new FuseServer(std::move(impl)));
}

}  // namespace bunker::site

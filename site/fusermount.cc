// capsule mount, the user's side (site/mount.h): mounting and unmounting through fusermount3,
// which hands the opened /dev/fuse back over a socket; the service's side is site/mount.cc.
#include "site/mount.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace bunker::site {
namespace {
// Runs fusermount3 with `args`; its standard error comes back through `err_out`. Returns the
// child's pid (-1 with errno on failure). `keep` is the one extra descriptor it inherits.
pid_t SpawnFusermount(const std::vector<std::string>& args, int keep, int* err_out) {
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0) return -1;
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>("fusermount3"));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string env = absl::StrCat("_FUSE_COMMFD=", keep);
  // Its environment: this process's without the S3 secrets (spec/STORE.md), made before fork.
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const absl::string_view var(*e);
    if (absl::StartsWith(var, "AWS_SECRET_ACCESS_KEY=") ||
        absl::StartsWith(var, "AWS_SESSION_TOKEN=") || absl::StartsWith(var, "_FUSE_COMMFD=")) {
      continue;
    }
    envp.push_back(*e);
  }
  if (keep >= 0) envp.push_back(const_cast<char*>(env.c_str()));
  envp.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(err[0]);
    ::close(err[1]);
    return -1;
  }
  if (pid == 0) {
    // The child: its own session (a terminal's ^C must not kill the auto-unmounter), /dev/null
    // for input and output, the pipe for errors, `keep` without close-on-exec.
    ::setsid();
    const int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
    }
    ::dup2(err[1], 2);
    if (keep >= 0) ::fcntl(keep, F_SETFD, 0);
    ::signal(SIGPIPE, SIG_DFL);
    ::execvpe("fusermount3", argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(err[1]);
  *err_out = err[0];
  return pid;
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[512];
  while (out.size() < 4096) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return std::string(absl::StripAsciiWhitespace(out));
}

int ReceiveFd(int sock) {
  char byte;
  struct iovec iov {&byte, 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int))) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      return fd;
    }
  }
  return -1;
}

absl::Status FusermountFailed(const std::string& what, int status, const std::string& err) {
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    return absl::UnavailableError("fusermount3 is not installed (Debian package fuse3)");
  }
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": ", err.empty() ? "fusermount3 failed" : err));
}

}  // namespace


bool IsFuseDevice(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 10 &&
         minor(st.st_rdev) == 229;
}

absl::StatusOr<FuseDevice> MountFuseDevice(const std::string& mountpoint,
                                           const std::string& subtype) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::UnavailableError(absl::StrCat("socketpair: ", std::strerror(errno)));
  }
  capsule::Fd ours(sv[0]), theirs(sv[1]);
  const std::string opts =
      absl::StrCat("ro,nosuid,nodev,noexec,default_permissions,auto_unmount,fsname=bunker,"
                   "subtype=", subtype);
  int err = -1;
  const pid_t pid = SpawnFusermount({"-o", opts, "--", mountpoint}, theirs.get(), &err);
  if (pid < 0) return absl::UnavailableError(absl::StrCat("fork: ", std::strerror(errno)));
  capsule::Fd err_pipe(err);
  theirs.Reset();
  capsule::Fd fuse(ReceiveFd(ours.get()));
  if (!fuse.valid()) {
    const std::string message = ReadAll(err_pipe.get());
    int status = 0;
    ::waitpid(pid, &status, 0);
    return FusermountFailed(absl::StrCat("cannot mount on ", mountpoint), status, message);
  }
  // fusermount3 now waits for `ours` to close, then detaches the mount; it stays a child of
  // this process until it exits (then it is reaped by init).
  FuseDevice out;
  out.fuse = std::move(fuse);
  out.comm = std::move(ours);
  return out;
}

absl::Status UnmountFuse(const std::string& mountpoint, bool lazy) {
  std::vector<std::string> args = {"-u"};
  if (lazy) args.push_back("-z");
  args.push_back("--");
  args.push_back(mountpoint);
  int err = -1;
  const pid_t pid = SpawnFusermount(args, -1, &err);
  if (pid < 0) return absl::UnavailableError(absl::StrCat("fork: ", std::strerror(errno)));
  capsule::Fd err_pipe(err);
  const std::string message = ReadAll(err_pipe.get());
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  return FusermountFailed(absl::StrCat("cannot unmount ", mountpoint), status, message);
}

}  // namespace bunker::site

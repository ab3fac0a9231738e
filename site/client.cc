#include "site/client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "crypto/status_macros.h"

namespace bunker::site {
namespace {

// An output that could hold a daemon thread (a pipe, a terminal, a device: see the service's
// CannotHoldTheDaemon) is relayed by this process: the service writes into one end of a socket
// pair (non-blocking), and a thread here copies from the other end into the output. A reader
// who stops reading then stops only this process. When the output fails (a reader gone), the
// relay shuts its end down, so the service's next write fails and the release ends there.
class OutputRelay {
 public:
  // Null when `out` needs no relay (a regular file or a socket is passed as it is).
  static absl::StatusOr<std::unique_ptr<OutputRelay>> StartFor(int out,
                                                              std::function<bool()> cancelled) {
    struct stat st;
    if (::fstat(out, &st) != 0) return capsule::ErrnoStatus("cannot use the output", errno);
    if (S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode)) return nullptr;
    const int flags = ::fcntl(out, F_GETFL);
    if (flags < 0 || (flags & O_PATH) != 0 ||
        ((flags & O_ACCMODE) != O_WRONLY && (flags & O_ACCMODE) != O_RDWR)) {
      return absl::InvalidArgumentError("the output descriptor is not open for writing");
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      return capsule::ErrnoStatus("cannot relay the output", errno);
    }
    std::unique_ptr<OutputRelay> r(new OutputRelay());
    r->ours_.Reset(pair[0]);
    r->theirs_.Reset(pair[1]);
    ::shutdown(r->ours_.get(), SHUT_WR);
    // A non-blocking description of the same output (ours: this process may reopen it), so
    // that a reader who stops reading, or a stopped terminal, never holds the relay past an
    // interrupt. Without one, the caller's own description, as before.
    const std::string proc = absl::StrCat("/proc/self/fd/", out);
    r->nonblocking_.Reset(::open(proc.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (r->nonblocking_.valid()) out = r->nonblocking_.get();
    r->thread_ = std::thread([relay = r.get(), out, cancelled = std::move(cancelled)] {
      relay->Copy(out, cancelled);
    });
    return r;
  }

  ~OutputRelay() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  int theirs() const { return theirs_.get(); }
  // Once the descriptor was passed: the service's copy is then the only writer.
  void Passed() { theirs_.Reset(); }

  // Bytes written to the output so far.
  uint64_t forwarded() const { return forwarded_.load(); }

  // Waits until the service's end is closed and everything it wrote is out. The output's own
  // error, if it failed.
  absl::Status Finish() {
    theirs_.Reset();
    if (thread_.joinable()) thread_.join();
    if (error_ != 0) return capsule::ErrnoStatus("cannot write the output", error_);
    return absl::OkStatus();
  }

 private:
  OutputRelay() = default;

  void Copy(int out, const std::function<bool()>& cancelled) {
    std::vector<char> buf(1 << 20);
    while (!stop_) {
      struct pollfd p {ours_.get(), POLLIN, 0};
      const int ready = ::poll(&p, 1, 200);
      if (ready < 0 && errno != EINTR) break;
      if (ready <= 0) {
        if (cancelled && cancelled()) break;
        continue;
      }
      const ssize_t n = ::read(ours_.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // the service's end is closed: all is out
      for (ssize_t done = 0; done < n;) {
        if (stop_ || (cancelled && cancelled())) return;
        const ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          struct pollfd o {out, POLLOUT, 0};
          ::poll(&o, 1, 200);
          continue;
        }
        if (w <= 0) {
          error_ = w < 0 ? errno : EIO;
          ::shutdown(ours_.get(), SHUT_RDWR);  // the service's writes fail from now on
          return;
        }
        done += w;
        forwarded_ += static_cast<uint64_t>(w);
      }
    }
  }

  capsule::Fd ours_;
  capsule::Fd theirs_;
  capsule::Fd nonblocking_;  // the output reopened O_NONBLOCK, when that was possible
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> forwarded_{0};
  int error_ = 0;  // written by the thread, read after join
};

// The size of `fd` when it is a regular file, else nothing.
std::optional<uint64_t> RegularFileSize(int fd) {
  struct stat st;
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return static_cast<uint64_t>(st.st_size);
}

absl::StatusOr<WireResult> Call(const std::string& socket_path, const ServiceCall& call,
                                OutputRelay* relay);

}  // namespace

absl::StatusOr<WireResult> CallService(const std::string& socket_path, const ServiceCall& call) {
  std::unique_ptr<OutputRelay> relay;
  if (call.output_fd >= 0) {
    absl::StatusOr<std::unique_ptr<OutputRelay>> started =
        OutputRelay::StartFor(call.output_fd, call.cancelled);
    if (!started.ok()) return started.status();
    relay = std::move(*started);
  }
  const std::optional<uint64_t> size_before = RegularFileSize(call.output_fd);
  absl::StatusOr<WireResult> result = Call(socket_path, call, relay.get());
  uint64_t written = 0;
  bool exact = true;  // a regular file may still grow: the service learns of the interrupt later
  if (relay != nullptr) {
    absl::Status out = relay->Finish();
    written = relay->forwarded();
    // The service released into the relay; what did not reach the output is this side's error.
    if (result.ok() && result->status.ok() && !out.ok()) result->status = out;
  } else if (size_before.has_value()) {
    const std::optional<uint64_t> size_after = RegularFileSize(call.output_fd);
    if (size_after.has_value() && *size_after > *size_before) written = *size_after - *size_before;
    exact = false;
  }
  // An interrupt says what it left: the service may have written part of a file already.
  if (absl::IsCancelled(result.status())) {
    return absl::CancelledError(
        written == 0 ? std::string("interrupted; nothing was written")
                     : absl::StrCat("interrupted after ", written, exact ? "" : " or more",
                                    " bytes were written to the output (not all of it)"));
  }
  return result;
}

namespace {

absl::StatusOr<WireResult> Call(const std::string& socket_path, const ServiceCall& call,
                                OutputRelay* relay) {
  const std::string where = absl::StrCat("the site's verifier at ", socket_path);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", socket_path, " is too long"));
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  capsule::Fd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return absl::UnavailableError("cannot create a socket");
  if (::connect(sock.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach ", where, ": ", std::strerror(errno)));
  }
  // Short receive timeouts let the wait below notice an interrupt; the service may take long.
  struct timeval tv {};
  tv.tv_sec = 1;
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto closed = [&where](const absl::Status& s) {
    return absl::UnavailableError(absl::StrCat(where, " closed the connection (", s.message(),
                                               "); nothing was released to you"));
  };

  absl::StatusOr<Hello> hello;
  for (int tries = 0;; ++tries) {
    hello = ReceiveHello(sock.get());
    if (hello.ok() || !absl::IsUnavailable(hello.status()) ||
        !absl::StrContains(hello.status().message(), "timed out") || tries == 30) {
      break;
    }
    if (call.cancelled && call.cancelled()) return absl::CancelledError("interrupted");
  }
  if (!hello.ok()) return closed(hello.status());
  if (hello->version != kProtocolVersion) {
    return absl::UnavailableError(absl::StrCat(where, " speaks protocol version ",
                                               hello->version, ", not ", kProtocolVersion));
  }

  WireRequest wire = call.request;
  std::vector<int> fds;
  if (call.capsule_fd >= 0) fds.push_back(call.capsule_fd);
  if (call.output_fd >= 0) fds.push_back(relay != nullptr ? relay->theirs() : call.output_fd);
  fds.insert(fds.end(), call.mount_fds.begin(), call.mount_fds.end());
  wire.fd_count = static_cast<uint8_t>(fds.size());
  SignedRequest req;
  req.body = EncodeRequestBody(wire);
  if (call.requester != nullptr) {
    req.requester_pem = call.requester->public_identity().ToPem();
    const crypto::Ed25519Signature sig =
        call.requester->Sign(SignedMessage(hello->challenge, req.body));
    req.signature.assign(sig.begin(), sig.end());
  } else if (call.requester_public) {
    req.requester_pem = call.requester_public->ToPem();
  }
  absl::Status sent = SendRequest(sock.get(), req, fds);
  if (relay != nullptr) relay->Passed();
  if (!sent.ok()) {
    // The service may have answered already (busy) and closed: its answer says more.
    absl::StatusOr<Reply> early = ReceiveReply(sock.get());
    if (early.ok() && early->result) return std::move(*early->result);
    return closed(sent);
  }

  while (true) {
    if (call.cancelled && call.cancelled()) return absl::CancelledError("interrupted");
    absl::StatusOr<Reply> reply = ReceiveReply(sock.get());
    if (!reply.ok()) {
      if (absl::IsUnavailable(reply.status()) &&
          absl::StrContains(reply.status().message(), "timed out")) {
        continue;  // still working
      }
      return closed(reply.status());
    }
    if (reply->progress) {
      if (call.progress) call.progress(reply->progress->first, reply->progress->second);
    } else if (reply->entries) {
      if (call.entries) BUNKER_RETURN_IF_ERROR(call.entries(*reply->entries));
    } else if (reply->mounts) {
      if (call.mounts) BUNKER_RETURN_IF_ERROR(call.mounts(*reply->mounts));
    } else {
      return std::move(*reply->result);
    }
  }
}

}  // namespace
}  // namespace bunker::site

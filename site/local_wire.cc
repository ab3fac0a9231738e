#include "site/local_wire.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "capsule/byte_order.h"
#include "crypto/status_macros.h"

namespace bunker::site {
namespace {

absl::Status WireError(int err, const char* what) {
  if (err == EAGAIN || err == EWOULDBLOCK) {
    return absl::UnavailableError(absl::StrCat(what, ": timed out"));
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(err)));
}

// Waits until `sock` is readable or `deadline` passed (kUnavailable then). The deadline bounds
// the whole frame, so a peer that sends a byte now and then cannot stretch it without end.
absl::Status AwaitReadable(int sock, Deadline deadline) {
  if (deadline == kNoDeadline) return absl::OkStatus();
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return absl::UnavailableError("the message did not arrive in time");
    struct pollfd p {sock, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r > 0) return absl::OkStatus();
    if (r < 0 && errno != EINTR) return WireError(errno, "the connection failed");
  }
}

// The rest of a frame that has begun: a few socket timeouts are tolerated (a busy peer), more
// are a stalled one.
absl::Status ReadExact(int sock, uint8_t* out, size_t n, Deadline deadline) {
  size_t done = 0;
  int stalls = 0;
  while (done < n) {
    absl::Status ready = AwaitReadable(sock, deadline);
    if (!ready.ok()) return ready;
    const ssize_t r = ::recv(sock, out + done, n - done, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && ++stalls < 4) continue;
      return WireError(errno, "the connection failed");
    }
    if (r == 0) return absl::UnavailableError("the connection was closed");
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SendFrame(int sock, capnp::MessageBuilder& message, absl::Span<const int> fds) {
  if (fds.size() > kMaxFrameFds) return absl::InvalidArgumentError("too many descriptors");
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  const kj::ArrayPtr<const kj::byte> bytes = words.asBytes();
  if (bytes.size() > kMaxFrame) return absl::InvalidArgumentError("message too large");
  uint8_t header[4];
  const uint32_t n = static_cast<uint32_t>(bytes.size());
  capsule::StoreU32Le(n, header);

  struct iovec iov[2] = {{header, sizeof header},
                         {const_cast<kj::byte*>(bytes.begin()), bytes.size()}};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFrameFds)];
  struct msghdr msg {};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  if (!fds.empty()) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  size_t total = sizeof header + bytes.size();
  size_t sent = 0;
  while (sent < total) {
    ssize_t r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return WireError(errno, "the connection failed");
    }
    sent += static_cast<size_t>(r);
    // The descriptors went with the first byte; the rest is plain data.
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    size_t skip = static_cast<size_t>(r);
    while (msg.msg_iovlen > 0 && skip >= msg.msg_iov[0].iov_len) {
      skip -= msg.msg_iov[0].iov_len;
      ++msg.msg_iov;
      --msg.msg_iovlen;
    }
    if (msg.msg_iovlen > 0) {
      msg.msg_iov[0].iov_base = static_cast<char*>(msg.msg_iov[0].iov_base) + skip;
      msg.msg_iov[0].iov_len -= skip;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Frame> ReceiveFrame(int sock, size_t max_fds, Deadline deadline) {
  Frame frame;
  uint8_t header[4];
  struct iovec iov = {header, sizeof header};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFrameFds)];
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  BUNKER_RETURN_IF_ERROR(AwaitReadable(sock, deadline));
  ssize_t r;
  do {
    r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return WireError(errno, "the connection failed");
  if (r == 0) return absl::UnavailableError("the connection was closed");
  // Take ownership of every descriptor that arrived before judging anything.
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        frame.fds.emplace_back(fd);
      }
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0 || frame.fds.size() > max_fds) {
    return absl::InvalidArgumentError("too many descriptors in a message");
  }
  if (static_cast<size_t>(r) < sizeof header) {
    absl::Status s = ReadExact(sock, header + r, sizeof header - static_cast<size_t>(r),
                               deadline);
    if (!s.ok()) return s;
  }
  const uint32_t n = capsule::LoadU32Le(header);
  if (n == 0 || n > kMaxFrame || n % sizeof(capnp::word) != 0) {
    return absl::InvalidArgumentError("malformed message length");
  }
  frame.words = kj::heapArray<capnp::word>(n / sizeof(capnp::word));
  absl::Status s = ReadExact(sock, frame.words.asBytes().begin(), n, deadline);
  if (!s.ok()) return s;
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 8 * (n / sizeof(capnp::word)) + 64;
  options.nestingLimit = 16;
  try {
    frame.reader = std::make_unique<capnp::FlatArrayMessageReader>(frame.words, options);
  } catch (const kj::Exception&) {
    return absl::InvalidArgumentError("malformed message");
  }
  return frame;
}

}  // namespace bunker::site

#include "site/client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "capsule/fd.h"
#include "crypto/status_macros.h"

namespace bunker::site {

absl::StatusOr<WireResult> CallService(const std::string& socket_path, const ServiceCall& call) {
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
  if (call.output_fd >= 0) fds.push_back(call.output_fd);
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

}  // namespace bunker::site

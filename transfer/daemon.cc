#include "transfer/daemon.h"

#include <kj/async-io.h>
#include <kj/async-unix.h>

#include <csignal>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transfer/errors.h"
#include "transfer/secure_channel.h"

namespace bunker::transfer {

absl::Status RunDaemon(const DaemonOptions& o) {
  if (o.identity == nullptr) return absl::InvalidArgumentError("no site identity");
  auto log = [&o](const std::string& line) {
    if (o.log) o.log(line);
  };
  // Signals become events of the loop; they must be blocked before any thread starts.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  try {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    absl::StatusOr<kj::Own<SecureChannel>> channel =
        SecureChannel::Create(*o.identity, o.peers, io.provider->getTimer(), absl::Now());
    if (!channel.ok()) return channel.status();

    DepotOptions d;
    d.store = o.store;
    d.trusted = o.trusted;
    d.admit = o.admit;
    d.now = [] { return static_cast<int64_t>(absl::ToUnixSeconds(absl::Now())); };
    d.on_event = [&](const DepotEvent& e) {
      log(absl::StrCat(e.kind, " capsule=", e.capsule_id.empty() ? "-" : e.capsule_id,
                       " peer=", e.peer, " ", e.detail));
      if (o.on_event) o.on_event(e);
    };
    Depot depot(d);
    RpcServer server(**channel, [&depot, &log](const crypto::PublicIdentity& peer) {
      log(absl::StrCat("connection peer=", peer.fingerprint().ToString()));
      return depot.ServeFor(peer);
    });
    server.set_on_refused([&log](const std::string& why) {
      // The description comes from the TLS layer: keep one line.
      std::string line = why;
      for (char& c : line) {
        if (c == '\n' || c == '\r') c = ' ';
      }
      log(absl::StrCat("refused connection: ", line.substr(0, 200)));
    });

    kj::Own<kj::NetworkAddress> address;
    try {
      address = io.provider->getNetwork().parseAddress(o.listen).wait(io.waitScope);
    } catch (const kj::Exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad listen address \"", o.listen, "\" (want host:port)"));
    }
    kj::Own<kj::ConnectionReceiver> listener;
    try {
      listener = address->listen();
    } catch (const kj::Exception& e) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen, ": ",
                                                 e.getDescription().cStr()));
    }
    std::string host = o.listen.substr(0, o.listen.rfind(':'));
    log(absl::StrCat("site ", o.site, " listening on ", host, ":", listener->getPort(),
                     " (", o.peers.size(), " peers, store ", o.store, ")"));
    auto stop = io.unixEventPort.onSignal(SIGTERM)
                    .exclusiveJoin(io.unixEventPort.onSignal(SIGINT))
                    .then([&log](siginfo_t info) {
                      log(absl::StrCat("stopping on signal ", info.si_signo));
                    });
    server.Listen(*listener).exclusiveJoin(kj::mv(stop)).wait(io.waitScope);
    log("stopped");
    return absl::OkStatus();
  } catch (const kj::Exception& e) {
    return FromException(e);
  }
}

}  // namespace bunker::transfer

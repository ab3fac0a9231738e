// The mutually authenticated, encrypted channel between two Bunker sites (spec/TRANSFER.md,
// "Channel"), and an RPC server that serves Cap'n Proto only to authenticated peers.
//
// Both ends present their site certificate (transfer/tls_identity.h) and both require the
// other's certificate to be signed by exactly one of the Ed25519 keys pinned in `peers`; no CA
// or system trust store is consulted. The pinning is enforced by OpenSSL's chain verification
// inside the TLS handshake (each peer is a trust anchor carrying the pinned key), and checked
// once more afterwards by name. A peer that fails is disconnected before a single byte of
// application data is read from it, so no RPC message from it is ever parsed.
//
// Threading: everything here belongs to the thread of the kj event loop it was made on.
#ifndef BUNKER_TRANSFER_SECURE_CHANNEL_H_
#define BUNKER_TRANSFER_SECURE_CHANNEL_H_

#include <capnp/capability.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>
#include <kj/function.h>
#include <kj/timer.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "crypto/keys.h"
#include "transfer/tls_identity.h"

namespace bunker::transfer {

struct ChannelOptions {
  // How long the TCP accept-to-authenticated step (TLS handshake plus the pinning checks) may
  // take, on either side. A peer that stalls longer is disconnected.
  kj::Duration handshake_timeout = 10 * kj::SECONDS;
  // After the handshake, a served session in which nothing was read or written for this long
  // is dropped (detected within twice this), so a stalled authenticated peer holds nothing.
  kj::Duration idle_timeout = 120 * kj::SECONDS;
  // Validity of our own site certificate, counted from Create()'s `now`.
  absl::Duration certificate_validity = kSiteCertificateValidity;
};

// A connection whose peer proved possession of a pinned key.
struct SecureConnection {
  kj::Own<kj::AsyncIoStream> stream;  // TLS; reads and writes plaintext
  crypto::PublicIdentity peer;        // the entry of `peers` the peer proved
};

class SecureChannel {
 public:
  // Builds the TLS context for `self` trusting exactly `peers` (duplicates are ignored; an empty
  // set refuses everyone). `now` dates our certificate; `timer` enforces the handshake timeout
  // and must outlive the channel. kInternal if OpenSSL fails.
  static absl::StatusOr<kj::Own<SecureChannel>> Create(const crypto::Identity& self,
                                                       absl::Span<const crypto::PublicIdentity> peers,
                                                       kj::Timer& timer, absl::Time now,
                                                       ChannelOptions options = {});

  // Server side of one accepted TCP connection. Resolves once the handshake succeeded and the
  // client's certificate chains to a pinned key of `peers`; otherwise the promise breaks
  // (kj::Exception, never carrying key material) and the connection is closed. Breaks also
  // when the handshake outlasts options.handshake_timeout.
  kj::Promise<SecureConnection> Accept(kj::AuthenticatedStream raw);

  // Client side: runs the handshake on `raw` expecting `server`, which must be in `peers`
  // (otherwise the promise breaks at once, before any byte is sent). The server must present a
  // certificate signed by server.sign_key naming SiteHostname(server.fingerprint()).
  kj::Promise<SecureConnection> Connect(kj::AuthenticatedStream raw,
                                        const crypto::PublicIdentity& server);

  const std::vector<crypto::PublicIdentity>& peers() const { return peers_; }
  kj::Timer& timer() { return timer_; }
  const ChannelOptions& options() const { return options_; }

  SecureChannel(kj::Timer& timer, ChannelOptions options, std::vector<crypto::PublicIdentity> peers,
                kj::Own<kj::TlsContext> tls);  // use Create()

 private:
  // The pinned identity whose fingerprint is the certificate's CN, or a kj::Exception.
  SecureConnection Authenticate(kj::AuthenticatedStream stream,
                                const crypto::PublicIdentity* expected);

  kj::Timer& timer_;
  ChannelOptions options_;
  std::vector<crypto::PublicIdentity> peers_;
  kj::Own<kj::TlsContext> tls_;
};

// Serves a Cap'n Proto bootstrap capability to authenticated peers, one two-party RPC session
// per connection. Connections that fail SecureChannel::Accept are closed and counted; they
// never reach the RPC layer. Must outlive the promise returned by Listen().
class RpcServer final : private kj::TaskSet::ErrorHandler {
 public:
  // Called once per authenticated connection, before any RPC message is read, with the peer
  // that connected; returns the capability that peer may use.
  using BootstrapFactory = kj::Function<capnp::Capability::Client(const crypto::PublicIdentity&)>;

  RpcServer(SecureChannel& channel, BootstrapFactory bootstrap);
  ~RpcServer() noexcept(false);

  // Accepts connections from `listener` until the returned promise is dropped (which stops
  // accepting; open sessions end when the server is destroyed). Each connection is
  // authenticated concurrently, so a stalled client delays nobody else.
  kj::Promise<void> Listen(kj::ConnectionReceiver& listener);

  // Called with a one-line description of each refused connection (for the daemon's log).
  void set_on_refused(std::function<void(const std::string&)> fn) { on_refused_ = std::move(fn); }

  // Connections refused (failed handshake, not pinned, timed out) and sessions served so far.
  uint64_t refused() const { return refused_; }
  uint64_t served() const { return served_; }
  // Description of the last refusal (for logs and tests; no key material, no local paths).
  const std::string& last_refusal() const { return last_refusal_; }

 private:
  struct Session;
  void taskFailed(kj::Exception&& exception) override;
  void Refuse(const std::string& why);

  // Connections being authenticated or served at once; more are closed at accept.
  static constexpr uint64_t kMaxConnections = 256;
  uint64_t open_ = 0;

  SecureChannel& channel_;
  BootstrapFactory bootstrap_;
  uint64_t refused_ = 0;
  uint64_t served_ = 0;
  std::string last_refusal_;
  std::function<void(const std::string&)> on_refused_;
  kj::TaskSet tasks_;
};

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_SECURE_CHANNEL_H_

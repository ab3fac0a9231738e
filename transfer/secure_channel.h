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
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "crypto/keys.h"
#include "transfer/memory_budget.h"
#include "transfer/tls_identity.h"
#include "transfer/write_meter.h"

namespace bunker::transfer {

struct ChannelOptions {
  // How long the TCP accept-to-authenticated step (TLS handshake plus the pinning checks) may
  // take, on either side. A peer that stalls longer is disconnected. Short, because until it
  // ends the connection holds one of the few unauthenticated slots (RpcServer::Limits).
  kj::Duration handshake_timeout = 3 * kj::SECONDS;
  // After the handshake, a served session in which nothing was read or written for this long
  // is dropped (detected within twice this), so a stalled authenticated peer holds nothing.
  kj::Duration idle_timeout = 120 * kj::SECONDS;
  // Validity of our own site certificate, counted from Create()'s `now`.
  absl::Duration certificate_validity = kSiteCertificateValidity;
  // Bytes of streaming RPC calls (Upload.put) that one connection may have sent and not yet
  // seen acknowledged. Cap'n Proto sizes this window from the socket's SO_SNDBUF, which a TLS
  // stream does not report (it then falls back to 64 KiB), and which is at most the kernel's
  // send buffer anyway: too small for a long link, where a stream needs its path's
  // bandwidth-delay product plus both ends' buffers in flight (4 MiB at 50 ms is 84 MB/s). The
  // channel's streams report this value instead. It also bounds what a peer's unanswered calls
  // can make this side queue in memory per connection.
  size_t rpc_window = 8u << 20;
};

// A connection whose peer proved possession of a pinned key.
struct SecureConnection {
  kj::Own<kj::AsyncIoStream> stream;  // TLS; reads and writes plaintext
  crypto::PublicIdentity peer;        // the entry of `peers` the peer proved
  kj::Own<WriteMeter> meter;          // counts what `stream` wrote
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
  // `handshake`, broken with DISCONNECTED "TLS handshake timed out" once
  // options.handshake_timeout passes.
  kj::Promise<SecureConnection> WithHandshakeDeadline(kj::Promise<SecureConnection> handshake);
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
//
// Budgets: connections still in their handshake (anyone on the network can open those) and
// authenticated sessions (only pinned peers) are counted apart, so unauthenticated connections
// can never take the room of trusted peers. A new connection that finds the handshake budget,
// or its source address's share of it, full evicts the oldest handshake (of that address, if
// its share is full): to keep peers out, an attacker has to open connections faster than the
// budget per handshake time, not merely hold them (one that shares a peer's address and does
// that can still make the peer's attempts fail; they succeed again when it stops). Handshakes
// end after ChannelOptions::handshake_timeout either way.
class RpcServer final : private kj::TaskSet::ErrorHandler {
 public:
  // Called once per authenticated connection, before any RPC message is read, with the peer
  // that connected and what the connection has written (for a capability that sends through
  // it: transfer/sender.h SendOptions::meters); returns the capability that peer may use.
  using BootstrapFactory =
      kj::Function<capnp::Capability::Client(const crypto::PublicIdentity&, WriteMeter&)>;

  struct Limits {
    // Connections in their handshake at once, in all and from one source address (a sender
    // opens up to 16 connections at once: transfer/client.h).
    size_t handshakes = 128;
    size_t handshakes_per_source = 32;
    // Authenticated sessions at once, in all and of one peer; more are closed right after
    // their handshake. The share of one peer keeps a pinned peer that holds sessions open (or
    // a stolen key of one) from keeping the others out.
    size_t sessions = 256;
    size_t sessions_per_peer = 64;
    // Bytes of messages being received (read in part) at once, in all and of one peer's
    // sessions: a message's body is read only once its size was taken from both (the peer's
    // first), and gives it back once read. A message larger than a budget is read when nothing
    // else holds that budget. Without it, each session could hold a half-sent message of up to
    // Cap'n Proto's 64 MiB limit. The peer's share fits the largest message, and a sender's 16
    // connections of 8 MiB chunks.
    uint64_t message_memory = uint64_t{256} << 20;
    uint64_t message_memory_per_peer = uint64_t{128} << 20;
  };

  RpcServer(SecureChannel& channel, BootstrapFactory bootstrap, Limits limits);
  RpcServer(SecureChannel& channel, BootstrapFactory bootstrap)
      : RpcServer(channel, kj::mv(bootstrap), Limits()) {}
  ~RpcServer() noexcept(false);

  // Accepts connections from `listener` until the returned promise is dropped (which stops
  // accepting; open sessions end when the server is destroyed). Each connection is
  // authenticated concurrently, so a stalled client delays nobody else.
  kj::Promise<void> Listen(kj::ConnectionReceiver& listener);

  // Called with a one-line description of each refused connection (for the daemon's log).
  void set_on_refused(std::function<void(const std::string&)> fn) { on_refused_ = std::move(fn); }

  // Connections refused (failed handshake, not pinned, timed out, evicted, over a budget) and
  // sessions served so far.
  uint64_t refused() const { return refused_; }
  uint64_t served() const { return served_; }
  // Connections in their handshake, and authenticated sessions, right now.
  size_t handshakes() const { return handshakes_.size(); }
  size_t sessions() const { return sessions_; }
  // Bytes of unanswered calls each session may have before it is no longer read: the
  // daemon-wide kCallBudget shared by the sessions, from kMinCallWindow to kMaxCallWindow.
  // Each put holds its chunk's message until a worker has checked and written it, and one
  // connection's puts are served one at a time, so a deep queue buys nothing: what a sender
  // has in flight beyond it waits in the kernel's socket buffers and on the path, not here.
  size_t call_window() const { return call_window_; }
  // The bytes of messages being received now (Limits::message_memory), and the most at once.
  uint64_t message_memory_held() const { return message_memory_.held(); }
  uint64_t message_memory_peak() const { return message_memory_.peak(); }
  static constexpr size_t kCallBudget = size_t{24} << 20;
  static constexpr size_t kMinCallWindow = size_t{1} << 20;
  static constexpr size_t kMaxCallWindow = size_t{8} << 20;
  // Description of the last refusal (for logs and tests; no key material, no local paths).
  const std::string& last_refusal() const { return last_refusal_; }

 private:
  struct Session;
  void taskFailed(kj::Exception&& exception) override;
  void Refuse(const std::string& why);

  // A connection in its handshake: where from, and how to end it early.
  struct Handshake {
    std::string source;
    kj::Own<kj::PromiseFulfiller<SecureConnection>> evict;
  };
  // Makes room for one more handshake from `source`: evicts the oldest handshake of `source`
  // if its share is full, else the oldest of all if the budget is full.
  void MakeRoom(const std::string& source);
  void Evict(std::map<uint64_t, Handshake>::iterator it, const char* why);

  Limits limits_;
  // Declared before the sessions (tasks_), which hold leases of it.
  MemoryBudget message_memory_;
  std::map<std::string, std::weak_ptr<MemoryBudget>> message_memory_of_;  // by peer fingerprint
  std::map<uint64_t, Handshake> handshakes_;  // by arrival: the first is the oldest
  uint64_t next_handshake_ = 0;
  size_t sessions_ = 0;
  std::map<std::string, size_t> sessions_of_;  // by peer fingerprint
  // Sessions being served (each also counted in sessions_), and their current call window.
  std::set<Session*> live_;
  size_t call_window_ = kMaxCallWindow;
  void Rebalance();

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

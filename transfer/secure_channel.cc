#include "transfer/secure_channel.h"

#include "absl/strings/str_cat.h"
#include "transfer/session_stream.h"

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <kj/debug.h>

#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

namespace bunker::transfer {
namespace {

const crypto::PublicIdentity* FindPeer(const std::vector<crypto::PublicIdentity>& peers,
                                       const crypto::Fingerprint& fingerprint) {
  for (const crypto::PublicIdentity& peer : peers) {
    if (peer.fingerprint() == fingerprint) return &peer;
  }
  return nullptr;
}

// The TCP stream under kj-tls, with large buffers. kj-tls moves ciphertext through 8 KiB
// buffers (kj/compat/readiness-io.h), one read or write system call each: 131,072 of each per
// GiB. Reads here take whatever the socket holds, up to kReadBuffer, and serve kj-tls's small
// reads from it; writes are gathered and go out together once the event loop has nothing more
// to add this turn (at most kWriteBuffer waiting before a writer is held back). Errors of the
// socket reach the next read or write. Memory: kReadBuffer per connection from its accept on
// (a handshake slot costs that much), four times kWriteBuffer once it has sent.
class CoalescingStream final : public kj::AsyncIoStream {
 public:
  static constexpr size_t kReadBuffer = 64u << 10;
  static constexpr size_t kWriteBuffer = 64u << 10;

  explicit CoalescingStream(kj::Own<kj::AsyncIoStream> inner)
      : inner_(kj::mv(inner)), in_(kj::heapArray<kj::byte>(kReadBuffer)) {}

  // What kj-tls wrote last before giving up on a connection (a TLS alert: "unknown ca") is
  // still here when the connection is dropped: it goes out now, best effort and without
  // waiting, unless an earlier write is unfinished (then the peer could only get it out of
  // order).
  ~CoalescingStream() noexcept(false) {
    if (pending_.empty() || !writing_.empty()) return;
    KJ_IF_MAYBE(fd, inner_->getFd()) {
      (void)::send(*fd, pending_.data(), pending_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
  }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return ReadFrom(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
  }

  kj::Promise<void> write(const void* buffer, size_t size) override {
    KJ_IF_MAYBE(e, failure_) { return kj::cp(*e); }
    const kj::byte* p = static_cast<const kj::byte*>(buffer);
    if (pending_.capacity() == 0) pending_.reserve(2 * kWriteBuffer);
    pending_.insert(pending_.end(), p, p + size);
    if (!flushing_) StartFlush();
    if (pending_.size() < kWriteBuffer) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    room_.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    // Only the last piece may have to wait for room; the earlier ones are taken at once.
    for (size_t k = 0; k + 1 < pieces.size(); ++k) {
      KJ_IF_MAYBE(e, failure_) { return kj::cp(*e); }
      pending_.insert(pending_.end(), pieces[k].begin(), pieces[k].end());
    }
    if (pieces.size() == 0) return kj::READY_NOW;
    return write(pieces.back().begin(), pieces.back().size());
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override {
    // After what is still buffered.
    if (flushing_) {
      shutdown_after_flush_ = true;
    } else {
      inner_->shutdownWrite();
    }
  }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, kj::uint* length) override {
    inner_->getpeername(addr, length);
  }

 private:
  kj::Promise<size_t> ReadFrom(kj::byte* out, size_t min_bytes, size_t max_bytes, size_t done) {
    const size_t n = std::min(in_end_ - in_begin_, max_bytes - done);
    std::memcpy(out + done, in_.begin() + in_begin_, n);
    in_begin_ += n;
    done += n;
    if (done >= min_bytes || eof_) return done;
    if (max_bytes - done >= kReadBuffer) {
      // A large read goes straight into the caller's buffer.
      return inner_->tryRead(out + done, min_bytes - done, max_bytes - done)
          .then([done](size_t got) { return done + got; });
    }
    return inner_->tryRead(in_.begin(), 1, in_.size())
        .then([this, out, min_bytes, max_bytes, done](size_t got) {
          in_begin_ = 0;
          in_end_ = got;
          if (got == 0) eof_ = true;
          return ReadFrom(out, min_bytes, max_bytes, done);
        });
  }

  void StartFlush() {
    flushing_ = true;
    // kj-tls adds 8 KiB at a time, each after the last one's promise resolved: write once the
    // loop has nothing else queued, i.e. once kj-tls is done adding or waits for room.
    flush_ = kj::evalLast([this]() { return Flush(); })
                 .eagerlyEvaluate([this](kj::Exception&& e) { Fail(kj::mv(e)); });
  }
  kj::Promise<void> Flush() {
    writing_.swap(pending_);
    pending_.clear();
    for (auto& f : room_) f->fulfill();
    room_.clear();
    return inner_->write(writing_.data(), writing_.size()).then([this]() -> kj::Promise<void> {
      writing_.clear();
      if (!pending_.empty()) return Flush();
      flushing_ = false;
      if (shutdown_after_flush_) inner_->shutdownWrite();
      return kj::READY_NOW;
    });
  }
  void Fail(kj::Exception&& e) {
    flushing_ = false;
    for (auto& f : room_) f->reject(kj::cp(e));
    room_.clear();
    failure_ = kj::mv(e);
  }

  kj::Own<kj::AsyncIoStream> inner_;
  kj::Array<kj::byte> in_;
  size_t in_begin_ = 0, in_end_ = 0;
  bool eof_ = false;
  std::vector<kj::byte> pending_, writing_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> room_;
  bool flushing_ = false;
  bool shutdown_after_flush_ = false;
  kj::Maybe<kj::Exception> failure_;
  kj::Promise<void> flush_ = kj::READY_NOW;
};

}  // namespace

absl::StatusOr<kj::Own<SecureChannel>> SecureChannel::Create(
    const crypto::Identity& self, absl::Span<const crypto::PublicIdentity> peers,
    kj::Timer& timer, absl::Time now, ChannelOptions options) {
  std::vector<crypto::PublicIdentity> unique;
  for (const crypto::PublicIdentity& peer : peers) {
    if (std::find(unique.begin(), unique.end(), peer) == unique.end()) unique.push_back(peer);
  }

  absl::StatusOr<kj::TlsKeypair> keypair =
      MakeSiteKeypair(self, now, options.certificate_validity);
  if (!keypair.ok()) return keypair.status();

  std::vector<kj::TlsCertificate> anchors;
  anchors.reserve(unique.size());
  for (const crypto::PublicIdentity& peer : unique) {
    absl::StatusOr<std::string> pem = MakePeerAnchorPem(peer, now);
    if (!pem.ok()) return pem.status();
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                  anchors.emplace_back(kj::StringPtr(pem->c_str(), pem->size()));
                })) {
      (void)e;
      return absl::InternalError("kj-tls rejected a peer anchor certificate");
    }
  }

  kj::TlsContext::Options tls_options;
  // Trust only the anchors made from `peers`: no system store, no CA.
  tls_options.useSystemTrustStore = false;
  tls_options.trustedCertificates = kj::arrayPtr(anchors.data(), anchors.size());
  // Sets SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT on the SSL_CTX: a server demands a
  // client certificate, and a client aborts the handshake on an untrusted server certificate.
  tls_options.verifyClients = true;
  tls_options.minVersion = kj::TlsVersion::TLS_1_2;
  tls_options.defaultKeypair = *keypair;

  kj::Own<kj::TlsContext> tls;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                     [&]() { tls = kj::heap<kj::TlsContext>(kj::mv(tls_options)); })) {
    (void)e;
    return absl::InternalError("kj-tls could not build the TLS context");
  }
  // The SSL_CTX now holds its own references to the key and certificates.
  return kj::heap<SecureChannel>(timer, options, std::move(unique), kj::mv(tls));
}

SecureChannel::SecureChannel(kj::Timer& timer, ChannelOptions options,
                             std::vector<crypto::PublicIdentity> peers,
                             kj::Own<kj::TlsContext> tls)
    : timer_(timer), options_(options), peers_(std::move(peers)), tls_(kj::mv(tls)) {}

SecureConnection SecureChannel::Authenticate(kj::AuthenticatedStream stream,
                                             const crypto::PublicIdentity* expected) {
  // OpenSSL has already verified the chain against our anchors (and, on the client, the
  // hostname); this maps the proven name back to its entry and re-checks it.
  auto& identity = kj::downcast<kj::TlsPeerIdentity>(*stream.peerIdentity);
  KJ_REQUIRE(identity.hasCertificate(), "peer presented no certificate");
  absl::StatusOr<crypto::Fingerprint> fingerprint =
      crypto::Fingerprint::Parse(identity.getCommonName().cStr());
  KJ_REQUIRE(fingerprint.ok(), "peer certificate does not name a Bunker identity");
  const std::string name = fingerprint->ToString();
  const crypto::PublicIdentity* peer = FindPeer(peers_, *fingerprint);
  KJ_REQUIRE(peer != nullptr, "peer is not in peers", name.c_str());
  if (expected != nullptr) {
    KJ_REQUIRE(*peer == *expected, "server is not the expected peer", name.c_str());
  }
  auto meter = kj::refcounted<WriteMeter>();
  auto windowed = NewWindowedStream(kj::mv(stream.stream), options_.rpc_window, *meter);
  return SecureConnection{kj::mv(windowed), *peer, kj::mv(meter)};
}

kj::Promise<SecureConnection> SecureChannel::Accept(kj::AuthenticatedStream raw) {
  raw.stream = kj::heap<CoalescingStream>(kj::mv(raw.stream));
  auto handshake = tls_->wrapServer(kj::mv(raw)).then([this](kj::AuthenticatedStream stream) {
    return Authenticate(kj::mv(stream), nullptr);
  });
  return WithHandshakeDeadline(kj::mv(handshake));
}

kj::Promise<SecureConnection> SecureChannel::WithHandshakeDeadline(
    kj::Promise<SecureConnection> handshake) {
  // DISCONNECTED, not kj's timeoutAfter's OVERLOADED: a peer that stalls its handshake is a
  // peer not available now (exit 9, run it again), not one out of resources.
  const uint64_t ms = options_.handshake_timeout / kj::MILLISECONDS;
  return handshake.exclusiveJoin(timer_.afterDelay(options_.handshake_timeout)
                                     .then([ms]() -> kj::Promise<SecureConnection> {
                                       return kj::Exception(
                                           kj::Exception::Type::DISCONNECTED, __FILE__,
                                           __LINE__,
                                           kj::str("TLS handshake timed out after ", ms, " ms"));
                                     }));
}

kj::Promise<SecureConnection> SecureChannel::Connect(kj::AuthenticatedStream raw,
                                                     const crypto::PublicIdentity& server) {
  const crypto::PublicIdentity* expected = FindPeer(peers_, server.fingerprint());
  if (expected == nullptr || !(*expected == server)) {
    const std::string name = server.fingerprint().ToString();
    return KJ_EXCEPTION(FAILED, "server is not in peers", name.c_str());
  }
  const std::string hostname = SiteHostname(server.fingerprint());
  raw.stream = kj::heap<CoalescingStream>(kj::mv(raw.stream));
  auto handshake = tls_->wrapClient(kj::mv(raw), kj::StringPtr(hostname.c_str(), hostname.size()))
                       .then([this, expected](kj::AuthenticatedStream stream) {
                         return Authenticate(kj::mv(stream), expected);
                       });
  return WithHandshakeDeadline(kj::mv(handshake));
}

// One authenticated connection and the RPC system speaking over it. The network refers to the
// (watched) stream and the RPC system to the network, hence the member order.
struct RpcServer::Session {
  Session(SecureConnection connection, capnp::Capability::Client bootstrap, kj::Timer& timer,
          kj::Duration idle, std::shared_ptr<MemoryBudget> peer_budget, MemoryBudget& budget)
      : connection(kj::mv(connection)),
        peer_budget(std::move(peer_budget)),
        watched(*this->connection.stream, timer, idle, this->peer_budget.get(), &budget),
        network(watched, capnp::rpc::twoparty::Side::SERVER),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {
  }

  SecureConnection connection;
  std::shared_ptr<MemoryBudget> peer_budget;  // outlives the stream's lease of it
  WatchedStream watched;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

RpcServer::RpcServer(SecureChannel& channel, BootstrapFactory bootstrap, Limits limits)
    : limits_(limits),
      message_memory_(limits.message_memory),
      channel_(channel),
      bootstrap_(kj::mv(bootstrap)),
      tasks_(*this) {}

RpcServer::~RpcServer() noexcept(false) = default;

namespace {

// The address a connection comes from, without its port ("" if unknown): the unit of the
// per-source handshake budget.
// TODO(security): an IPv6 attacker has a /64 of addresses; count by prefix there.
std::string SourceOf(kj::AuthenticatedStream& raw) {
  if (raw.peerIdentity.get() == nullptr) return "";
  auto* network = dynamic_cast<kj::NetworkPeerIdentity*>(raw.peerIdentity.get());
  if (network == nullptr) return "";
  std::string address = network->getAddress().toString().cStr();
  const size_t colon = address.rfind(':');
  const size_t bracket = address.rfind(']');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    address.resize(colon);
  }
  return address;
}

}  // namespace

void RpcServer::Evict(std::map<uint64_t, Handshake>::iterator it, const char* why) {
  // Rejecting the join ends the handshake; dropping it closes the connection.
  it->second.evict->reject(
      kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__, kj::heapString(why)));
  handshakes_.erase(it);
}

void RpcServer::MakeRoom(const std::string& source) {
  size_t from_source = 0;
  auto oldest_of_source = handshakes_.end();
  for (auto it = handshakes_.begin(); it != handshakes_.end(); ++it) {
    if (it->second.source != source) continue;
    if (from_source++ == 0) oldest_of_source = it;
  }
  if (from_source >= limits_.handshakes_per_source && oldest_of_source != handshakes_.end()) {
    Evict(oldest_of_source, "evicted: too many handshakes from one address");
  } else if (handshakes_.size() >= limits_.handshakes && !handshakes_.empty()) {
    Evict(handshakes_.begin(), "evicted: too many handshakes");
  }
}

kj::Promise<void> RpcServer::Listen(kj::ConnectionReceiver& listener) {
  return listener.acceptAuthenticated().then(
      [this, &listener](kj::AuthenticatedStream raw) {
        const std::string source = SourceOf(raw);
        MakeRoom(source);
        if (handshakes_.size() >= limits_.handshakes) {
          // Only with a budget of 0: dropping `raw` closes it.
          Refuse("too many handshakes");
          return Listen(listener);
        }
        const uint64_t id = next_handshake_++;
        auto evicted = kj::newPromiseAndFulfiller<SecureConnection>();
        handshakes_.emplace(id, Handshake{source, kj::mv(evicted.fulfiller)});
        // Authenticate in the background so the next accept() is not held up by this peer.
        tasks_.add(
            channel_.Accept(kj::mv(raw))
                .exclusiveJoin(kj::mv(evicted.promise))
                .then(
                    [this, id](SecureConnection connection) -> kj::Promise<void> {
                      handshakes_.erase(id);
                      if (sessions_ >= limits_.sessions) {
                        // Dropping `connection` closes it.
                        Refuse("too many sessions");
                        return kj::READY_NOW;
                      }
                      const std::string peer = connection.peer.fingerprint().ToString();
                      if (sessions_of_[peer] >= limits_.sessions_per_peer) {
                        Refuse(absl::StrCat("too many sessions of peer ", peer));
                        return kj::READY_NOW;
                      }
                      ++served_;
                      ++sessions_;
                      ++sessions_of_[peer];
                      capnp::Capability::Client bootstrap =
                          bootstrap_(connection.peer, *connection.meter);
                      // The peer's share of the message memory, shared by its sessions.
                      std::shared_ptr<MemoryBudget> peer_budget = message_memory_of_[peer].lock();
                      if (peer_budget == nullptr) {
                        peer_budget =
                            std::make_shared<MemoryBudget>(limits_.message_memory_per_peer);
                        message_memory_of_[peer] = peer_budget;
                      }
                      auto session = kj::heap<Session>(
                          kj::mv(connection), kj::mv(bootstrap), channel_.timer(),
                          channel_.options().idle_timeout, kj::mv(peer_budget), message_memory_);
                      // A peer that pipelines calls without waiting for their answers stops
                      // being read once its share of the daemon's call budget is unanswered.
                      Session* live = session.get();
                      live_.insert(live);
                      Rebalance();
                      // Ends when the peer disconnects, or when it stays idle too long.
                      auto done =
                          session->network.onDisconnect().exclusiveJoin(session->watched.Watch());
                      return done.attach(kj::mv(session), kj::defer([this, live, peer]() {
                        --sessions_;
                        if (--sessions_of_[peer] == 0) {
                          sessions_of_.erase(peer);
                          message_memory_of_.erase(peer);  // its sessions hold it till they go
                        }
                        live_.erase(live);
                        Rebalance();
                      }));
                    },
                    [this, id](kj::Exception&& e) -> kj::Promise<void> {
                      handshakes_.erase(id);  // unless it was evicted, which erased it
                      // A refusal is an expected outcome, not a server failure: the
                      // connection was dropped (closing it) and listening goes on.
                      Refuse(e.getDescription().cStr());
                      return kj::READY_NOW;
                    }));
        return Listen(listener);
      },
      [this, &listener](kj::Exception&& e) -> kj::Promise<void> {
        // accept() itself failed (e.g. out of file descriptors): keep serving, try again soon.
        Refuse(absl::StrCat("accept failed: ", e.getDescription().cStr()));
        return channel_.timer().afterDelay(100 * kj::MILLISECONDS).then([this, &listener]() {
          return Listen(listener);
        });
      });
}

void RpcServer::Rebalance() {
  const size_t share = live_.empty() ? kMaxCallWindow : kCallBudget / live_.size();
  call_window_ = std::clamp(share, kMinCallWindow, kMaxCallWindow);
  for (Session* session : live_) session->rpc.setFlowLimit(call_window_ / sizeof(capnp::word));
}

void RpcServer::Refuse(const std::string& why) {
  ++refused_;
  last_refusal_ = why;
  if (on_refused_) on_refused_(last_refusal_);
}

void RpcServer::taskFailed(kj::Exception&& exception) {
  // A session ended abnormally (e.g. the peer vanished mid-call); the session is gone either way.
  KJ_LOG(INFO, "transfer session ended", exception.getDescription());
}

}  // namespace bunker::transfer

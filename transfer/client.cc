#include "transfer/client.h"

#include <capnp/rpc-twoparty.h>
#include <fcntl.h>
#include <kj/async-io.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "capsule/format.h"
#include "capsule/io.h"
#include "capsule/reader.h"
#include "capsule/s3_client.h"
#include "transfer/chunk_memory.h"
#include "transfer/depot.h"
#include "transfer/errors.h"
#include "transfer/secure_channel.h"

namespace bunker::transfer {
namespace {

// The fetch's staging folder, beside the output and kept across runs so that a fetch resumes:
// made private (0700) and then required to be ours, private and a real folder, so that no
// other user can plant, link or read what is received there (a shared folder such as /tmp).
absl::Status MakePrivateStaging(const std::string& folder) {
  if (::mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) {
    return capsule::ErrnoStatus(absl::StrCat("cannot create the staging folder ", folder), errno);
  }
  struct stat st;
  if (::lstat(folder.c_str(), &st) != 0) {
    return capsule::ErrnoStatus(absl::StrCat("cannot use the staging folder ", folder), errno);
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the staging folder ", folder, " is not a private folder of yours (",
        S_ISLNK(st.st_mode) ? "a symbolic link"
        : !S_ISDIR(st.st_mode) ? "not a folder"
        : st.st_uid != ::geteuid() ? absl::StrCat("it belongs to uid ", st.st_uid)
                                   : absl::StrFormat("mode %04o", st.st_mode & 07777),
        "); remove it, or fetch into another folder"));
  }
  return absl::OkStatus();
}

// Bytes a sender may have sent and not seen acknowledged (ChannelOptions::rpc_window), in all
// and per connection at least and at most: on a long link what one round trip moves (84 MB/s
// at RTT 50 ms is 4 MiB per connection) and what the path and both ends' socket buffers hold.
// It costs no memory here beyond about two messages per connection (SendOptions::meters):
// the rest is in the kernel, on the path and at the receiver, which bounds its own share
// (RpcServer::call_window).
constexpr size_t kSendWindowTotal = 64u << 20;
constexpr size_t kSendWindowMin = 2u << 20;
constexpr size_t kSendWindowMax = 16u << 20;

absl::StatusOr<crypto::PublicIdentity> PickServer(const ClientOptions& o) {
  if (o.server) return *o.server;
  if (o.peers.size() == 1) return o.peers[0];
  return absl::InvalidArgumentError(absl::StrCat(
      "the site has ", o.peers.size(), " peers; name the one at this address with --peer"));
}

// What the sender may have in flight on each of `count` connections.
size_t RpcWindow(size_t count) {
  return std::clamp<size_t>(kSendWindowTotal / count, kSendWindowMin, kSendWindowMax);
}

// One connection per stream: on a long link each gets its own TCP flow window.
size_t ConnectionsFor(const ClientOptions& o) {
  return static_cast<size_t>(std::clamp(o.streams, 1, 16));
}

SendOptions ToSendOptions(const ClientOptions& o, kj::Timer& timer) {
  SendOptions s;
  s.streams = o.streams;
  // The chains wait for an unanswered commit only when the RPC window has gone out beyond the
  // interval: until then the commit is behind data that is in flight anyway.
  s.commit_slack = RpcWindow(ConnectionsFor(o)) * ConnectionsFor(o);
  s.rate = o.rate;
  s.timer = &timer;
  auto progress = o.progress;
  auto cancelled = o.cancelled;
  s.progress = [progress, cancelled](const SendProgress& p) {
    if (cancelled && cancelled()) {
      kj::throwFatalException(
          ToException(absl::CancelledError("interrupted; the receiver keeps what it has")));
    }
    if (progress) progress(p);
  };
  return s;
}

// The capsule to send: an s3:// object, or a local file read front to back (the chunks go out
// in order), which tells the kernel to read ahead further.
absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> OpenForSending(
    const std::string& path, const std::function<bool()>& cancelled) {
  if (capsule::s3::IsS3Url(path)) return capsule::s3::OpenFileOrObject(path, "", cancelled);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO: no hang
  if (fd < 0) return capsule::ErrnoStatus(absl::StrCat("cannot open ", path), errno);
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);  // advice only
  return capsule::OpenFileDescriptor(fd, path);
}

// HOST:PORT (HOST a name, an IPv4 address or a bracketed IPv6 one; PORT 1 to 65535), else
// kInvalidArgument naming what is wrong. Without it a missing port would be port 0.
absl::Status CheckHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  const std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  int port = 0;
  if (colon == std::string::npos || (host.find(':') != std::string::npos && host.front() != '[') ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("address ", address, " has no :PORT (give HOST:PORT)"));
  }
  if (host.empty() || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address ", address, " is not HOST:PORT with a port from 1 to 65535"));
  }
  return absl::OkStatus();
}

// What the peer is waited for with: when a byte last moved on any of the connections, and how
// many were read. Shared by the connections' streams (which note) and the watch (which looks).
struct Activity {
  explicit Activity(kj::TimePoint start) : last(start) {}
  kj::TimePoint last;
  uint64_t read = 0;
};

// A connection's stream passed through, noting on `activity` each read or write that moved
// bytes. A read or write that waits does not count: a peer that went silent (or a path that
// drops everything without closing) leaves `last` where it was.
class NotingStream final : public kj::AsyncIoStream {
 public:
  NotingStream(kj::AsyncIoStream& inner, kj::Timer& timer, Activity& activity)
      : inner_(inner), timer_(timer), activity_(activity) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return inner_.tryRead(buffer, min_bytes, max_bytes).then([this](size_t n) {
      if (n > 0) {
        activity_.last = timer_.now();
        activity_.read += n;
      }
      return n;
    });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    return inner_.write(buffer, size).then([this]() { activity_.last = timer_.now(); });
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return inner_.write(pieces).then([this]() { activity_.last = timer_.now(); });
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_.whenWriteDisconnected(); }
  void shutdownWrite() override { inner_.shutdownWrite(); }
  void abortRead() override { inner_.abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_.getsockopt(level, option, value, length);  // the flow window (WindowedStream)
  }

 private:
  kj::AsyncIoStream& inner_;
  kj::Timer& timer_;
  Activity& activity_;
};

// One authenticated RPC connection; must outlive the capabilities obtained through it.
struct Connection {
  SecureConnection secure;
  NotingStream noting;
  capnp::TwoPartyClient client;
  Connection(SecureConnection c, kj::Timer& timer, Activity& activity)
      : secure(kj::mv(c)), noting(*secure.stream, timer, activity), client(noting) {}
};

// Breaks what it is joined with when the user interrupts (kCancelled with `interrupted`) or the
// peer moved nothing for the idle period (kUnavailable): the client's waits on the peer never
// end otherwise, since a stalled peer neither answers nor closes, and the signal handlers only
// set a flag (cli/exit_status.cc). Looks every 100 ms; also reports progress then.
class PeerWatch {
 public:
  PeerWatch(kj::Timer& timer, const ClientOptions& options, std::string interrupted)
      : timer_(timer),
        options_(options),
        interrupted_(std::move(interrupted)),
        activity_(timer.now()) {}
  Activity& activity() { return activity_; }
  // Called at each look (fetch progress).
  std::function<void()> on_tick;

  template <typename T>
  kj::Promise<T> Guard(kj::Promise<T> work) {
    return work.exclusiveJoin(Breaks<T>());
  }

 private:
  template <typename T>
  kj::Promise<T> Breaks() {
    return timer_.afterDelay(100 * kj::MILLISECONDS).then([this]() -> kj::Promise<T> {
      if (options_.cancelled && options_.cancelled()) {
        return ToException(absl::CancelledError(interrupted_));
      }
      const int idle = std::max(options_.idle_seconds, 1);
      if (timer_.now() - activity_.last >= idle * kj::SECONDS) {
        return ToException(absl::UnavailableError(absl::StrCat(
            "the peer moved nothing for ", idle, " s; run it again to resume")));
      }
      if (on_tick) on_tick();
      return Breaks<T>();
    });
  }

  kj::Timer& timer_;
  const ClientOptions& options_;
  std::string interrupted_;
  Activity activity_;
};

// Opens `count` connections to `address`, authenticating both ends of each, and waits for
// the promise `fn` makes from the peer's Transfer capabilities, all under `watch`'s guard
// (interrupts, an idle peer). `interrupted`: the text of an interrupt.
template <typename Fn>
absl::StatusOr<SendSummary> WithPeer(const std::string& address, const ClientOptions& options,
                                     size_t count, const std::string& interrupted, Fn fn) {
  if (options.self == nullptr) return absl::InvalidArgumentError("no identity");
  KeepChunkBuffers();
  absl::StatusOr<crypto::PublicIdentity> server = PickServer(options);
  if (!server.ok()) return server.status();
  try {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    kj::Timer& timer = io.provider->getTimer();
    // What the sender may have in flight, spread over its connections.
    ChannelOptions channel_options;
    channel_options.rpc_window = RpcWindow(count);
    absl::StatusOr<kj::Own<SecureChannel>> channel =
        SecureChannel::Create(*options.self, options.peers, timer, absl::Now(), channel_options);
    if (!channel.ok()) return channel.status();
    if (absl::Status s = CheckHostPort(address); !s.ok()) return s;
    PeerWatch watch(timer, options, interrupted);
    kj::Own<kj::NetworkAddress> addr;
    try {
      addr = watch.Guard(io.provider->getNetwork().parseAddress(address)).wait(io.waitScope);
    } catch (const kj::Exception& e) {
      if (absl::Status s = FromException(e); absl::IsCancelled(s)) return s;
      // Well formed (checked above): a name that does not resolve now, which may later.
      return absl::UnavailableError(absl::StrCat("cannot resolve the address ", address));
    }
    watch.activity().last = timer.now();  // the peer's silence counts from here
    // All connections at once: on a long link each handshake takes a few round trips, which
    // one after the other would add up (16 streams at 50 ms: over two seconds).
    auto handshakes = kj::heapArrayBuilder<kj::Promise<SecureConnection>>(count);
    for (size_t c = 0; c < count; ++c) {
      handshakes.add(
          addr->connectAuthenticated()
              .catch_([&address](kj::Exception&& e) -> kj::Promise<kj::AuthenticatedStream> {
                // Never connected: say so ("connection lost" would claim it had been).
                std::string why = e.getDescription().cStr();
                if (absl::StartsWith(why, "connect(): ")) why = why.substr(11);
                return ToException(absl::UnavailableError(
                    absl::StrCat("cannot connect to ", address, ": ", why)));
              })
              .then([&channel, &server](kj::AuthenticatedStream raw) {
                return (*channel)->Connect(kj::mv(raw), *server);
              }));
    }
    kj::Array<SecureConnection> secured =
        watch.Guard(kj::joinPromises(handshakes.finish())).wait(io.waitScope);
    std::vector<kj::Own<Connection>> connections;
    std::vector<WriteMeter*> meters;
    auto peers = kj::heapArrayBuilder<schema::Transfer::Client>(count);
    for (SecureConnection& secure : secured) {
      connections.push_back(kj::heap<Connection>(kj::mv(secure), timer, watch.activity()));
      meters.push_back(connections.back()->secure.meter.get());
      peers.add(connections.back()->client.bootstrap().castAs<schema::Transfer>());
    }
    return watch.Guard(fn(peers.finish(), timer, std::move(meters), watch)).wait(io.waitScope);
  } catch (const kj::Exception& e) {
    return FromException(e);
  }
}

}  // namespace

absl::StatusOr<SendSummary> SendCapsule(const std::string& capsule_path,
                                        const std::string& address,
                                        const ClientOptions& options) {
  // A local file or an s3:// object (a store-and-forward hop from an S3-backed store).
  absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> file = OpenForSending(capsule_path, options.cancelled);
  if (!file.ok()) return file.status();
  // The sender needs no trust in the issuer: the receiver decides.
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader =
      capsule::CapsuleReader::OpenUntrusted(std::move(*file));
  if (!reader.ok()) return reader.status();
  std::shared_ptr<const capsule::CapsuleReader> shared = std::move(*reader);
  const size_t connections = ConnectionsFor(options);
  return WithPeer(address, options, connections, "interrupted; the receiver keeps what it has",
                  [&](kj::Array<schema::Transfer::Client> peers, kj::Timer& timer,
                      std::vector<WriteMeter*> meters, PeerWatch&) {
                    SendOptions send = ToSendOptions(options, timer);
                    send.meters = std::move(meters);
                    return Push(shared, kj::mv(peers), std::move(send));
                  });
}

absl::StatusOr<SendSummary> FetchCapsule(const std::string& capsule_id, const std::string& address,
                                         const std::string& output, const ClientOptions& options,
                                         const std::vector<crypto::PublicIdentity>& trusted,
                                         std::function<absl::Status(const capsule::Manifest&)> admit) {
  // Every name below comes from the id the user asked for, never from what the server says.
  const std::string id = absl::AsciiStrToLower(capsule_id);
  if (id.size() != 2 * capsule::kCapsuleIdSize ||
      id.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError("a capsule id is 32 hex characters");
  }
  if (::access(output.c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(output, " already exists"));
  }
  const size_t slash = output.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : output.substr(0, slash));
  const std::string store = (dir == "/" ? "" : dir) + "/.bunker-fetch";
  if (absl::Status s = MakePrivateStaging(store); !s.ok()) return s;
  bool received = false;
  // What the server offers, once it did (the admission check sees the manifest first).
  uint64_t total = 0;
  absl::StatusOr<SendSummary> summary = WithPeer(
      address, options, 1, "interrupted; what was received is kept for a resume",
      [&](kj::Array<schema::Transfer::Client> peers, kj::Timer&, std::vector<WriteMeter*>,
          PeerWatch& watch) -> kj::Promise<SendSummary> {
        schema::Transfer::Client& peer = peers[0];
        DepotOptions d;
        d.store = capsule::MakeLocalStore(store);
        d.trusted = trusted;
        d.admit = [admit, &total](const capsule::Manifest& m) {
          total = m.payload_size;
          return admit ? admit(m) : absl::OkStatus();
        };
        d.now = [] { return static_cast<int64_t>(absl::ToUnixSeconds(absl::Now())); };
        d.expected_id = id;
        d.on_event = [&received, &id](const DepotEvent& e) {
          if (e.kind == "received" && e.capsule_id == id) received = true;
        };
        // Kept with the promise: destroyed with it, while the event loop still runs.
        kj::Own<Depot> local = kj::heap<Depot>(d);
        if (options.progress) {
          watch.on_tick = [&options, &total, &watch]() {
            SendProgress p;
            p.total_bytes = total;
            // What was read includes the messages' framing: never shown beyond the total.
            p.sent_bytes = total > 0 ? std::min(watch.activity().read, total)
                                     : watch.activity().read;
            options.progress(p);
          };
        }
        absl::StatusOr<crypto::PublicIdentity> server = PickServer(options);
        auto req = peer.fetchRequest();
        req.setCapsuleId(id);
        req.setReceiver(local->ServeFor(*server));
        return req.send().then([](capnp::Response<schema::Transfer::FetchResults>&& response) {
          auto s = response.getSummary();
          SendSummary out;
          out.capsule_id = s.getCapsuleId().cStr();
          out.chunks_total = s.getChunksTotal();
          out.chunks_sent = s.getChunksSent();
          out.chunks_skipped = s.getChunksSkipped();
          out.bytes_sent = s.getBytesSent();
          out.seconds = s.getSeconds();
          return out;
        }).attach(kj::mv(local));
      });
  if (!summary.ok()) {
    // What was received stays for a resume; a staging folder that holds nothing goes.
    ::rmdir((store + "/.incoming").c_str());
    ::rmdir(store.c_str());
    return summary;
  }
  const std::string got = store + "/" + id + ".capsule";
  // The summary is the server's word; what counts is that this capsule was received and
  // verified here (or was already, complete, in the staging store).
  if (!received && ::access(got.c_str(), F_OK) != 0) {
    return absl::DataLossError("the server reported success but sent no such capsule");
  }
  summary->capsule_id = id;
  if (::link(got.c_str(), output.c_str()) != 0) {
    return capsule::ErrnoStatus(absl::StrCat("cannot create ", output), errno);
  }
  ::unlink(got.c_str());
  ::rmdir((store + "/.incoming").c_str());
  ::rmdir(store.c_str());
  return summary;
}

}  // namespace bunker::transfer

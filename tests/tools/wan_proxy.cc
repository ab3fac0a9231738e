// A long fat pipe in user space, for tests and benchmarks (this kernel has no netem).
//
// Listens on a TCP port and forwards every connection to a target. Each direction of each
// connection behaves like one direction of a link with round-trip time RTT that holds at most
// W bytes in flight:
//
//   - a byte read from one side is written to the other side RTT/2 after it was read (the
//     one-way delay);
//   - a byte counts as in flight from the moment it is read until RTT after that (until the
//     acknowledgement of a real link would be back at its sender), or RTT/2 after it was
//     written if the far side was slow to take it;
//   - while W bytes are in flight, nothing more is read from the source: its TCP buffers fill
//     and it stalls, as a sender does whose window is full.
//
// So one connection moves at most W / RTT bytes per second (4 MiB at 50 ms: about 84 MB/s),
// whatever the tools at either end do; several connections each get their own W. Nothing else
// is emulated (no loss, no bandwidth limit, no reordering). An EOF (half-close) is passed on
// RTT/2 after it was read, behind the bytes before it; an error or reset on either side ends
// the whole connection, as on a real link.
//
//   wan_proxy --listen HOST:PORT --target HOST:PORT --rtt-ms MS [--window BYTES]
//
// PORT 0 picks a free port. Once listening, prints one line "listening on HOST:PORT" to
// stdout. Runs until killed (SIGTERM or SIGINT end it quietly, exit status 0).
//
// The same program as wan_proxy.py beside it (same options, output and behaviour; both pass
// wan_proxy_test.py). Why C++: the proxy shares the machine's cores with both ends of the transfer it measures,
// so every CPU second it spends is taken from them. One thread runs everything on one epoll
// set (edge-triggered, non-blocking sockets); a timerfd wakes it at the next release or
// credit time. The bytes of one direction live in one ring buffer of W bytes, allocated once
// per connection and reused: what was read and not yet written is in flight, and never more
// than W is in flight, so the ring cannot overflow. Memory: 2 W per connection plus
// bookkeeping, whatever goes through.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <vector>

namespace {

// Largest single read: bounds the granularity of the window.
constexpr size_t kReadMax = size_t{1} << 20;
// Reads whose release times lie this close together share one queue entry (released at the
// later time, so no byte ever goes early); same for credits. Bounds the bookkeeping to about
// RTT / kMergeNs entries per direction, whatever the read sizes.
constexpr int64_t kMergeNs = 1'000'000;

const char kUsage[] =
    "usage: wan_proxy --listen HOST:PORT --target HOST:PORT --rtt-ms MS [--window BYTES]\n"
    "\n"
    "A long fat pipe in user space: forwards each TCP connection accepted on --listen to\n"
    "--target, delaying each direction by RTT/2 and holding at most --window bytes in flight\n"
    "per connection and direction (default 4M; suffixes K, M, G). PORT 0 picks a free port;\n"
    "prints \"listening on HOST:PORT\" once listening. SIGTERM or SIGINT end it.\n";

[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr, "wan_proxy: %s (see --help)\n", message.c_str());
  std::exit(2);
}

[[noreturn]] void Fatal(const std::string& what) {
  std::fprintf(stderr, "wan_proxy: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct Address {
  std::string host;
  std::string port;
};

Address ParseAddress(const char* flag, const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size() ||
      text.find_first_not_of("0123456789", colon + 1) != std::string::npos ||
      text.size() - colon - 1 > 5 || std::stoul(text.substr(colon + 1)) > 65535) {
    UsageError(std::string("argument ") + flag + ": expected HOST:PORT, got '" + text + "'");
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return {host.empty() ? "127.0.0.1" : host, text.substr(colon + 1)};
}

size_t ParseSize(const std::string& text) {
  size_t scale = 1;
  std::string number = text;
  if (!text.empty()) {
    switch (text.back()) {
      case 'k': case 'K': scale = size_t{1} << 10; break;
      case 'm': case 'M': scale = size_t{1} << 20; break;
      case 'g': case 'G': scale = size_t{1} << 30; break;
      default: break;
    }
    if (scale > 1) number.pop_back();
  }
  // A ring of this size is allocated per connection and direction: keep it sane.
  constexpr size_t kMaxWindow = size_t{1} << 32;
  bool digits = !number.empty() && number.size() <= 12 &&
                number.find_first_not_of("0123456789") == std::string::npos;
  size_t count = digits ? std::stoull(number) : 0;
  size_t value = count <= kMaxWindow / scale ? count * scale : 0;
  if (value == 0) {
    UsageError("argument --window: expected a byte count such as 4M (at most 4G), got '" +
               text + "'");
  }
  return value;
}

double ParseRtt(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  double value = text.empty() ? NAN : std::strtod(text.c_str(), &end);
  if (std::isnan(value) || errno != 0 || *end != '\0' || !std::isfinite(value)) {
    UsageError("argument --rtt-ms: invalid float value: '" + text + "'");
  }
  if (value < 0) UsageError("--rtt-ms must not be negative");
  if (value > 3.6e6) UsageError("--rtt-ms must be at most one hour");
  return value;
}

struct Options {
  Address listen;
  Address target;
  int64_t half_rtt_ns = 0;
  size_t window = size_t{4} << 20;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  bool have_listen = false, have_target = false, have_rtt = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    std::string name = arg, value;
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (name == "--listen" || name == "--target" || name == "--rtt-ms" ||
               name == "--window") {
      if (i + 1 >= argc) UsageError("argument " + name + ": expected one argument");
      value = argv[++i];
    }
    if (name == "--listen") {
      options.listen = ParseAddress("--listen", value);
      have_listen = true;
    } else if (name == "--target") {
      options.target = ParseAddress("--target", value);
      have_target = true;
    } else if (name == "--rtt-ms") {
      options.half_rtt_ns = std::llround(ParseRtt(value) * 1e6 / 2);
      have_rtt = true;
    } else if (name == "--window") {
      options.window = ParseSize(value);
    } else {
      UsageError("unrecognized argument: " + arg);
    }
  }
  if (!have_listen || !have_target || !have_rtt) {
    UsageError("the following arguments are required: --listen, --target, --rtt-ms");
  }
  return options;
}

// Owns a file descriptor; closes it once.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Close();
      fd_ = other.fd_;
      other.fd_ = -1;
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }
  int get() const { return fd_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// One side of a connection: its socket and what edge-triggered epoll last said about it.
struct Endpoint {
  Fd fd;
  bool readable = false;  // true until a read returns EAGAIN
  bool writable = false;  // true until a write returns EAGAIN
};

// One direction of one connection: src -> (delay, window) -> dst. The ring holds the bytes
// read and not yet written, in order; `segments` gives their release times.
class Direction {
 public:
  Direction(Endpoint* src, Endpoint* dst, int64_t half_rtt_ns, size_t window)
      : src_(src), dst_(dst), half_rtt_ns_(half_rtt_ns), window_(window),
        ring_(new char[window]) {}

  // Reads what the window allows, writes what is due, passes on a due EOF; repeats while it
  // makes progress, a few rounds at most so that one busy connection cannot starve the others
  // (NextDeadline then says that work is left). Returns false on a socket error (the
  // connection is over).
  bool Pump(int64_t now) {
    for (int round = 0; round < 8; ++round) {
      Reclaim(now);
      bool progress = false;
      if (!Read(now, &progress) || !Write(now, &progress)) return false;
      if (eof_read_ && !eof_sent_ && segments_.empty() && eof_release_ <= now) {
        shutdown(dst_->fd.get(), SHUT_WR);  // the far side may be gone already: no matter
        eof_sent_ = true;
      }
      if (!progress) break;
      now = NowNs();
    }
    return true;
  }

  // The next time at which Pump has something to do that no socket event will announce, or
  // INT64_MAX.
  int64_t NextDeadline() const {
    if (src_->readable && !eof_read_ && in_flight_ < window_) return 0;  // work left now
    int64_t next = INT64_MAX;
    if (!segments_.empty()) {
      // A due segment waits for EPOLLOUT, not for the clock (unless Pump stopped early).
      if (dst_->writable) next = std::min(next, segments_.front().release);
    } else if (eof_read_ && !eof_sent_) {
      next = std::min(next, eof_release_);
    }
    if (!eof_read_ && in_flight_ >= window_ && !credits_.empty()) {
      next = std::min(next, credits_.front().time);
    }
    return next;
  }

  bool done() const { return eof_sent_; }

 private:
  struct Segment {
    int64_t release;  // when its bytes may be written
    size_t size;      // bytes of it still in the ring
  };
  struct Credit {
    int64_t time;  // when its bytes stop counting as in flight
    size_t size;
  };

  void Reclaim(int64_t now) {
    while (!credits_.empty() && credits_.front().time <= now) {
      in_flight_ -= credits_.front().size;
      credits_.pop_front();
    }
  }

  // Fills up to two iovecs with `size` bytes of the ring starting at `offset`.
  int RingSpan(size_t offset, size_t size, iovec* iov) {
    size_t first = std::min(size, window_ - offset);
    iov[0] = {ring_.get() + offset, first};
    if (first == size) return 1;
    iov[1] = {ring_.get(), size - first};
    return 2;
  }

  bool Read(int64_t now, bool* progress) {
    while (src_->readable && !eof_read_ && in_flight_ < window_) {
      // Bytes still in the ring are in flight too, so the free part of the ring is at least
      // the room the window leaves.
      size_t want = std::min(window_ - in_flight_, kReadMax);
      iovec iov[2];
      int count = RingSpan((head_ + queued_) % window_, want, iov);
      ssize_t n = readv(src_->fd.get(), iov, count);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          src_->readable = false;
          return true;
        }
        return false;
      }
      *progress = true;
      int64_t release = now + half_rtt_ns_;
      if (n == 0) {
        eof_read_ = true;
        eof_release_ = release;
        return true;
      }
      size_t got = static_cast<size_t>(n);
      queued_ += got;
      in_flight_ += got;
      if (!segments_.empty() && release - segments_.back().release < kMergeNs) {
        segments_.back().release = release;
        segments_.back().size += got;
      } else {
        segments_.push_back({release, got});
      }
    }
    return true;
  }

  bool Write(int64_t now, bool* progress) {
    while (dst_->writable && !segments_.empty() && segments_.front().release <= now) {
      size_t due = 0;
      for (const Segment& s : segments_) {
        if (s.release > now) break;
        due += s.size;
      }
      iovec iov[2];
      int count = RingSpan(head_, due, iov);
      ssize_t n = writev(dst_->fd.get(), iov, count);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          dst_->writable = false;
          return true;
        }
        return false;
      }
      *progress = true;
      size_t left = static_cast<size_t>(n);
      head_ = (head_ + left) % window_;
      queued_ -= left;
      int64_t written = NowNs();
      while (left > 0) {
        Segment& s = segments_.front();
        size_t take = std::min(left, s.size);
        s.size -= take;
        left -= take;
        // Acknowledged a full RTT after the read, or half of one after a late write.
        AddCredit(std::max(s.release, written) + half_rtt_ns_, take);
        if (s.size == 0) segments_.pop_front();
      }
    }
    return true;
  }

  void AddCredit(int64_t time, size_t size) {
    if (!credits_.empty() && time - credits_.back().time < kMergeNs) {
      credits_.back().time = std::max(credits_.back().time, time);
      credits_.back().size += size;
    } else {
      credits_.push_back({time, size});
    }
  }

  Endpoint* src_;
  Endpoint* dst_;
  const int64_t half_rtt_ns_;
  const size_t window_;
  std::unique_ptr<char[]> ring_;
  size_t head_ = 0;    // ring offset of the oldest byte not yet written
  size_t queued_ = 0;  // bytes in the ring
  size_t in_flight_ = 0;
  std::deque<Segment> segments_;
  std::deque<Credit> credits_;
  bool eof_read_ = false;
  bool eof_sent_ = false;
  int64_t eof_release_ = 0;
};

// Both directions of one accepted connection. While the connection to the target is being
// made, nothing is read from the client (its bytes wait in its socket, as they would wait for
// a blocking connect).
struct Connection {
  Connection(Fd client_fd, int64_t half_rtt_ns, size_t window)
      : up(&client, &server, half_rtt_ns, window), down(&server, &client, half_rtt_ns, window) {
    client.fd = std::move(client_fd);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  Endpoint client;
  Endpoint server;
  Direction up;
  Direction down;
  size_t next_address = 0;  // the target address to try after the one being connected
  bool connected = false;
  bool failed = false;
};

class Proxy {
 public:
  explicit Proxy(const Options& options) : options_(options) {}

  void Run() {
    // Blocked before the "listening" line, so that a SIGTERM right after it is already quiet.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    if (sigprocmask(SIG_BLOCK, &signals, nullptr) != 0) Fatal("sigprocmask");
    signals_ = Fd(signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC));
    if (signals_.get() < 0) Fatal("signalfd");
    epoll_ = Fd(epoll_create1(EPOLL_CLOEXEC));
    if (epoll_.get() < 0) Fatal("epoll_create1");
    timer_ = Fd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (timer_.get() < 0) Fatal("timerfd_create");
    ResolveTarget();
    Listen();
    Watch(listener_.get(), EPOLLIN, kListenerTag);
    Watch(timer_.get(), EPOLLIN, kTimerTag);
    Watch(signals_.get(), EPOLLIN, kSignalTag);

    std::vector<epoll_event> events(64);
    for (;;) {
      int n = epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        Fatal("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        const epoll_event& e = events[i];
        if (e.data.u64 > kSignalTag) {
          OnSocketEvent(static_cast<Endpoint*>(e.data.ptr), e.events);
        } else if (e.data.u64 == kListenerTag) {
          Accept();
        } else if (e.data.u64 == kSignalTag) {
          return;  // SIGTERM or SIGINT: a quiet exit
        } else {
          uint64_t expirations;
          while (read(timer_.get(), &expirations, sizeof expirations) > 0) {
          }
        }
      }
      PumpAll();
    }
  }

 private:
  static constexpr uint64_t kListenerTag = 1;
  static constexpr uint64_t kTimerTag = 2;
  static constexpr uint64_t kSignalTag = 3;

  // Events of the listener, timer and signals carry a small tag; a socket's carry its
  // Endpoint's address.
  void Watch(int fd, uint32_t events, uint64_t tag) {
    epoll_event e{};
    e.events = events;
    e.data.u64 = tag;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e) != 0) Fatal("epoll_ctl");
  }
  void Watch(int fd, Endpoint* endpoint) {
    epoll_event e{};
    e.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    e.data.ptr = endpoint;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e) != 0) Fatal("epoll_ctl");
  }

  void ResolveTarget() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* result = nullptr;
    int rc = getaddrinfo(options_.target.host.c_str(), options_.target.port.c_str(), &hints,
                         &result);
    if (rc != 0) {
      std::fprintf(stderr, "wan_proxy: cannot resolve %s: %s\n", options_.target.host.c_str(),
                   gai_strerror(rc));
      std::exit(1);
    }
    for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
      sockaddr_storage storage{};
      std::memcpy(&storage, a->ai_addr, a->ai_addrlen);
      targets_.push_back({storage, a->ai_addrlen});
    }
    freeaddrinfo(result);
  }

  void Listen() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* result = nullptr;
    int rc = getaddrinfo(options_.listen.host.c_str(), options_.listen.port.c_str(), &hints,
                         &result);
    if (rc != 0) {
      std::fprintf(stderr, "wan_proxy: cannot resolve %s: %s\n", options_.listen.host.c_str(),
                   gai_strerror(rc));
      std::exit(1);
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(result, freeaddrinfo);
    listener_ = Fd(socket(result->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (listener_.get() < 0) Fatal("socket");
    int one = 1;
    setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    std::string where = options_.listen.host + ":" + options_.listen.port;
    if (bind(listener_.get(), result->ai_addr, result->ai_addrlen) != 0) Fatal("bind " + where);
    if (listen(listener_.get(), SOMAXCONN) != 0) Fatal("listen " + where);
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&bound), &length) != 0 ||
        getnameinfo(reinterpret_cast<sockaddr*>(&bound), length, host, sizeof host, port,
                    sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
      Fatal("getsockname");
    }
    std::printf("listening on %s:%s\n", host, port);
    std::fflush(stdout);
  }

  void Accept() {
    for (;;) {
      int fd = accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          std::fprintf(stderr, "wan_proxy: accept: %s\n", std::strerror(errno));
        }
        return;
      }
      connections_.emplace_back(Fd(fd), options_.half_rtt_ns, options_.window);
      Connection& c = connections_.back();
      Watch(fd, &c.client);
      ConnectNext(&c, 0);
    }
  }

  // Starts a connection to the next target address; when none is left, says why the last
  // failed (`error`) and drops the client.
  void ConnectNext(Connection* c, int error) {
    while (c->next_address < targets_.size()) {
      const Target& t = targets_[c->next_address++];
      c->server.fd = Fd(socket(t.address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                               0));
      if (c->server.fd.get() < 0) {
        error = errno;
        continue;
      }
      if (connect(c->server.fd.get(), reinterpret_cast<const sockaddr*>(&t.address),
                  t.length) != 0 &&
          errno != EINPROGRESS) {
        error = errno;
        c->server.fd.Close();
        continue;
      }
      // EPOLLOUT (or an error) announces the end of the connect.
      Watch(c->server.fd.get(), &c->server);
      return;
    }
    std::fprintf(stderr, "wan_proxy: cannot reach %s:%s: %s\n", options_.target.host.c_str(),
                 options_.target.port.c_str(), std::strerror(error));
    std::fflush(stderr);
    c->failed = true;
  }

  void OnSocketEvent(Endpoint* endpoint, uint32_t events) {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) endpoint->readable = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) endpoint->writable = true;
  }

  // Finishes connects that have ended, moves bytes, drops connections that are over, and
  // sets the timer for the earliest deadline left.
  void PumpAll() {
    int64_t now = NowNs();
    int64_t next = INT64_MAX;
    for (auto it = connections_.begin(); it != connections_.end();) {
      Connection& c = *it;
      if (!c.failed && !c.connected && c.server.writable) FinishConnect(&c);
      if (!c.failed && c.connected) {
        c.failed = !c.up.Pump(now) || !c.down.Pump(now);
      }
      if (c.failed || (c.up.done() && c.down.done())) {
        if (c.failed && c.connected) {
          // A reset or error on either side ends the whole connection.
          shutdown(c.client.fd.get(), SHUT_RDWR);
          shutdown(c.server.fd.get(), SHUT_RDWR);
        }
        it = connections_.erase(it);  // closing the sockets also drops them from epoll
        continue;
      }
      if (c.connected) next = std::min({next, c.up.NextDeadline(), c.down.NextDeadline()});
      ++it;
    }
    itimerspec spec{};
    if (next != INT64_MAX) {
      next = std::max<int64_t>(next, 1);  // an all-zero value would disarm the timer
      spec.it_value.tv_sec = next / 1'000'000'000;
      spec.it_value.tv_nsec = next % 1'000'000'000;
    }
    if (timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) {
      Fatal("timerfd_settime");
    }
  }

  void FinishConnect(Connection* c) {
    int error = 0;
    socklen_t length = sizeof error;
    if (getsockopt(c->server.fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
      error = errno;
    }
    if (error != 0) {
      c->server = Endpoint();
      ConnectNext(c, error);
      return;
    }
    c->connected = true;
    int one = 1;
    setsockopt(c->client.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->server.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }

  struct Target {
    sockaddr_storage address;
    socklen_t length;
  };

  const Options options_;
  std::vector<Target> targets_;
  Fd listener_;
  Fd epoll_;
  Fd timer_;
  Fd signals_;
  // A list: endpoints are registered with epoll by address, so connections never move.
  std::list<Connection> connections_;
};

}  // namespace

int main(int argc, char** argv) {
  Options options = ParseOptions(argc, argv);
  signal(SIGPIPE, SIG_IGN);  // a write to a closed peer fails with EPIPE instead
  Proxy(options).Run();
  return 0;
}

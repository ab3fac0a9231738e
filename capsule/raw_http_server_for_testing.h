// A loopback TCP server for tests that plays a hostile HTTP endpoint (capsule/s3_hostile_test.cc):
// it hands each connection, with the request head read, to a function of the test's.
#ifndef BUNKER_CAPSULE_RAW_HTTP_SERVER_FOR_TESTING_H_
#define BUNKER_CAPSULE_RAW_HTTP_SERVER_FOR_TESTING_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace bunker::capsule::s3::testing {

// A loopback server that hands each connection, with the request head read, to `serve` on a
// thread of its own (so a connection it holds open does not block the next one). `serve` may
// write slowly or never; it should return once `stopping()` is true.
class RawServer {
 public:
  using Serve = std::function<void(int fd, const std::string& request, RawServer& self)>;
  explicit RawServer(Serve serve) : serve_(std::move(serve)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
      return;
    }
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) continue;
        ++connections_;
        workers_.emplace_back([this, c] {
          std::string request;
          char buf[65536];
          while (request.find("\r\n\r\n") == std::string::npos && !stop_) {
            const ssize_t n = ::read(c, buf, sizeof(buf));
            if (n <= 0) break;
            request.append(buf, static_cast<size_t>(n));
          }
          serve_(c, request, *this);
          ::close(c);
        });
      }
    });
  }
  ~RawServer() {
    stop_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (std::thread& t : workers_) t.join();
    ::close(fd_);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  bool stopping() const { return stop_; }
  int connections() const { return connections_; }

  // Writes all of `data`; false once the peer is gone (or the server stops).
  bool Send(int c, const std::string& data) {
    size_t done = 0;
    while (done < data.size() && !stop_) {
      const ssize_t n = ::send(c, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return done == data.size();
  }
  // Holds the connection open, sending nothing, until the peer closes or the server stops.
  void Hold(int c) {
    while (!stop_) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) {
        char b[4096];
        if (::recv(c, b, sizeof(b), 0) <= 0) return;
      }
    }
  }

 private:
  Serve serve_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread acceptor_;
  std::vector<std::thread> workers_;  // only the acceptor thread adds; joined after it stops
};

}  // namespace bunker::capsule::s3::testing

#endif  // BUNKER_CAPSULE_RAW_HTTP_SERVER_FOR_TESTING_H_

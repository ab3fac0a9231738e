// Test-only: an HTTP server on loopback that plays an S3 endpoint badly on purpose, for the S3
// client's and store's unit tests (the real server is tests/tools/swift_s3.sh).
#ifndef BUNKER_CAPSULE_S3_TEST_SERVER_H_
#define BUNKER_CAPSULE_S3_TEST_SERVER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "capsule/s3_client.h"
#include "crypto/secret.h"
#include "gtest/gtest.h"

namespace bunker::capsule::s3 {

// Answers each request (one per connection) with what `handler` returns for its head (request
// line and headers), then closes the connection.
class FakeServer {
 public:
  explicit FakeServer(std::string reply)
      : FakeServer([reply = std::move(reply)](const std::string&) { return reply; }) {}
  explicit FakeServer(std::function<std::string(const std::string& request)> handler)
      : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 8) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) ::close(c);
          return;
        }
        std::string request;
        char buf[4096];
        while (request.find("\r\n\r\n") == std::string::npos) {
          const ssize_t n = ::read(c, buf, sizeof(buf));
          if (n <= 0) break;
          request.append(buf, static_cast<size_t>(n));
        }
        const std::string reply = handler_(request);
        {
          std::lock_guard<std::mutex> lock(mu_);
          last_request_ = request;
        }
        size_t done = 0;
        while (done < reply.size()) {
          const ssize_t n = ::write(c, reply.data() + done, reply.size() - done);
          if (n <= 0) break;
          done += static_cast<size_t>(n);
        }
        ::close(c);
      }
    });
  }
  ~FakeServer() {
    stop_ = true;
    // Wake accept() with one last connection.
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port_);
    (void)::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::close(c);
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The last request's head.
  std::string last_request() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_request_;
  }

 private:
  std::function<std::string(const std::string&)> handler_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::string last_request_;
  std::thread thread_;
};

// A client configuration for a FakeServer: one attempt per request (no retries).
inline Config FakeConfig(const std::string& endpoint) {
  Config c;
  c.endpoint = endpoint;
  c.access_key_id = "AKID";
  c.secret_access_key = crypto::SecretBytes::CopyOf(std::string_view("secret"));
  c.max_attempts = 1;
  return c;
}

}  // namespace bunker::capsule::s3

#endif  // BUNKER_CAPSULE_S3_TEST_SERVER_H_

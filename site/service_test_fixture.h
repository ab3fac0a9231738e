// A verifier service over a real Unix socket in a scratch folder, and a client that can send it
// anything: for service_test.cc and service_attack_test.cc.
#ifndef BUNKER_SITE_SERVICE_TEST_FIXTURE_H_
#define BUNKER_SITE_SERVICE_TEST_FIXTURE_H_

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "site/client.h"
#include "site/protocol.h"
#include "site/service.h"
#include "verifier/audit_log.h"

namespace bunker::site::service_testing {

using capsule::testing::MakeTempDir;
using capsule::testing::WriteFile;

struct Fixture {
  capsule::testing::Keys keys;  // alice is the site, bob and mallory are requesters
  std::string root = MakeTempDir();
  std::string capsule_path = root + "/d.capsule";
  SiteConfig site;
  // The service's log lines.
  struct Log {
    std::mutex mu;
    std::vector<std::string> lines;
  };
  std::shared_ptr<Log> log = std::make_shared<Log>();
  std::unique_ptr<VerifierService> service;

  // `store`: the site file's "store"; `open_store`: the service's reader of store objects;
  // `request_timeout`: seconds a client has to send its request.
  explicit Fixture(const std::string& store = "",
                   std::function<absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>>(
                       const capsule::s3::Location&, std::function<bool()>)>
                       open_store = nullptr,
                   int request_timeout = 30) {
    ::mkdir((root + "/data").c_str(), 0755);
    WriteFile(root + "/data/a.csv", "row 1\n");
    const std::vector<uint8_t> c = capsule::testing::SealDirectory(keys, root + "/data");
    WriteFile(capsule_path, std::string(c.begin(), c.end()));
    ::mkdir((root + "/landing").c_str(), 0755);
    site.site = "site-b";
    site.state = root + "/state";
    site.destinations = {root + "/landing"};
    site.socket = root + "/v.sock";
    site.store = store;
    ServiceOptions o;
    o.open_store_object = std::move(open_store);
    o.site = &site;
    o.identity = &keys.alice;
    o.trusted = {keys.issuer.public_identity()};
    o.request_timeout_seconds = request_timeout;
    o.log = [log = log](const std::string& line) {
      std::lock_guard<std::mutex> lock(log->mu);
      log->lines.push_back(line);
    };
    absl::StatusOr<std::unique_ptr<VerifierService>> s = VerifierService::Start(std::move(o));
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) service = std::move(*s);
  }

  capsule::Fd Connect() {
    capsule::Fd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", site.socket.c_str());
    EXPECT_EQ(::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return sock;
  }

  // Sends `wire` with exactly the descriptors `fds` (unsigned, no requester key) and returns
  // the final status.
  absl::Status AskWith(const WireRequest& wire, const std::vector<int>& fds) {
    capsule::Fd sock = Connect();
    absl::StatusOr<Hello> hello = ReceiveHello(sock.get());
    if (!hello.ok()) return hello.status();
    SignedRequest req;
    req.body = EncodeRequestBody(wire);
    absl::Status sent = SendRequest(sock.get(), req, fds);
    if (!sent.ok()) return sent;
    return FinalStatus(sock.get());
  }

  // Reads replies until the final one.
  static absl::Status FinalStatus(int sock) {
    while (true) {
      absl::StatusOr<Reply> r = ReceiveReply(sock);
      if (!r.ok()) return r.status();
      if (r->result) return r->result->status;
    }
  }

  // Sends `wire` signed by `signer` but claiming `claimed`'s key, over a fresh connection.
  absl::Status Ask(const WireRequest& wire, const crypto::Identity* signer,
                   const crypto::PublicIdentity* claimed, bool stale_challenge = false) {
    capsule::Fd sock = Connect();
    absl::StatusOr<Hello> hello = ReceiveHello(sock.get());
    if (!hello.ok()) return hello.status();
    SignedRequest req;
    req.body = EncodeRequestBody(wire);
    if (claimed != nullptr) req.requester_pem = claimed->ToPem();
    if (signer != nullptr) {
      std::vector<uint8_t> challenge = hello->challenge;
      if (stale_challenge) challenge[0] ^= 1;
      const crypto::Ed25519Signature sig = signer->Sign(SignedMessage(challenge, req.body));
      req.signature.assign(sig.begin(), sig.end());
    }
    capsule::Fd file(::open(capsule_path.c_str(), O_RDONLY | O_CLOEXEC));
    std::vector<int> fds = {file.get()};
    for (int i = 1; i < wire.fd_count; ++i) fds.push_back(file.get());
    if (!wire.capsule_url.empty()) fds.resize(wire.fd_count);  // no capsule descriptor
    absl::Status sent = SendRequest(sock.get(), req, fds);
    if (!sent.ok()) return sent;
    return FinalStatus(sock.get());
  }

  // The number of records in the site's audit log (0 when there is none).
  uint64_t AuditRecords() const {
    uint64_t n = 0;
    absl::Status s = verifier::ForEachAuditRecord(
        site.state + "/audit.log", [&n](uint64_t, const verifier::AuditRecord&) {
          ++n;
          return true;
        });
    return s.ok() ? n : 0;
  }
};

inline WireRequest OpenTo(const std::string& dest) {
  WireRequest w;
  w.command = Command::kOpen;
  w.destination = dest;
  w.fd_count = 1;
  return w;
}

}  // namespace bunker::site::service_testing

#endif  // BUNKER_SITE_SERVICE_TEST_FIXTURE_H_

// A hostile client of the verifier service (spec/VERIFIER.md "Threat model", "Socket protocol"):
// descriptors that are not what the request says, a request sent a byte at a time, an output
// nobody reads, names made to break the daemon's log. Each attack ends refused or bounded, with
// nothing released, and the service serving the next client. (Real users and a real daemon:
// tests/cli/verifier_scenarios.sh.)
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "site/live_mounts.h"
#include "site/protocol.h"
#include "site/service_test_fixture.h"

namespace bunker::site {
namespace {

using service_testing::Fixture;
using service_testing::OpenTo;

WireRequest CatOf(const std::string& path) {
  WireRequest w;
  w.command = Command::kCat;
  w.path = path;
  w.fd_count = 2;
  return w;
}

// An O_PATH descriptor (or a read-only one) as the output of `cat`: the daemon must not reopen
// it with its own rights and write through it. Before: a FIFO passed as O_PATH was reopened
// through /proc/self/fd for writing and received the file.
TEST(VerifierServiceAttackTest, AnOutputNotOpenForWritingIsRefused) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  const std::string fifo = f.root + "/out.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  capsule::Fd reader(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(reader.valid());
  capsule::Fd path_only(::open(fifo.c_str(), O_PATH | O_CLOEXEC));
  ASSERT_TRUE(path_only.valid());
  const std::string plain = f.root + "/out.txt";
  capsule::testing::WriteFile(plain, "");
  capsule::Fd read_only(::open(plain.c_str(), O_RDONLY | O_CLOEXEC));
  capsule::Fd file(::open(f.capsule_path.c_str(), O_RDONLY | O_CLOEXEC));
  for (int out : {path_only.get(), read_only.get()}) {
    absl::Status s = f.AskWith(CatOf("a.csv"), {file.get(), out});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("output descriptor is not open for writing"), std::string::npos)
        << s;
  }
  char buf[64];
  EXPECT_LE(::read(reader.get(), buf, sizeof buf), 0) << "bytes reached the FIFO";
  EXPECT_EQ(capsule::testing::ReadFile(plain), "");
  EXPECT_EQ(f.AuditRecords(), 0u) << "refused before anything was decided";
  // A FIFO open for writing, or a device, could hold a daemon thread for as long as its reader
  // likes (the daemon cannot reopen a client's FIFO non-blocking): refused, the client relays
  // those (site/client.cc). Before: a FIFO whose reader never read held a thread and Stop.
  capsule::Fd writer(::open(fifo.c_str(), O_WRONLY | O_CLOEXEC));
  capsule::Fd device(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  for (int out : {writer.get(), device.get()}) {
    absl::Status s = f.AskWith(CatOf("a.csv"), {file.get(), out});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("regular file or a socket"), std::string::npos) << s;
  }
  EXPECT_LE(::read(reader.get(), buf, sizeof buf), 0) << "bytes reached the FIFO";
  EXPECT_EQ(f.AuditRecords(), 0u) << "refused before anything was decided";
  // A regular file open for writing is served.
  capsule::Fd out_file(::open(plain.c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(f.AskWith(CatOf("a.csv"), {file.get(), out_file.get()}).ok());
  EXPECT_EQ(capsule::testing::ReadFile(plain), "row 1\n");
}

// The capsule descriptor must be a regular file open for reading: a folder, a FIFO, an O_PATH
// or a write-only descriptor is refused before anything is read or decided.
TEST(VerifierServiceAttackTest, ACapsuleDescriptorOfTheWrongKindIsRefused) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  const std::string fifo = f.root + "/in.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  capsule::Fd fifo_fd(::open(fifo.c_str(), O_RDWR | O_CLOEXEC));
  capsule::Fd dir(::open(f.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  capsule::Fd path_only(::open(f.capsule_path.c_str(), O_PATH | O_CLOEXEC));
  capsule::Fd write_only(::open(f.capsule_path.c_str(), O_WRONLY | O_CLOEXEC));
  for (int fd : {fifo_fd.get(), dir.get(), path_only.get(), write_only.get()}) {
    absl::Status s = f.AskWith(OpenTo(f.root + "/landing/x"), {fd});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
  EXPECT_FALSE(capsule::testing::Exists(f.root + "/landing/x"));
  EXPECT_EQ(f.AuditRecords(), 0u);
  EXPECT_TRUE(f.Ask(OpenTo(f.root + "/landing/after"), nullptr, nullptr).ok());
}

// A client that sends its request a few bytes at a time, each well within the socket's
// timeout, is cut off when the request's whole time is up. Before: each byte restarted the
// wait, so one such client held its request slot for as long as it liked.
TEST(VerifierServiceAttackTest, ARequestDrippedByteByByteIsCutOffAtItsDeadline) {
  Fixture f("", nullptr, /*request_timeout=*/1);
  ASSERT_NE(f.service, nullptr);
  capsule::Fd sock = f.Connect();
  ASSERT_TRUE(ReceiveHello(sock.get()).ok());
  const uint8_t header[4] = {0x00, 0x10, 0x00, 0x00};  // 4096 bytes announced
  ASSERT_EQ(::send(sock.get(), header, sizeof header, MSG_NOSIGNAL), 4);
  bool answered = false;
  // 8 bytes every 100 ms: 400 rounds would take 40 s to finish the frame.
  for (int i = 0; i < 400 && !answered; ++i) {
    struct pollfd p {sock.get(), POLLIN, 0};
    answered = ::poll(&p, 1, 100) > 0;
    if (!answered) (void)::send(sock.get(), "dripdrip", 8, MSG_NOSIGNAL);
  }
  ASSERT_TRUE(answered) << "the service waited on a dripping client for 40 s";
  absl::StatusOr<Reply> r = ReceiveReply(sock.get());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->result.has_value());
  EXPECT_EQ(r->result->status.code(), absl::StatusCode::kUnavailable) << r->result->status;
  EXPECT_TRUE(f.Ask(OpenTo(f.root + "/landing/after"), nullptr, nullptr).ok());
}

// `cat` into a socket whose reader never reads: the service still stops (the write does not
// block without end). Before: a blocking write() held the request's thread, and with it Stop.
TEST(VerifierServiceAttackTest, AnUnreadSocketOutputDoesNotHoldTheService) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  const std::string data = f.root + "/big";
  ::mkdir(data.c_str(), 0755);
  capsule::testing::WriteFile(data + "/big.bin", std::string(8 << 20, 'x'));
  const std::vector<uint8_t> c = capsule::testing::SealDirectory(f.keys, data);
  const std::string big = f.root + "/big.capsule";
  capsule::testing::WriteFile(big, std::string(c.begin(), c.end()));
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  capsule::Fd ours(pair[0]), theirs(pair[1]);
  capsule::Fd file(::open(big.c_str(), O_RDONLY | O_CLOEXEC));
  capsule::Fd sock = f.Connect();
  ASSERT_TRUE(ReceiveHello(sock.get()).ok());
  SignedRequest req;
  req.body = EncodeRequestBody(CatOf("big.bin"));
  ASSERT_TRUE(SendRequest(sock.get(), req, {file.get(), theirs.get()}).ok());
  theirs.Reset();
  // Until the output is full: the service is now waiting on a reader who never reads.
  int queued = 0, last = -1;
  for (int i = 0; i < 200 && (queued == 0 || queued != last); ++i) {
    last = queued;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_EQ(::ioctl(ours.get(), FIONREAD, &queued), 0);
  }
  ASSERT_GT(queued, 0) << "nothing was written";
  f.service.reset();  // returns: the cat is cancelled
  absl::Status s = Fixture::FinalStatus(sock.get());
  EXPECT_FALSE(s.ok());
}

// A mount passes /dev/fuse and fusermount3's socket: each must be a description open for
// reading and writing, not an O_PATH one that merely names the device or a socket file.
TEST(VerifierServiceAttackTest, AMountWithPathOnlyDescriptorsIsRefused) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  capsule::Fd fuse_path(::open("/dev/fuse", O_PATH | O_CLOEXEC));
  if (!fuse_path.valid()) GTEST_SKIP() << "needs /dev/fuse";
  capsule::Fd fuse(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  capsule::Fd comm(pair[0]), other(pair[1]);
  // A named socket file, reachable as O_PATH only.
  const std::string named = f.root + "/named.sock";
  capsule::Fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", named.c_str());
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  capsule::Fd comm_path(::open(named.c_str(), O_PATH | O_CLOEXEC));
  ASSERT_TRUE(comm_path.valid());
  capsule::Fd file(::open(f.capsule_path.c_str(), O_RDONLY | O_CLOEXEC));
  WireRequest w;
  w.command = Command::kMount;
  w.mountpoint = f.root + "/mnt";
  w.fd_count = 3;
  std::vector<std::vector<int>> bad = {{file.get(), fuse_path.get(), comm.get()}};
  if (fuse.valid()) bad.push_back({file.get(), fuse.get(), comm_path.get()});
  for (const std::vector<int>& fds : bad) {
    absl::Status s = f.AskWith(w, fds);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
  EXPECT_EQ(f.AuditRecords(), 0u) << "refused before anything was decided";
}

// One uid's mounts share one decrypted-chunk budget: a second mount gets what the first left
// (possibly nothing: it still serves, decrypting as it reads), another uid its own budget.
// Before: every mount had the whole budget, so 16 mounts held 16 times the bound.
TEST(VerifierServiceAttackTest, OneUidsMountsShareOneCacheBudget) {
  LiveMounts mounts(256);
  EXPECT_EQ(mounts.ReserveCache(1000, 0), 256u);
  EXPECT_EQ(mounts.ReserveCache(1000, 0), 0u);
  EXPECT_EQ(mounts.ReserveCache(1000, 8), 0u);
  EXPECT_EQ(mounts.ReserveCache(1001, 100), 100u);
  EXPECT_EQ(mounts.ReserveCache(1001, 0), 156u);
  mounts.ReleaseCache(1000, 256);
  EXPECT_EQ(mounts.ReserveCache(1000, 300), 256u);
}

// Many uids' mounts share one daemon-wide bound too (by default 4 uids' worth): each uid gets
// at most what the others leave of it. Before: 100 uids could hold 100 times the bound.
TEST(VerifierServiceAttackTest, AllUidsMountsShareOneTotalCacheBudget) {
  LiveMounts mounts(256);
  for (uid_t uid = 2000; uid < 2004; ++uid) EXPECT_EQ(mounts.ReserveCache(uid, 0), 256u);
  EXPECT_EQ(mounts.ReserveCache(2004, 0), 0u);
  EXPECT_EQ(mounts.ReserveCache(2005, 1), 0u);
  mounts.ReleaseCache(2001, 100);
  EXPECT_EQ(mounts.ReserveCache(2005, 0), 100u);
  EXPECT_EQ(mounts.ReserveCache(2001, 0), 0u) << "2005 took what 2001 gave back";
  // Giving back more than was granted, or for a uid holding nothing, frees nobody else's share.
  mounts.ReleaseCache(2009, 1000);
  mounts.ReleaseCache(2005, 1000);
  EXPECT_EQ(mounts.ReserveCache(2006, 0), 100u);
  EXPECT_EQ(mounts.ReserveCache(2007, 0), 0u);

  LiveMounts wide(256, 300);
  EXPECT_EQ(wide.ReserveCache(1, 0), 256u);
  EXPECT_EQ(wide.ReserveCache(2, 0), 44u);
}

// The live-mount limit per uid counts the requests still being decided: 4 requests at once,
// when the uid holds 15 places (live mounts and mount requests count alike; a live mount needs
// a kernel mount, so the 15 are requests here), leave exactly one of them a place. Before: each
// request checked the live mounts only (CountOf) and was counted when its mount was served
// (Add), so all 4 passed the check and the uid held 19 mounts.
TEST(VerifierServiceAttackTest, ConcurrentMountRequestsCannotPassTheLimitTogether) {
  constexpr size_t kMax = 16;
  constexpr uid_t kUid = 1000;
  LiveMounts mounts(256);
  std::vector<LiveMounts::Slot> held;
  for (size_t i = 0; i + 1 < kMax; ++i) {
    std::optional<LiveMounts::Slot> s = mounts.ReserveSlot(kUid, kMax);
    ASSERT_TRUE(s.has_value()) << i;
    held.push_back(std::move(*s));
  }
  std::atomic<bool> go{false};
  std::vector<std::optional<LiveMounts::Slot>> got(4);
  std::vector<std::thread> threads;
  for (auto& g : got) {
    threads.emplace_back([&mounts, &go, &g] {
      while (!go.load()) std::this_thread::yield();
      std::optional<LiveMounts::Slot> s = mounts.ReserveSlot(kUid, kMax);
      if (s.has_value()) g.emplace(std::move(*s));
    });
  }
  go.store(true);
  for (std::thread& t : threads) t.join();
  size_t granted = 0;
  for (const auto& g : got) granted += g.has_value() ? 1 : 0;
  EXPECT_EQ(granted, 1u);
  EXPECT_FALSE(mounts.ReserveSlot(kUid, kMax).has_value());
  EXPECT_TRUE(mounts.ReserveSlot(kUid + 1, kMax).has_value()) << "another uid has its own";

  // A request that ends without a mount (refused, failed) gives its place back.
  got.clear();
  std::optional<LiveMounts::Slot> again = mounts.ReserveSlot(kUid, kMax);
  EXPECT_TRUE(again.has_value());
  EXPECT_FALSE(mounts.ReserveSlot(kUid, kMax).has_value());
  held.pop_back();
  std::optional<LiveMounts::Slot> last = mounts.ReserveSlot(kUid, kMax);
  EXPECT_TRUE(last.has_value());
  EXPECT_FALSE(mounts.ReserveSlot(kUid, kMax).has_value());
}

// `cat` whose output is the client's own end of the connection: the service would write into
// its own receive queue and, holding that end, never see the client go. Anything arriving after
// the request cancels it. Before: the request waited for room without end, holding its slot.
TEST(VerifierServiceAttackTest, AnOutputThatIsTheConnectionItselfIsCancelled) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  const std::string data = f.root + "/big";
  ::mkdir(data.c_str(), 0755);
  capsule::testing::WriteFile(data + "/big.bin", std::string(8 << 20, 'x'));
  const std::vector<uint8_t> c = capsule::testing::SealDirectory(f.keys, data);
  const std::string big = f.root + "/big.capsule";
  capsule::testing::WriteFile(big, std::string(c.begin(), c.end()));
  capsule::Fd file(::open(big.c_str(), O_RDONLY | O_CLOEXEC));
  capsule::Fd sock = f.Connect();
  struct timeval tv {};
  tv.tv_sec = 20;  // a bound for the test only: the answer comes at once
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ASSERT_TRUE(ReceiveHello(sock.get()).ok());
  SignedRequest req;
  req.body = EncodeRequestBody(CatOf("big.bin"));
  ASSERT_TRUE(SendRequest(sock.get(), req, {file.get(), sock.get()}).ok());
  absl::Status s;
  while (true) {
    absl::StatusOr<Reply> r = ReceiveReply(sock.get());
    if (!r.ok()) {
      // The output's bytes fill the queue the replies come through; the service's last word
      // may be lost among them, but it must have let go: the connection ends.
      s = r.status();
      EXPECT_EQ(s.message().find("timed out"), std::string::npos) << s;
      break;
    }
    if (r->result) {
      s = r->result->status;
      EXPECT_FALSE(s.ok());
      break;
    }
  }
  EXPECT_TRUE(f.Ask(OpenTo(f.root + "/landing/after"), nullptr, nullptr).ok());
}

// Texts too large for one audit record (a purpose of 100 kB, 20000 selection patterns): the
// request is refused with one line, nothing is released or recorded, the log stays whole.
// (Held before this work too: a regression test.)
TEST(VerifierServiceAttackTest, OversizedRequestTextsAreRefusedWholly) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  ASSERT_TRUE(f.Ask(OpenTo(f.root + "/landing/first"), nullptr, nullptr).ok());
  const uint64_t before = f.AuditRecords();
  capsule::Fd file(::open(f.capsule_path.c_str(), O_RDONLY | O_CLOEXEC));
  WireRequest w = OpenTo(f.root + "/landing/big-purpose");
  w.purpose = std::string(100000, 'p');
  absl::Status s = f.AskWith(w, {file.get()});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  w = OpenTo(f.root + "/landing/many-globs");
  w.only.assign(20000, "a.csv");
  s = f.AskWith(w, {file.get()});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_FALSE(capsule::testing::Exists(f.root + "/landing/big-purpose"));
  EXPECT_FALSE(capsule::testing::Exists(f.root + "/landing/many-globs"));
  EXPECT_EQ(f.AuditRecords(), before);
  EXPECT_TRUE(verifier::VerifyAuditLog(f.site.state + "/audit.log",
                                       f.keys.alice.public_identity(), std::nullopt)
                  .ok());
  EXPECT_TRUE(f.Ask(OpenTo(f.root + "/landing/after"), nullptr, nullptr).ok());
}

// A client's text (a URL, a path) never splits the daemon's log line: control characters in
// it are escaped. Before: a newline in a requested URL started a forged log line.
TEST(VerifierServiceAttackTest, ClientTextCannotForgeLogLines) {
  Fixture f("s3://site-bucket/site-b");
  ASSERT_NE(f.service, nullptr);
  WireRequest w = OpenTo(f.root + "/landing/x");
  w.fd_count = 0;
  w.capsule_url = "s3://other-bucket/x\nrequest uid=0 pid=1 -> ok\r";
  EXPECT_FALSE(f.AskWith(w, {}).ok());
  w = OpenTo(f.root + "/elsewhere\nrequest uid=0 -> ok");
  w.fd_count = 1;
  capsule::Fd file(::open(f.capsule_path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(f.AskWith(w, {file.get()}).code(), absl::StatusCode::kPermissionDenied);
  f.service.reset();
  std::lock_guard<std::mutex> lock(f.log->mu);
  ASSERT_GE(f.log->lines.size(), 2u);
  for (const std::string& line : f.log->lines) {
    EXPECT_EQ(line.find_first_of("\n\r"), std::string::npos) << line;
  }
}

}  // namespace
}  // namespace bunker::site

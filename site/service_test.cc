// The verifier service over a real Unix socket, in process: who may claim a requester key, and
// what a malformed request gets. (Real users and a real daemon: tests/cli/verifier_scenarios.sh.)
#include "site/service.h"

#include <fcntl.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "site/gate_test_fixture.h"
#include "site/protocol.h"
#include "site/service_test_fixture.h"

namespace bunker::site {
namespace {

using service_testing::Fixture;
using service_testing::OpenTo;

TEST(VerifierServiceTest, OpensForAProvenRequester) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  const crypto::PublicIdentity bob = f.keys.bob.public_identity();
  absl::Status s = f.Ask(OpenTo(f.root + "/landing/ok"), &f.keys.bob, &bob);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(capsule::testing::ReadFile(f.root + "/landing/ok/a.csv"), "row 1\n");
}

TEST(VerifierServiceTest, RefusesAClaimedKeyThatDidNotSign) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  const crypto::PublicIdentity bob = f.keys.bob.public_identity();
  // Mallory claims Bob's key and signs with her own.
  EXPECT_EQ(f.Ask(OpenTo(f.root + "/landing/a"), &f.keys.mallory, &bob).code(),
            absl::StatusCode::kPermissionDenied);
  // Bob's signature over another challenge (a replay) proves nothing.
  EXPECT_EQ(f.Ask(OpenTo(f.root + "/landing/b"), &f.keys.bob, &bob, true).code(),
            absl::StatusCode::kPermissionDenied);
  // A public key without a signature is enough to explain, never to release.
  EXPECT_EQ(f.Ask(OpenTo(f.root + "/landing/c"), nullptr, &bob).code(),
            absl::StatusCode::kPermissionDenied);
  WireRequest explain;
  explain.command = Command::kExplain;
  explain.fd_count = 1;
  EXPECT_TRUE(f.Ask(explain, nullptr, &bob).ok());
  EXPECT_TRUE(capsule::testing::ListDir(f.root + "/landing").empty());
}

TEST(VerifierServiceTest, RefusesRequestsWhoseDescriptorsDoNotMatch) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  WireRequest cat;
  cat.command = Command::kCat;
  cat.path = "a.csv";
  cat.fd_count = 1;  // cat needs an output descriptor too
  EXPECT_EQ(f.Ask(cat, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(VerifierServiceTest, SurvivesGarbageAndAnswersTheNextClient) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  for (const std::string& garbage :
       {std::string("\xff\xff\xff\x7f", 4), std::string("\x08\0\0\0garbage!", 12),
        std::string(64, '\0')}) {
    capsule::Fd sock = f.Connect();
    ASSERT_TRUE(ReceiveHello(sock.get()).ok());
    ASSERT_EQ(::send(sock.get(), garbage.data(), garbage.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(garbage.size()));
    ::shutdown(sock.get(), SHUT_WR);
    absl::StatusOr<Reply> r = ReceiveReply(sock.get());
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->result.has_value());
    EXPECT_FALSE(r->result->status.ok());
  }
  EXPECT_TRUE(f.Ask(OpenTo(f.root + "/landing/after"), nullptr, nullptr).ok());
}

// Regression: a decision whose reasons exceed a frame (1 MiB) (here a policy explain's) was not
// sent at all, the daemon logged "ok" and the client waited until the next client connected.
// The reply's reasons are now bounded; the denial arrives. (The receive timeout only keeps a regression from hanging.)
TEST(VerifierServiceTest, ADecisionWithMoreReasonsThanAFrameIsAnswered) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  const std::string data = capsule::testing::MakeTempDir();
  for (int i = 0; i < 20; ++i) capsule::testing::WriteFile(data + "/f" + std::to_string(i), "x");
  const std::vector<uint8_t> sealed = capsule::testing::SealDirectory(
      f.keys, data, 4096, gate_testing::PolicyWithLongReasons());
  capsule::testing::WriteFile(f.capsule_path, std::string(sealed.begin(), sealed.end()));

  capsule::Fd sock = f.Connect();
  struct timeval guard {120, 0};
  ASSERT_EQ(::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof guard), 0);
  ASSERT_TRUE(ReceiveHello(sock.get()).ok());
  SignedRequest req;
  WireRequest explain;
  explain.command = Command::kExplain;
  explain.fd_count = 1;
  req.body = EncodeRequestBody(explain);
  capsule::Fd file(::open(f.capsule_path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(SendRequest(sock.get(), req, {file.get()}).ok());
  absl::StatusOr<Reply> r = ReceiveReply(sock.get());
  while (r.ok() && !r->result) r = ReceiveReply(sock.get());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->result->status.ok()) << r->result->status;
  EXPECT_FALSE(r->result->outcome.decision.permit);
  const std::vector<std::string>& reasons = r->result->outcome.decision.reasons;
  ASSERT_FALSE(reasons.empty());
  EXPECT_NE(reasons.back().find(" more reasons (see capsule policy explain)"), std::string::npos)
      << reasons.back();
  EXPECT_EQ(r->result->outcome.decision.denied_files.size(), 20u);
}

// A request may name an object of the site's own S3 store instead of passing the capsule; the
// service reads it (here from a stand-in for the store) only inside that store.
TEST(VerifierServiceTest, ReadsOnlyObjectsInsideItsOwnS3Store) {
  const std::string kInStore = "s3://site-bucket/site-b/0123456789abcdef0123456789abcdef.capsule";
  std::vector<std::string> asked;
  std::string capsule_path;
  auto open_store = [&](const capsule::s3::Location& at, std::function<bool()>)
      -> absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> {
    asked.push_back(capsule::s3::ToUrl(at));
    return capsule::OpenFile(capsule_path);
  };
  Fixture f("s3://site-bucket/site-b", open_store);
  ASSERT_NE(f.service, nullptr);
  capsule_path = f.capsule_path;
  const crypto::PublicIdentity bob = f.keys.bob.public_identity();
  WireRequest w = OpenTo(f.root + "/landing/s3");
  w.fd_count = 0;
  w.capsule_url = kInStore;
  absl::Status s = f.Ask(w, &f.keys.bob, &bob);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(capsule::testing::ReadFile(f.root + "/landing/s3/a.csv"), "row 1\n");
  EXPECT_EQ(asked, std::vector<std::string>{kInStore});
  for (const char* outside :
       {"s3://other-bucket/site-b/d.capsule", "s3://site-bucket/site-bx/d.capsule",
        "s3://site-bucket/d.capsule", "s3://site-bucket/site-b/", "s3://site-bucket/site-b"}) {
    w.capsule_url = outside;
    w.destination = f.root + "/landing/no";
    s = f.Ask(w, &f.keys.bob, &bob);
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << outside << ": " << s;
    EXPECT_NE(s.message().find("inside its own store s3://site-bucket/site-b/"),
              std::string::npos)
        << s;
  }
  // Inside the store but not a capsule as the store names it: markers, uploads in progress,
  // other names.
  for (const char* not_capsule :
       {"s3://site-bucket/site-b/d.capsule",
        "s3://site-bucket/site-b/.incoming/d1/0123456789abcdef0123456789abcdef.upload",
        "s3://site-bucket/site-b/0123456789ABCDEF0123456789abcdef.capsule",
        "s3://site-bucket/site-b/0123456789abcdef0123456789abcdef.capsule.x",
        "s3://site-bucket/site-b/x/0123456789abcdef0123456789abcdef.capsule",
        "s3://site-bucket/site-b/0123456789abcdef0123456789abcde.capsule"}) {
    w.capsule_url = not_capsule;
    w.destination = f.root + "/landing/no";
    s = f.Ask(w, &f.keys.bob, &bob);
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << not_capsule << ": " << s;
    EXPECT_NE(s.message().find("reads only capsules of its store"), std::string::npos) << s;
  }
  w.capsule_url = "s3://site-bucket/site-b/../x";
  EXPECT_EQ(f.Ask(w, &f.keys.bob, &bob).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(asked.size(), 1u) << "nothing outside the store was read";
  EXPECT_FALSE(capsule::testing::Exists(f.root + "/landing/no"));
  // A URL and a capsule descriptor both: refused.
  w.capsule_url = kInStore;
  w.fd_count = 1;
  EXPECT_EQ(f.Ask(w, &f.keys.bob, &bob).code(), absl::StatusCode::kInvalidArgument);
}

// A request may name a capsule of the site's own store folder ("<id>.capsule"), which users
// cannot read themselves (the folder is the daemon's, 0750, its capsules 0600): the service
// opens it with its own rights, but only that name directly in the folder, never through a
// link, never another file. Before, only s3:// locations could be named, and users at a site
// with a store folder could not open what it received.
TEST(VerifierServiceTest, ReadsOnlyCapsulesOfItsOwnStoreFolderByName) {
  Fixture f;
  ASSERT_NE(f.service, nullptr);
  const std::string store = f.root + "/store";
  ASSERT_EQ(::mkdir(store.c_str(), 0700), 0);
  f.site.store = store;  // the service reads the site file it was given at each request
  const std::string kId = "0123456789abcdef0123456789abcdef";
  const std::string capsule = capsule::testing::ReadFile(f.capsule_path);
  capsule::testing::WriteFile(store + "/" + kId + ".capsule", capsule);
  capsule::testing::WriteFile(f.root + "/secret", "not for users\n");
  // What a hostile writer of the store could plant: links out, a FIFO, a folder.
  const std::string link = "11111111111111111111111111111111.capsule";
  ASSERT_EQ(::symlink(f.capsule_path.c_str(), (store + "/" + link).c_str()), 0);
  const std::string fifo = "22222222222222222222222222222222.capsule";
  ASSERT_EQ(::mkfifo((store + "/" + fifo).c_str(), 0600), 0);
  const std::string folder = "33333333333333333333333333333333.capsule";
  ASSERT_EQ(::mkdir((store + "/" + folder).c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((store + "/.incoming").c_str(), 0700), 0);
  capsule::testing::WriteFile(store + "/.incoming/" + kId + ".capsule", capsule);

  const crypto::PublicIdentity bob = f.keys.bob.public_identity();
  WireRequest w = OpenTo(f.root + "/landing/stored");
  w.fd_count = 0;
  w.capsule_url = kId + ".capsule";
  absl::Status s = f.Ask(w, &f.keys.bob, &bob);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(capsule::testing::ReadFile(f.root + "/landing/stored/a.csv"), "row 1\n");

  // Anything but a capsule's own name: refused before anything is opened.
  for (const std::string& name : std::vector<std::string>{
           std::string("../secret"), f.root + "/secret", f.capsule_path, std::string("d.capsule"),
        "./" + kId + ".capsule", ".incoming/" + kId + ".capsule", "../store/" + kId + ".capsule",
           kId, "0123456789ABCDEF0123456789abcdef.capsule", kId + ".capsule/",
           kId + ".capsule.x", std::string("..")}) {
    w.capsule_url = name;
    w.destination = f.root + "/landing/no";
    s = f.Ask(w, &f.keys.bob, &bob);
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << name << ": " << s;
    EXPECT_NE(s.message().find("reads only capsules of its store, named " + store +
                               "/<32 lowercase hex>.capsule"),
              std::string::npos)
        << s;
  }
  // A capsule's name that is not a capsule file of the store: a link (even to a real capsule),
  // a FIFO (without hanging), a folder, a capsule it does not hold.
  w.capsule_url = link;
  s = f.Ask(w, &f.keys.bob, &bob);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("symbolic link"), std::string::npos) << s;
  w.capsule_url = fifo;
  EXPECT_EQ(f.Ask(w, &f.keys.bob, &bob).code(), absl::StatusCode::kInvalidArgument);
  w.capsule_url = folder;
  EXPECT_FALSE(f.Ask(w, &f.keys.bob, &bob).ok());
  w.capsule_url = "44444444444444444444444444444444.capsule";
  s = f.Ask(w, &f.keys.bob, &bob);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("is not in the store " + store), std::string::npos) << s;
  EXPECT_FALSE(capsule::testing::Exists(f.root + "/landing/no"));
  // A site whose store is in S3 names no capsule of a folder.
  f.site.store = "s3://site-bucket/site-b";
  w.capsule_url = kId + ".capsule";
  s = f.Ask(w, &f.keys.bob, &bob);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_FALSE(capsule::testing::Exists(f.root + "/landing/no"));
}

TEST(VerifierServiceTest, ASiteWithAFolderStoreReadsNoS3Url) {
  Fixture f("/srv/store");
  ASSERT_NE(f.service, nullptr);
  const crypto::PublicIdentity bob = f.keys.bob.public_identity();
  WireRequest w = OpenTo(f.root + "/landing/s3");
  w.fd_count = 0;
  w.capsule_url = "s3://site-bucket/site-b/d.capsule";
  absl::Status s = f.Ask(w, &f.keys.bob, &bob);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("keeps its capsules on disk"), std::string::npos) << s;
}

// A read of a store object that does not move (a server trickling its bytes) ends when the
// service stops: the service hands its reader of store objects a thread-safe `cancelled` that
// answers true then (capsuled passes it to s3::OpenObject, whose reads end with kCancelled).
// Before, the daemon's stop waited for the read.
TEST(VerifierServiceTest, AStoreReadThatDoesNotMoveEndsWhenTheServiceStops) {
  std::atomic<bool> reading{false}, cancelled_seen{false};
  // Stands in for a store object whose every read waits for the server; a hang guard of 20 s.
  class Stalled : public capsule::RandomAccessFile {
   public:
    Stalled(std::function<bool()> cancelled, std::atomic<bool>* reading, std::atomic<bool>* seen)
        : cancelled_(std::move(cancelled)), reading_(reading), seen_(seen) {}
    uint64_t size() const override { return 1 << 20; }
    absl::Status ReadAt(uint64_t, absl::Span<uint8_t>) const override {
      *reading_ = true;
      for (int i = 0; i < 2000; ++i) {
        if (cancelled_ && cancelled_()) {
          *seen_ = true;
          return absl::CancelledError("S3: the read was cancelled");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return absl::UnavailableError("the read was never cancelled");
    }

   private:
    std::function<bool()> cancelled_;
    std::atomic<bool>* reading_;
    std::atomic<bool>* seen_;
  };
  auto open_store = [&](const capsule::s3::Location&, std::function<bool()> cancelled)
      -> absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> {
    return std::unique_ptr<capsule::RandomAccessFile>(
        new Stalled(std::move(cancelled), &reading, &cancelled_seen));
  };
  Fixture f("s3://site-bucket/site-b", open_store);
  ASSERT_NE(f.service, nullptr);
  const crypto::PublicIdentity bob = f.keys.bob.public_identity();
  WireRequest w = OpenTo(f.root + "/landing/s3");
  w.fd_count = 0;
  w.capsule_url = "s3://site-bucket/site-b/0123456789abcdef0123456789abcdef.capsule";
  absl::Status asked;
  std::thread client([&] { asked = f.Ask(w, &f.keys.bob, &bob); });
  for (int i = 0; i < 2000 && !reading; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(reading) << "the service never read the object";
  f.service.reset();
  client.join();
  EXPECT_TRUE(cancelled_seen) << "the read was not told the service stopped";
  EXPECT_FALSE(asked.ok());
}

}  // namespace
}  // namespace bunker::site

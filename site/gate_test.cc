// The gate (site/gate.h): what a permit releases, where, and what a failure leaves behind.
#include "site/gate.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "site/gate_test_fixture.h"
#include "site/request.h"
#include "verifier/audit_log.h"
#include "verifier/policy.h"

namespace bunker::site {
namespace {

using capsule::testing::Exists;
using capsule::testing::ListDir;
using capsule::testing::MakeTempDir;
using capsule::testing::ReadFile;
using capsule::testing::WriteFile;

using gate_testing::Fixture;
using gate_testing::FlipChunkAt;


// The requester's rights as the kernel reads mode bits: one class only, owner first.
TEST(MayAccessTest, ReadsTheModeBitsOfOneClassAsTheKernelDoes) {
  const std::string dir = MakeTempDir();
  capsule::Fd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  struct stat st {};
  st.st_uid = 1000;
  st.st_gid = 2000;
  st.st_mode = S_IFDIR | 0570;  // the owner may not write, the group may, others nothing
  const Rights owner{1000, 1000, {2000}};
  EXPECT_FALSE(MayAccess(fd.get(), st, owner, W_OK));  // the owner's class alone counts
  EXPECT_TRUE(MayAccess(fd.get(), st, owner, R_OK | X_OK));
  EXPECT_TRUE(MayAccess(fd.get(), st, Rights{1001, 2000, {}}, W_OK | X_OK));
  EXPECT_TRUE(MayAccess(fd.get(), st, Rights{1001, 3000, {7, 2000}}, W_OK | X_OK));
  EXPECT_FALSE(MayAccess(fd.get(), st, Rights{1001, 3000, {7}}, X_OK));
  EXPECT_TRUE(MayAccess(fd.get(), st, Rights{0, 0, {}}, W_OK));
  st.st_mode = S_IFDIR | 01733;
  EXPECT_TRUE(MayAccess(fd.get(), st, Rights{1001, 3000, {}}, W_OK | X_OK));
  EXPECT_FALSE(MayAccess(fd.get(), st, Rights{1001, 3000, {}}, R_OK));
}

TEST(GateTest, ExtractsIntoASiteDestinationAndRecordsTheDecision) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{Want::Kind::kExtract, {"train/a.csv"}, ""});
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_EQ(f.LoggedEntries(), 1u);
  absl::StatusOr<Destination> to = ResolveDestination(f.site, f.root + "/landing/run1");
  ASSERT_TRUE(to.ok()) << to.status();
  absl::StatusOr<capsule::ExtractStats> stats = permit->Extract(*to, ReleaseOptions{});
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->files, 1u);
  EXPECT_EQ(ReadFile(f.root + "/landing/run1/train/a.csv"), "row 1\n");
  EXPECT_FALSE(Exists(f.root + "/landing/run1/train/big.bin"));
  // A permit releases once, and only what it was made for.
  EXPECT_EQ(permit->Extract(*to, {}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(permit->StreamFile(1, {}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(GateTest, DestinationsAreResolvedWithoutFollowingPlantedSymlinks) {
  Fixture f;
  ASSERT_EQ(::symlink("../outside", (f.root + "/landing/evil").c_str()), 0);
  for (const char* dest : {"/landing/evil/x", "/landing/evil/newsub/x"}) {
    absl::StatusOr<Destination> to = ResolveDestination(f.site, f.root + dest);
    ASSERT_TRUE(to.ok()) << to.status();  // lexically under the destination
    Gate gate = f.SiteGate();
    absl::StatusOr<Permit> permit = f.Decide(gate, Want{});
    ASSERT_TRUE(permit.ok()) << permit.status();
    absl::StatusOr<capsule::ExtractStats> stats = permit->Extract(*to, {});
    EXPECT_EQ(stats.status().code(), absl::StatusCode::kPermissionDenied) << dest;
    EXPECT_TRUE(ListDir(f.root + "/outside").empty()) << dest;
  }
  // Outside the destinations, ".." and the destination itself are refused before anything.
  EXPECT_EQ(ResolveDestination(f.site, f.root + "/outside/x").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveDestination(f.site, f.root + "/landing").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveDestination(f.site, f.root + "/landing/a/../../outside").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GateTest, StreamFileWritesNothingWhenALaterChunkIsCorrupt) {
  Fixture f;
  Gate gate = f.SiteGate();
  // big.bin spans chunks well past the first: corrupt one near its end.
  const std::vector<uint8_t> bad = FlipChunkAt(f.capsule, 9);
  absl::StatusOr<Permit> permit =
      f.Decide(gate, Want{Want::Kind::kFile, {}, "train/big.bin"}, bad);
  ASSERT_TRUE(permit.ok()) << permit.status();
  const std::string out = f.root + "/out.bin";
  capsule::Fd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  absl::StatusOr<uint64_t> n = permit->StreamFile(fd.get(), {});
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss) << n.status();
  EXPECT_EQ(ReadFile(out), "");
  // The failure is on record, after the permit.
  EXPECT_EQ(f.LoggedEntries(), 2u);
}

// A stream cut short after bytes left (a reader that stops, a hang-up, an interrupt) spends
// the use and is on record as such: before, only its permit was, as if the file had left whole.
TEST(GateTest, AStreamCutShortIsRecordedAndKeepsItsUseSpent) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{Want::Kind::kFile, {}, "train/big.bin"});
  ASSERT_TRUE(permit.ok()) << permit.status();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  capsule::Fd read_end(p[0]), write_end(p[1]);
  ASSERT_GT(::fcntl(write_end.get(), F_SETPIPE_SZ, 4096), 0);
  // Nobody reads: once the pipe is full the release is interrupted.
  ReleaseOptions options;
  options.cancelled = [&read_end] {
    int queued = 0;
    return ::ioctl(read_end.get(), FIONREAD, &queued) == 0 && queued > 0;
  };
  absl::StatusOr<uint64_t> n = permit->StreamFile(write_end.get(), options);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kCancelled) << n.status();
  int queued = 0;
  ASSERT_EQ(::ioctl(read_end.get(), FIONREAD, &queued), 0);
  ASSERT_GT(queued, 0);
  std::vector<verifier::AuditRecord> records;
  ASSERT_TRUE(verifier::ForEachAuditRecord(f.site.state + "/audit.log",
                                           [&](uint64_t, const verifier::AuditRecord& r) {
                                             records.push_back(r);
                                             return true;
                                           })
                  .ok());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].event, "release-failed");
  EXPECT_EQ(records[1].decision, "failed");
  EXPECT_EQ(records[1].uses, 0);  // bytes left: the use stays spent
  EXPECT_THAT(records[1].reasons,
              ::testing::ElementsAre("interrupted",
                                     absl::StrCat("release of audit log entry 0 failed after ",
                                                  queued, " bytes were written; the use stays "
                                                          "spent")));
}

TEST(GateTest, StreamFileWritesTheExactContents) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{Want::Kind::kFile, {}, "train/big.bin"});
  ASSERT_TRUE(permit.ok()) << permit.status();
  const std::string out = f.root + "/out.bin";
  capsule::Fd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  absl::StatusOr<uint64_t> n = permit->StreamFile(fd.get(), {});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 40000u);
  EXPECT_EQ(ReadFile(out), ReadFile(f.root + "/data/train/big.bin"));
}

TEST(GateTest, AFailedExtractionLeavesNothingAndIsRecorded) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{}, FlipChunkAt(f.capsule, 5));
  ASSERT_TRUE(permit.ok()) << permit.status();
  absl::StatusOr<Destination> to = ResolveDestination(f.site, f.root + "/landing/run");
  ASSERT_TRUE(to.ok());
  EXPECT_EQ(permit->Extract(*to, {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ListDir(f.root + "/landing").empty());
  EXPECT_EQ(f.LoggedEntries(), 2u);
}

TEST(GateTest, WriteArchiveIsAtomicAndRefusesToReplace) {
  Fixture f;
  Gate gate = f.SiteGate();
  absl::StatusOr<Destination> to = ResolveDestination(f.site, f.root + "/landing/sub/d.tar");
  ASSERT_TRUE(to.ok());
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{Want::Kind::kArchive, {}, ""});
  ASSERT_TRUE(permit.ok());
  absl::StatusOr<uint64_t> n = permit->WriteArchive(*to, {});
  ASSERT_TRUE(n.ok()) << n.status();
  struct stat st;
  ASSERT_EQ(::stat((f.root + "/landing/sub/d.tar").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), *n);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(CheckDestinationFree(*to).code(), absl::StatusCode::kAlreadyExists);
}

// Regression: a denial whose reasons alone exceed an audit entry (64 KiB) was not recorded and
// came back as UNAVAILABLE, so a requester could probe the policy without a trace. Its reasons
// are now bounded in the record; the deny is recorded and is a deny.
TEST(GateTest, ADenialTooLongToRecordWholeIsRecordedBounded) {
  Fixture f;
  const std::string policy = gate_testing::PolicyWithLongReasons();
  ASSERT_GT(policy.size(), 64u * 1024);
  const std::vector<uint8_t> sealed =
      capsule::testing::SealDirectory(f.keys, f.root + "/data", 4096, policy);
  Gate gate = f.SiteGate();
  absl::StatusOr<Permit> permit =
      f.Decide(gate, Want{Want::Kind::kExtract, {"train/**"}, ""}, sealed);
  ASSERT_EQ(permit.status().code(), absl::StatusCode::kPermissionDenied) << permit.status();
  ASSERT_EQ(f.LoggedEntries(), 1u);
  verifier::AuditRecord last;
  ASSERT_TRUE(verifier::ForEachAuditRecord(f.site.state + "/audit.log",
                                           [&](uint64_t, const verifier::AuditRecord& r) {
                                             last = r;
                                             return true;
                                           })
                  .ok());
  EXPECT_EQ(last.decision, "deny");
  ASSERT_FALSE(last.reasons.empty());
  size_t total = 0;
  for (const std::string& reason : last.reasons) {
    EXPECT_LE(reason.size(), verifier::kMaxReasonLineSize);
    total += reason.size();
  }
  EXPECT_LE(total, verifier::kMaxReasonsSize);
  EXPECT_THAT(last.reasons.back(), ::testing::MatchesRegex(
                                       "\\.\\.\\. [0-9]+ more reasons \\(see capsule policy explain\\)"));
  EXPECT_THAT(last.reasons.front(), ::testing::EndsWith("..."));
}

// Regression: a gate (the daemon has one) remembers the newest checkpoint it signed, so the
// state folder put back to an older copy under it is refused, not decided on.
TEST(GateTest, AStateFolderPutBackUnderTheGateIsDataLoss) {
  Fixture f;
  Gate gate = f.SiteGate();
  const Want want{Want::Kind::kExtract, {"train/a.csv"}, ""};
  ASSERT_TRUE(f.Decide(gate, want).ok());
  const std::string copy = f.root + "/state-copy";
  std::filesystem::copy(f.site.state, copy, std::filesystem::copy_options::recursive);
  ASSERT_TRUE(f.Decide(gate, want).ok());
  std::filesystem::remove_all(f.site.state);
  std::filesystem::copy(copy, f.site.state, std::filesystem::copy_options::recursive);
  absl::StatusOr<Permit> again = f.Decide(gate, want);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss) << again.status();
  EXPECT_THAT(std::string(again.status().message()),
              ::testing::HasSubstr("does not contain the checkpoint of size 2 this daemon signed"));
  EXPECT_EQ(f.LoggedEntries(), 1u);
}

TEST(GateTest, OfflineDeniesNothingWithoutAPolicyAndRecordsNothing) {
  Fixture f;
  Gate gate(f.keys.alice, {f.keys.issuer.public_identity()});
  SiteRequest r;
  r.command = Command::kLs;
  std::vector<std::string> listed;
  r.entries = [&listed](const std::vector<capsule::FileEntry>& batch) {
    for (const auto& e : batch) listed.push_back(e.path);
    return absl::OkStatus();
  };
  absl::StatusOr<Outcome> o = HandleRequest(gate, capsule::MemoryFile(f.capsule), "d", r);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(listed.size(), 3u);  // train/, train/a.csv, train/big.bin
  EXPECT_FALSE(Exists(f.site.state));
}

TEST(GateTest, ACapsuleForSomeoneElseIsRefusedBeforeAnyDecision) {
  Fixture f;
  Gate gate(f.site, f.keys.bob, {f.keys.issuer.public_identity()});
  absl::StatusOr<std::unique_ptr<OpenCapsule>> c =
      gate.Open(capsule::MemoryFile(f.capsule), "d.capsule", 1);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(Exists(f.site.state + "/audit.log"));
}

// A ustar archive of one file that the capsule's (empty) index does not list.
std::vector<uint8_t> UnlistedFileArchive() {
  std::string h(512, '\0');
  std::memcpy(&h[0], "train/secret.csv", 16);
  std::memcpy(&h[100], "0000644", 7);
  std::memcpy(&h[108], "0000000", 7);
  std::memcpy(&h[116], "0000000", 7);
  std::memcpy(&h[124], "00000000005", 11);
  std::memcpy(&h[136], "00000000000", 11);
  h[156] = '0';
  std::memcpy(&h[257], "ustar\0" "00", 8);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(&h[148], 8, "%06o", sum);
  std::string tar = h + "hush\n" + std::string(507, '\0') + std::string(1024, '\0');
  return std::vector<uint8_t>(tar.begin(), tar.end());
}

// Regression (issue 10, item 1): the policy is decided over the index, so an archive entry the
// index does not list (here: indexEntries = 0) must not be released by any release.
TEST(GateTest, AnArchiveEntryTheIndexDoesNotListIsDataLossForEveryRelease) {
  Fixture f;
  const std::vector<uint8_t> bytes = capsule::testing::SealRaw(f.keys, UnlistedFileArchive());
  Gate gate(f.keys.alice, {f.keys.issuer.public_identity()});
  absl::StatusOr<Destination> to = LocalDestination(f.root + "/outside/run");
  ASSERT_TRUE(to.ok());
  absl::StatusOr<Permit> permit = f.Decide(gate, Want{}, bytes);
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_EQ(permit->Extract(*to, {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ListDir(f.root + "/outside").empty());

  absl::StatusOr<Permit> archive = f.Decide(gate, Want{Want::Kind::kArchive, {}, ""}, bytes);
  ASSERT_TRUE(archive.ok());
  EXPECT_EQ(archive->WriteArchive(*to, {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ListDir(f.root + "/outside").empty());

  archive = f.Decide(gate, Want{Want::Kind::kArchive, {}, ""}, bytes);
  ASSERT_TRUE(archive.ok());
  const std::string out = f.root + "/stream.tar";
  const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(archive->StreamArchive(fd, {}).status().code(), absl::StatusCode::kDataLoss);
  ::close(fd);
  EXPECT_EQ(ReadFile(out), "");
}

// Regression (issue 10, item 13): an empty payload is no archive, for --to-tar as for --to.
TEST(GateTest, AnEmptyPayloadIsDataLossForEveryRelease) {
  Fixture f;
  const std::vector<uint8_t> bytes = capsule::testing::SealRaw(f.keys, {});
  Gate gate(f.keys.alice, {f.keys.issuer.public_identity()});
  absl::StatusOr<Destination> to = LocalDestination(f.root + "/outside/run");
  ASSERT_TRUE(to.ok());
  absl::StatusOr<Permit> archive = f.Decide(gate, Want{Want::Kind::kArchive, {}, ""}, bytes);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_EQ(archive->WriteArchive(*to, {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ListDir(f.root + "/outside").empty());
  absl::StatusOr<Permit> extract = f.Decide(gate, Want{}, bytes);
  ASSERT_TRUE(extract.ok());
  EXPECT_EQ(extract->Extract(*to, {}).status().code(), absl::StatusCode::kDataLoss);
}

// ---------------------------------------------------------------------------------------------
// The release spool (site/chunk_spool.h): a remote capsule's chunks fetched once.

}  // namespace
}  // namespace bunker::site

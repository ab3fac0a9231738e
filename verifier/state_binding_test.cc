// The site's state database bound to its audit log: every way of editing, deleting or rolling
// back the database is noticed (kDataLoss, no use regained), and a crash between the database
// and the log is recovered without giving a use back.
#include "verifier/state_binding.h"

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"
#include "verifier/use_counter.h"

namespace bunker::verifier {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr char kIssuer[] = "bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kCapsule[] = "00112233445566778899aabbccddeeff";

std::string Key() { return UseCountKey(kIssuer, kCapsule); }

AuditRecord Decision(int8_t uses, int64_t time = 1700000000) {
  AuditRecord r;
  r.time = time;
  r.decision = uses >= 0 ? "permit" : "failed";
  r.event = uses >= 0 ? "open" : "release-failed";
  r.capsule_id = kCapsule;
  r.issuer = kIssuer;
  r.site = "site-b";
  r.uses = uses;
  return r;
}

void Sql(const std::string& dir, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir + "/state.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

class SiteStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = bunker::test_temp::MakeTempDir("state");
  }

  absl::StatusOr<std::unique_ptr<SiteState>> Open(SiteState::FailPoint fail = nullptr) {
    return SiteState::Open(dir_, "site-b", site_, 1700000100, std::move(fail));
  }

  // Opens, records `uses`, closes. Returns the count the open saw before recording.
  uint64_t Use(int8_t uses = 1) {
    auto st = Open();
    EXPECT_TRUE(st.ok()) << st.status();
    if (!st.ok()) return UINT64_MAX;
    const uint64_t before = (*st)->UseCount(Key());
    EXPECT_TRUE((*st)->Record(Decision(uses), 1700000000).ok());
    return before;
  }

  void ExpectRefused(const std::string& what) {
    auto st = Open();
    ASSERT_FALSE(st.ok()) << what;
    EXPECT_EQ(st.status().code(), absl::StatusCode::kDataLoss) << st.status();
  }

  // A copy of state.db (with its WAL files) while no SiteState is open.
  void SaveDb(const std::string& to) {
    fs::remove_all(to);
    fs::create_directory(to);
    for (const char* f : {"state.db", "state.db-wal", "state.db-shm"}) {
      if (fs::exists(dir_ + "/" + f)) fs::copy_file(dir_ + "/" + f, to + "/" + f);
    }
  }
  void RestoreDb(const std::string& from) {
    for (const char* f : {"state.db", "state.db-wal", "state.db-shm"}) {
      fs::remove(dir_ + "/" + f);
      if (fs::exists(from + "/" + f)) fs::copy_file(from + "/" + f, dir_ + "/" + f);
    }
  }

  std::string dir_;
  crypto::Identity site_ = crypto::Identity::Generate();
};

TEST_F(SiteStateTest, CountsComeFromTheLog) {
  EXPECT_EQ(Use(1), 0u);
  EXPECT_EQ(Use(0), 1u);
  EXPECT_EQ(Use(1), 1u);
  EXPECT_EQ(Use(-1), 2u);
  EXPECT_EQ(Use(0), 1u);
  auto counts = RebuildUseCounts(dir_ + "/audit.log");
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(*counts, (std::map<std::string, uint64_t>{{Key(), 1}}));
  EXPECT_EQ(*SignedUseCount(dir_ + "/audit.log", Key()), 1u);
  EXPECT_EQ(*SignedUseCount(dir_ + "/none.log", Key()), 0u);
  auto db = UseCounter::Open(dir_);
  EXPECT_EQ(*(*db)->Count(Key()), 1u);
  EXPECT_FALSE((*db)->Pending()->has_value());
}

TEST_F(SiteStateTest, ARefundBelowZeroIsRefused) {
  auto st = Open();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ((*st)->Record(Decision(-1), 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*st)->Record(Decision(1), 1).ok());
  EXPECT_TRUE((*st)->Record(Decision(-1), 1).ok());
  EXPECT_EQ((*st)->Record(Decision(-1), 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*st)->UseCount(Key()), 0u);
}

TEST_F(SiteStateTest, EditedCountIsNoticed) {
  Use();
  Use();
  Sql(dir_, "UPDATE uses SET count = 0");
  ExpectRefused("count edited");
  auto st = Open();
  EXPECT_THAT(st.status().message(),
              HasSubstr("the site's state database does not match its audit log"));
  EXPECT_THAT(st.status().message(), HasSubstr("2 in the log"));
  // Deleting the row is the same edit.
  Sql(dir_, "DELETE FROM uses");
  ExpectRefused("count deleted");
  // And counting a capsule the log never counted.
  Sql(dir_, "INSERT INTO uses VALUES('" + Key() + "', 2), ('bk1:x/y', 1)");
  ExpectRefused("extra count");
}

TEST_F(SiteStateTest, DeletedDatabaseIsNoticed) {
  Use();
  for (const char* f : {"state.db", "state.db-wal", "state.db-shm"}) fs::remove(dir_ + "/" + f);
  ExpectRefused("state.db deleted");
  EXPECT_THAT(Open().status().message(), HasSubstr("was it deleted?"));
}

TEST_F(SiteStateTest, DatabaseRolledBackOneStepIsNoticed) {
  Use();
  SaveDb(dir_ + "/../saved-one");
  Use();  // the second use, which the rollback tries to regain
  RestoreDb(dir_ + "/../saved-one");
  ExpectRefused("database one step behind");
  EXPECT_THAT(Open().status().message(), HasSubstr("the log has 2 signed entries"));
}

TEST_F(SiteStateTest, DatabaseRolledBackWithTheLastCheckpointTrimmedIsNoticed) {
  Use();
  SaveDb(dir_ + "/../saved-trim");
  const std::string before = ReadText(dir_ + "/audit.checkpoints");
  Use();
  RestoreDb(dir_ + "/../saved-trim");
  // The log's last entry now has no checkpoint: it looks like an interrupted append, which the
  // log alone would cut off, and the use with it.
  WriteText(dir_ + "/audit.checkpoints", before);
  ExpectRefused("database and checkpoint rolled back");
  EXPECT_THAT(Open().status().message(), HasSubstr("no checkpoint signs"));
  // Nothing was cut: the entry is still there for the operator.
  EXPECT_EQ(*RebuildUseCounts(dir_ + "/audit.log"),
            (std::map<std::string, uint64_t>{{Key(), 2}}));
}

TEST_F(SiteStateTest, LogRolledBackIsNoticed) {
  Use();
  const std::string log = ReadText(dir_ + "/audit.log");
  const std::string ck = ReadText(dir_ + "/audit.checkpoints");
  Use();
  WriteText(dir_ + "/audit.log", log);
  WriteText(dir_ + "/audit.checkpoints", ck);
  ExpectRefused("log and checkpoints rolled back together");
}

// Regression: the whole state folder put back to an older copy while the daemon runs (log and
// database consistent with each other) gave the spent uses back; only what the process
// remembers (the CheckpointMark it opens the state through) can tell.
TEST_F(SiteStateTest, FolderRestoredUnderARunningDaemonIsNoticed) {
  auto mark = std::make_shared<CheckpointMark>();
  auto open = [&]() { return SiteState::Open(dir_, "site-b", site_, 1700000100, nullptr, mark); };
  {
    auto st = open();
    ASSERT_TRUE(st.ok()) << st.status();
    ASSERT_TRUE((*st)->Record(Decision(1), 1700000000).ok());
  }
  const std::string copy = dir_ + ".copy";
  fs::remove_all(copy);
  fs::copy(dir_, copy, fs::copy_options::recursive);
  {
    auto st = open();
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ((*st)->UseCount(Key()), 1u);
    ASSERT_TRUE((*st)->Record(Decision(1), 1700000000).ok());  // the last use is spent
  }
  ASSERT_EQ(mark->Get()->size, 2u);
  fs::remove_all(dir_);
  fs::copy(copy, dir_, fs::copy_options::recursive);
  // The folder alone is consistent: a process that remembers nothing cannot tell.
  EXPECT_TRUE(Open().ok());
  auto st = open();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kDataLoss) << st.status();
  EXPECT_THAT(st.status().message(),
              HasSubstr("the site's audit log does not contain the checkpoint of size 2 this "
                        "daemon signed: the state was rolled back"));
}

// The mark also learns the state it first finds, so that a folder put back before the daemon's
// first write is caught as well; and a log grown by others since still reproduces it.
TEST_F(SiteStateTest, TheMarkLearnsWhatOpenFinds) {
  Use();
  Use();
  auto mark = std::make_shared<CheckpointMark>();
  ASSERT_TRUE(SiteState::Open(dir_, "site-b", site_, 1700000100, nullptr, mark).ok());
  ASSERT_TRUE(mark->Get().has_value());
  EXPECT_EQ(mark->Get()->size, 2u);
  Use();  // another process, without the mark
  EXPECT_TRUE(SiteState::Open(dir_, "site-b", site_, 1700000100, nullptr, mark).ok());
  EXPECT_EQ(mark->Get()->size, 3u);
}

TEST_F(SiteStateTest, CrashBetweenDatabaseAndLogIsRecovered) {
  Use();
  {
    auto st = Open([](std::string_view point) {
      return point == "pending-committed" ? absl::AbortedError("crash") : absl::OkStatus();
    });
    ASSERT_TRUE(st.ok());
    EXPECT_EQ((*st)->Record(Decision(1, 1700000050), 1700000050).status().code(),
              absl::StatusCode::kAborted);
    // An object whose write stopped half-way writes nothing more.
    EXPECT_EQ((*st)->Record(Decision(0), 1).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  // The log does not have the entry yet; the database does, with its use.
  EXPECT_EQ(*RebuildUseCounts(dir_ + "/audit.log"),
            (std::map<std::string, uint64_t>{{Key(), 1}}));
  // A torn write of the entry, as a crash inside the append leaves it.
  {
    auto db = UseCounter::Open(dir_);
    auto pending = (*db)->Pending();
    ASSERT_TRUE(pending.ok() && pending->has_value());
    std::ofstream(dir_ + "/audit.log", std::ios::binary | std::ios::app)
        << std::string("\0\0", 2);
  }
  // The next decision puts the pending entry on record, and sees its use.
  auto st = Open();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ((*st)->UseCount(Key()), 2u);
  st->reset();
  EXPECT_EQ(*RebuildUseCounts(dir_ + "/audit.log"),
            (std::map<std::string, uint64_t>{{Key(), 2}}));
  int64_t times = 0;
  ASSERT_TRUE(ForEachAuditRecord(dir_ + "/audit.log", [&](uint64_t, const AuditRecord& r) {
                times += r.time == 1700000050;
                return true;
              }).ok());
  EXPECT_EQ(times, 1);
  auto db = UseCounter::Open(dir_);
  EXPECT_FALSE((*db)->Pending()->has_value());
  EXPECT_EQ(Use(), 2u);
}

TEST_F(SiteStateTest, CrashAfterTheLogAppendIsFinished) {
  {
    auto st = Open([](std::string_view point) {
      return point == "appended" ? absl::AbortedError("crash") : absl::OkStatus();
    });
    ASSERT_TRUE(st.ok());
    EXPECT_FALSE((*st)->Record(Decision(1), 1).ok());
  }
  auto st = Open();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ((*st)->UseCount(Key()), 1u);
  st->reset();
  EXPECT_EQ(*RebuildUseCounts(dir_ + "/audit.log"),
            (std::map<std::string, uint64_t>{{Key(), 1}}));  // appended once, not twice
}

TEST_F(SiteStateTest, APendingEntryThatIsNotTheLogsLastIsNoticed) {
  {
    auto st = Open([](std::string_view point) {
      return point == "appended" ? absl::AbortedError("crash") : absl::OkStatus();
    });
    ASSERT_TRUE(st.ok());
    EXPECT_FALSE((*st)->Record(Decision(1), 1).ok());
  }
  auto db = UseCounter::Open(dir_);
  ASSERT_TRUE((*db)->SetPending({EncodeAuditEntry(Decision(0, 5)), 1}).ok());
  db->reset();
  ExpectRefused("pending entry differs from the log's last");
}

TEST(RebuildUseCountsTest, RefusesARefundOfNothingAndAMissingLog) {
  const std::string dir = bunker::test_temp::MakeTempDir("rebuild");
  const crypto::Identity site = crypto::Identity::Generate();
  auto log = AuditLog::Open(dir, &site, "site-b", std::nullopt);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Decision(-1), 1).ok());
  auto counts = RebuildUseCounts(dir + "/audit.log");
  EXPECT_EQ(counts.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(counts.status().message(), HasSubstr("entry 0 refunds"));
  EXPECT_EQ(RebuildUseCounts(dir + "/missing.log").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace bunker::verifier

// Tests of verifier/audit_log.h. Over 500 lines on purpose: one file per unit under test; the
// tamper cases share the log-building fixture and read best side by side.
#include "verifier/audit_log.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "capnp/message.h"
#include "crypto/merkle.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spec/audit.capnp.h"
#include "spec/capsule.capnp.h"
#include "tests/temp_dir.h"

namespace bunker::verifier {
namespace {

using ::testing::HasSubstr;

using Bytes = std::vector<uint8_t>;

std::string TempDir() {
  return bunker::test_temp::MakeTempDir("audit");
}

Bytes ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::string ReadText(const std::string& path) {
  const Bytes b = ReadBytes(path);
  return std::string(b.begin(), b.end());
}

void WriteText(const std::string& path, const std::string& text) {
  WriteBytes(path, Bytes(text.begin(), text.end()));
}

// The log file cut into its entries (without length prefixes), and put back together.
std::vector<Bytes> SplitLog(const Bytes& log) {
  std::vector<Bytes> out;
  size_t pos = 0;
  while (pos + 4 <= log.size()) {
    const uint32_t n = uint32_t{log[pos]} << 24 | uint32_t{log[pos + 1]} << 16 |
                       uint32_t{log[pos + 2]} << 8 | log[pos + 3];
    out.emplace_back(log.begin() + static_cast<long>(pos + 4),
                     log.begin() + static_cast<long>(pos + 4 + n));
    pos += 4 + n;
  }
  EXPECT_EQ(pos, log.size());
  return out;
}

Bytes Frame(const Bytes& entry) {
  // Sized once: growing a 4-byte vector by insert() trips GCC 12's -Warray-bounds at -O3.
  Bytes out(4 + entry.size());
  out[0] = static_cast<uint8_t>(entry.size() >> 24);
  out[1] = static_cast<uint8_t>(entry.size() >> 16);
  out[2] = static_cast<uint8_t>(entry.size() >> 8);
  out[3] = static_cast<uint8_t>(entry.size());
  std::copy(entry.begin(), entry.end(), out.begin() + 4);
  return out;
}

Bytes JoinLog(const std::vector<Bytes>& entries) {
  Bytes out;
  for (const Bytes& e : entries) {
    const Bytes f = Frame(e);
    out.insert(out.end(), f.begin(), f.end());
  }
  return out;
}

// The checkpoints file cut into six-line blocks.
std::vector<std::string> SplitCheckpoints(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = pos;
    for (int i = 0; i < 6; ++i) end = text.find('\n', end) + 1;
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

std::string JoinCheckpoints(const std::vector<std::string>& blocks) {
  std::string out;
  for (const std::string& b : blocks) out += b;
  return out;
}

AuditRecord SampleRecord(int i) {
  AuditRecord r;
  r.time = 1700000000 + i * 60;
  r.event = "open";
  r.decision = i % 3 == 2 ? "deny" : "permit";
  r.capsule_id = absl::StrCat("0123456789abcdef0123456789abcd", 10 + i % 5);
  r.issuer = "bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa";
  r.site = "site-b";
  r.requester = i % 2 == 0 ? "bk1:bbbbbbbbbbbbbbbbbbbbbbbbba" : "";
  r.purpose = absl::StrCat("training run ", i);
  r.paths = {"train/**"};
  r.rules = {i % 3 == 2 ? "no-pii" : "train"};
  r.reasons = {absl::StrCat("reason ", i)};
  return r;
}

bool SameRecord(const AuditRecord& a, const AuditRecord& b) {
  return a.time == b.time && a.event == b.event && a.decision == b.decision &&
         a.capsule_id == b.capsule_id && a.issuer == b.issuer && a.site == b.site &&
         a.requester == b.requester && a.purpose == b.purpose && a.paths == b.paths &&
         a.rules == b.rules && a.reasons == b.reasons && a.uses == b.uses && a.uid == b.uid &&
         a.pid == b.pid;
}

// --- Entries ---------------------------------------------------------------------------------

TEST(AuditEntryTest, RoundTrips) {
  AuditRecord odd = SampleRecord(1);
  odd.purpose = std::string("nul\0inside \xff\xfe not utf-8 \x1b[31m", 30);
  odd.paths = {"a", "", "c"};  // an empty element inside a list
  odd.reasons.clear();
  for (const AuditRecord& r : {SampleRecord(0), SampleRecord(2), odd, AuditRecord{}}) {
    const Bytes bytes = EncodeAuditEntry(r);
    EXPECT_EQ(bytes.size() % 8, 0u);
    absl::StatusOr<AuditRecord> back = DecodeAuditEntry(bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(SameRecord(*back, r));
    EXPECT_EQ(EncodeAuditEntry(*back), bytes);
  }
}

TEST(AuditEntryTest, EmptyTextsAndListsAreNullPointers) {
  AuditRecord empty;
  empty.event.clear();
  // Root pointer only: time 0 and ten null pointers canonicalize to an empty struct.
  EXPECT_EQ(EncodeAuditEntry(empty).size(), 8u);

  // The same value with an empty-but-present text is canonical Cap'n Proto, but not this
  // format's encoding, so it is refused.
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<schema::AuditEntry>();
  root.setTime(5);
  root.setPurpose("");
  auto words = capnp::canonicalize(root.asReader());
  const Bytes bytes(words.asBytes().begin(), words.asBytes().end());
  absl::StatusOr<AuditRecord> r = DecodeAuditEntry(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("canonical"));
}

TEST(AuditEntryTest, RejectsBadLengths) {
  const Bytes good = EncodeAuditEntry(SampleRecord(0));
  for (const Bytes& bad : {Bytes{}, Bytes(7, 0), Bytes(good.begin(), good.end() - 1),
                           Bytes(kMaxAuditEntrySize + 8, 0)}) {
    absl::StatusOr<AuditRecord> r = DecodeAuditEntry(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST(AuditEntryTest, RejectsTrailingWordsAndUnknownFields) {
  Bytes extra = EncodeAuditEntry(SampleRecord(0));
  extra.insert(extra.end(), 8, 0);
  EXPECT_EQ(DecodeAuditEntry(extra).status().code(), absl::StatusCode::kDataLoss);

  // A bigger struct (more data words) read as an AuditEntry: fields this version does not know.
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<schema::IndexEntry>();
  root.setSize(1);
  root.setMtime(7);
  root.setPath("x");
  auto words = capnp::canonicalize(root.asReader());
  const Bytes other(words.asBytes().begin(), words.asBytes().end());
  absl::StatusOr<AuditRecord> r = DecodeAuditEntry(other);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

TEST(AuditEntryTest, EveryByteFlipIsRejectedOrReencodesExactly) {
  const Bytes good = EncodeAuditEntry(SampleRecord(4));
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80}) {
      Bytes bad = good;
      bad[i] ^= mask;
      absl::StatusOr<AuditRecord> r = DecodeAuditEntry(bad);
      if (r.ok()) {
        EXPECT_EQ(EncodeAuditEntry(*r), bad) << "byte " << i;
      } else {
        EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
      }
    }
  }
  for (size_t n = 0; n < good.size(); n += 8) {
    EXPECT_FALSE(DecodeAuditEntry(absl::MakeConstSpan(good.data(), n)).ok()) << n;
  }
}

// --- Checkpoints -----------------------------------------------------------------------------

Checkpoint SignedCheckpoint(const crypto::Identity& id) {
  Checkpoint c;
  c.site = "site-b";
  c.size = 42;
  c.root = crypto::Sha256::Hash(std::string_view("root"));
  c.time = 1700000000;
  const std::string text = c.SignedText();
  c.signature =
      id.Sign(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  return c;
}

TEST(CheckpointTest, EncodesParsesAndVerifies) {
  const crypto::Identity id = crypto::Identity::Generate();
  const Checkpoint c = SignedCheckpoint(id);
  const std::string text = c.Encode();
  EXPECT_EQ(text.rfind("bunker audit checkpoint v1\nsite site-b\nsize 42\nroot ", 0), 0u);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 6);
  EXPECT_EQ(text.substr(0, c.SignedText().size()), c.SignedText());
  absl::StatusOr<Checkpoint> back = Checkpoint::Parse(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->Encode(), text);
  EXPECT_TRUE(back->Verify(id.public_identity()).ok());
}

// Regression: a site named with a C1 control (U+009B is CSI), a bidi override or bytes that are
// not UTF-8 went, through a checkpoint, raw to the auditor's terminal.
TEST(CheckpointTest, SiteNameWithC1BidiOrInvalidUtf8IsRefused) {
  const crypto::Identity id = crypto::Identity::Generate();
  for (const std::string& site :
       {std::string("evil\xc2\x9b" "2J"), std::string("site-\xe2\x80\xae" "b"),
        std::string("site-\xe2\x81\xa6" "b"), std::string("site-\xe2\x80\x8b" "b"),
        std::string("site-\xff"), std::string("site-\xc3")}) {
    Checkpoint c = SignedCheckpoint(id);
    c.site = site;
    absl::StatusOr<Checkpoint> parsed = Checkpoint::Parse(c.Encode());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.Encode();
    EXPECT_FALSE(IsValidSiteName(site));
    const std::string dir = TempDir();
    absl::StatusOr<std::unique_ptr<AuditLog>> log = AuditLog::Open(dir, &id, site, std::nullopt);
    EXPECT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument);
  }
  Checkpoint c = SignedCheckpoint(id);
  c.site = "site \xc3\xa9t\xc3\xa9";  // other UTF-8 is a name like any
  absl::StatusOr<Checkpoint> parsed = Checkpoint::Parse(c.Encode());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->site, c.site);
}

TEST(CheckpointTest, ForgedOrAlteredSignatureIsDataLoss) {
  const crypto::Identity site = crypto::Identity::Generate();
  const crypto::Identity mallory = crypto::Identity::Generate();
  const Checkpoint forged = SignedCheckpoint(mallory);
  EXPECT_EQ(forged.Verify(site.public_identity()).code(), absl::StatusCode::kDataLoss);

  Checkpoint altered = SignedCheckpoint(site);
  altered.size = 43;
  EXPECT_EQ(altered.Verify(site.public_identity()).code(), absl::StatusCode::kDataLoss);
  altered = SignedCheckpoint(site);
  altered.site = "site-c";
  EXPECT_EQ(altered.Verify(site.public_identity()).code(), absl::StatusCode::kDataLoss);
  altered = SignedCheckpoint(site);
  altered.signature[5] ^= 1;
  EXPECT_EQ(altered.Verify(site.public_identity()).code(), absl::StatusCode::kDataLoss);
}

TEST(CheckpointTest, ParseIsStrict) {
  const std::string good = SignedCheckpoint(crypto::Identity::Generate()).Encode();
  auto replace = [&good](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  const std::string root_hex = good.substr(good.find("root ") + 5, 64);
  std::string upper_root = root_hex;
  for (char& ch : upper_root) ch = static_cast<char>(std::toupper(ch));
  const std::vector<std::string> bad = {
      "",
      good.substr(0, good.size() - 1),  // no final newline
      good + "\n",                      // a seventh line
      replace("bunker audit checkpoint v1", "bunker audit checkpoint v2"),
      replace("site site-b", "site "),
      replace("site site-b", "site a\x01z"),
      replace("site site-b", "site " + std::string(257, 'a')),
      replace("size 42", "size 042"),
      replace("size 42", "size +42"),
      replace("size 42", "size 18446744073709551616"),
      replace("size 42", "size  42"),
      replace(root_hex, upper_root),
      replace(root_hex, root_hex.substr(2)),
      replace("time 1700000000", "time -1"),
      replace("time 1700000000", "time 9223372036854775808"),
      replace("\nsig ", "\nsignature "),
      replace("\n", "\r\n"),
  };
  for (const std::string& text : bad) {
    absl::StatusOr<Checkpoint> c = Checkpoint::Parse(text);
    EXPECT_FALSE(c.ok()) << text;
    if (!c.ok()) {
      EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_TRUE(Checkpoint::Parse(replace("time 1700000000", "time 0")).ok());
}

// --- The log ---------------------------------------------------------------------------------

class AuditLogTest : public ::testing::Test {
 protected:
  std::string log_path() const { return dir_ + "/audit.log"; }
  std::string ck_path() const { return dir_ + "/audit.checkpoints"; }

  std::unique_ptr<AuditLog> OpenLog(const std::optional<Checkpoint>& last = std::nullopt) {
    absl::StatusOr<std::unique_ptr<AuditLog>> log = AuditLog::Open(dir_, &site_, "site-b", last);
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? std::move(*log) : nullptr;
  }

  // Appends records first..first+n-1; returns the checkpoints.
  std::vector<Checkpoint> Append(int n, int first = 0) {
    std::unique_ptr<AuditLog> log = OpenLog();
    std::vector<Checkpoint> out;
    if (log == nullptr) return out;
    for (int i = first; i < first + n; ++i) {
      absl::StatusOr<Checkpoint> c = log->Append(SampleRecord(i), 1700000000 + i * 60 + 1);
      EXPECT_TRUE(c.ok()) << c.status();
      if (c.ok()) out.push_back(*c);
    }
    return out;
  }

  absl::Status Verify(const std::optional<Checkpoint>& trusted = std::nullopt) {
    return VerifyAuditLog(log_path(), site_.public_identity(), trusted).status();
  }

  // Verification fails with kDataLoss naming `entry`.
  void ExpectNamesEntry(uint64_t entry, const std::optional<Checkpoint>& trusted = std::nullopt) {
    absl::Status s = Verify(trusted);
    ASSERT_FALSE(s.ok()) << "tampering not detected; expected entry " << entry;
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    const std::string m(s.message());
    const std::string want = absl::StrCat("entry ", entry, " ");
    EXPECT_TRUE(m.find(want) != std::string::npos ||
                m.find(absl::StrCat("entries ", entry, "..")) != std::string::npos)
        << "message '" << m << "' does not name entry " << entry;
  }

  std::string dir_ = TempDir();
  crypto::Identity site_ = crypto::Identity::Generate();
};

TEST_F(AuditLogTest, AppendsReopensAndReadsBack) {
  const std::vector<Checkpoint> first = Append(5);
  ASSERT_EQ(first.size(), 5u);
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].size, i + 1);
    EXPECT_EQ(first[i].site, "site-b");
    EXPECT_TRUE(first[i].Verify(site_.public_identity()).ok());
  }
  std::unique_ptr<AuditLog> log = OpenLog(first.back());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->size(), 5u);
  absl::StatusOr<Checkpoint> sixth = log->Append(SampleRecord(5), 1700009999);
  ASSERT_TRUE(sixth.ok()) << sixth.status();
  EXPECT_EQ(sixth->size, 6u);
  EXPECT_EQ(sixth->time, 1700009999);
  EXPECT_EQ(log->size(), 6u);

  // One six-line checkpoint per append, in order.
  const std::vector<std::string> blocks = SplitCheckpoints(ReadText(ck_path()));
  ASSERT_EQ(blocks.size(), 6u);
  EXPECT_EQ(blocks.back(), sixth->Encode());

  absl::StatusOr<AuditVerifyResult> v =
      VerifyAuditLog(log_path(), site_.public_identity(), first[2]);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->entries, 6u);
  EXPECT_EQ(v->checkpoint.Encode(), sixth->Encode());

  absl::StatusOr<Checkpoint> latest = ReadLatestCheckpoint(log_path());
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->Encode(), sixth->Encode());

  int seen = 0;
  ASSERT_TRUE(ForEachAuditRecord(log_path(), [&seen](uint64_t i, const AuditRecord& r) {
                EXPECT_EQ(i, static_cast<uint64_t>(seen));
                EXPECT_TRUE(SameRecord(r, SampleRecord(seen)));
                ++seen;
                return true;
              }).ok());
  EXPECT_EQ(seen, 6);
  seen = 0;
  ASSERT_TRUE(ForEachAuditRecord(log_path(), [&seen](uint64_t, const AuditRecord&) {
                return ++seen < 2;
              }).ok());
  EXPECT_EQ(seen, 2);
}

TEST_F(AuditLogTest, EmptyLogVerifies) {
  ASSERT_NE(OpenLog(), nullptr);
  absl::StatusOr<AuditVerifyResult> v = VerifyAuditLog(log_path(), site_.public_identity(), {});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->entries, 0u);
  EXPECT_EQ(ReadLatestCheckpoint(log_path()).status().code(), absl::StatusCode::kNotFound);
}

// spec/AUDIT.md "Use counts are in the log", V1.6: per (issuer, capsuleId), the running sum of
// `uses` never falls below zero; a refund of a use that was never counted is DATA_LOSS naming it.
TEST_F(AuditLogTest, VerifyRefusesARunningSumOfUsesBelowZero) {
  auto uses = [](int i, int8_t n, std::string issuer = "bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa") {
    AuditRecord r = SampleRecord(i);
    r.uses = n;
    r.issuer = std::move(issuer);
    r.capsule_id = "0123456789abcdef0123456789abcdef";
    return r;
  };
  {
    std::unique_ptr<AuditLog> log = OpenLog();
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->Append(uses(0, 1), 1700000001).ok());
    ASSERT_TRUE(log->Append(uses(1, -1), 1700000002).ok());
    ASSERT_TRUE(log->Append(uses(2, 0), 1700000003).ok());
    // Another issuer's capsule with the same id has a count of its own.
    ASSERT_TRUE(log->Append(uses(3, 1, "bk1:cccccccccccccccccccccccccc"), 1700000004).ok());
  }
  ASSERT_TRUE(Verify().ok()) << Verify();
  {
    std::unique_ptr<AuditLog> log = OpenLog();
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->Append(uses(4, -1), 1700000005).ok());
  }
  ExpectNamesEntry(4);
  EXPECT_THAT(std::string(Verify().message()), HasSubstr("refunds a use that was never counted"));
  // The report's verification (only the latest signature) refuses it too.
  absl::StatusOr<AuditVerifyResult> v =
      VerifyAuditLog(log_path(), site_.public_identity(), {}, /*every_signature=*/false);
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(AuditLogTest, VerifyRefusesALogWhoseOnlyEntryRefundsAUse) {
  {
    std::unique_ptr<AuditLog> log = OpenLog();
    ASSERT_NE(log, nullptr);
    AuditRecord r = SampleRecord(0);
    r.uses = -1;
    ASSERT_TRUE(log->Append(r, 1700000001).ok());
  }
  ExpectNamesEntry(0);
}

TEST_F(AuditLogTest, ConcurrentAppendsFromTwoProcessesSerialize) {
  constexpr int kPerChild = 15;
  // The parent opens first, so its next append must catch up with both children.
  std::unique_ptr<AuditLog> parent = OpenLog();
  ASSERT_NE(parent, nullptr);
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  pid_t kids[2];
  for (int k = 0; k < 2; ++k) {
    kids[k] = ::fork();
    ASSERT_GE(kids[k], 0);
    if (kids[k] == 0) {
      ::close(go[1]);
      char c;
      if (::read(go[0], &c, 1) != 0) ::_exit(3);  // wait until the parent closes the pipe
      absl::StatusOr<std::unique_ptr<AuditLog>> log =
          AuditLog::Open(dir_, &site_, "site-b", std::nullopt);
      if (!log.ok()) ::_exit(1);
      for (int i = 0; i < kPerChild; ++i) {
        AuditRecord r = SampleRecord(i);
        r.time = i;
        r.purpose = absl::StrCat("child ", k);
        if (!(*log)->Append(r, 1700000000 + i).ok()) ::_exit(2);
      }
      ::_exit(0);
    }
  }
  ::close(go[0]);
  ::close(go[1]);  // both children start at once
  for (pid_t kid : kids) {
    int status = 0;
    ASSERT_EQ(::waitpid(kid, &status, 0), kid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  absl::StatusOr<Checkpoint> last = parent->Append(SampleRecord(999), 1800000000);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->size, 2u * kPerChild + 1);

  absl::StatusOr<AuditVerifyResult> v = VerifyAuditLog(log_path(), site_.public_identity(), {});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->entries, 2u * kPerChild + 1);
  // Each child's records are all there, in its own order.
  std::vector<int64_t> seen[2];
  ASSERT_TRUE(ForEachAuditRecord(log_path(), [&seen](uint64_t, const AuditRecord& r) {
                for (int k = 0; k < 2; ++k) {
                  if (r.purpose == absl::StrCat("child ", k)) seen[k].push_back(r.time);
                }
                return true;
              }).ok());
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(seen[k].size(), static_cast<size_t>(kPerChild));
    for (int i = 0; i < kPerChild; ++i) EXPECT_EQ(seen[k][static_cast<size_t>(i)], i);
  }
}

TEST_F(AuditLogTest, OpenDetectsRollbackToAnOlderCopy) {
  Append(5);
  const Bytes old_log = ReadBytes(log_path());
  const std::string old_cks = ReadText(ck_path());
  const std::vector<Checkpoint> later = Append(3, 5);
  ASSERT_EQ(later.size(), 3u);
  WriteBytes(log_path(), old_log);
  WriteText(ck_path(), old_cks);
  // On its own the older copy is a valid log...
  EXPECT_TRUE(Verify().ok());
  // ...but not for a verifier that remembers what it signed.
  absl::StatusOr<std::unique_ptr<AuditLog>> log =
      AuditLog::Open(dir_, &site_, "site-b", later.back());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(log.status().message(), HasSubstr("rolled back"));
}

TEST_F(AuditLogTest, OpenDetectsALogInconsistentWithTheLastSignedCheckpoint) {
  const std::vector<Checkpoint> cps = Append(4);
  // Another history of the same length, signed with the same key.
  const std::string other = TempDir();
  {
    absl::StatusOr<std::unique_ptr<AuditLog>> log =
        AuditLog::Open(other, &site_, "site-b", std::nullopt);
    ASSERT_TRUE(log.ok());
    for (int i = 10; i < 14; ++i) ASSERT_TRUE((*log)->Append(SampleRecord(i), 1).ok());
  }
  absl::StatusOr<std::unique_ptr<AuditLog>> log =
      AuditLog::Open(other, &site_, "site-b", cps.back());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(log.status().message(), HasSubstr("last signed"));

  // A deleted log is a rollback to size 0.
  ::unlink(log_path().c_str());
  ::unlink(ck_path().c_str());
  log = AuditLog::Open(dir_, &site_, "site-b", cps.back());
  ASSERT_FALSE(log.ok());
  EXPECT_THAT(log.status().message(), HasSubstr("rolled back"));

  // A last checkpoint that the site did not sign is refused too.
  Checkpoint forged = cps.back();
  forged.signature[0] ^= 1;
  log = AuditLog::Open(other, &site_, "site-b", forged);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(AuditLogTest, OpenRefusesATamperedLog) {
  Append(4);
  Bytes log = ReadBytes(log_path());
  log[log.size() / 2] ^= 0x20;
  WriteBytes(log_path(), log);
  absl::StatusOr<std::unique_ptr<AuditLog>> opened =
      AuditLog::Open(dir_, &site_, "site-b", std::nullopt);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(opened.status().message(), HasSubstr("tampered"));
}

TEST_F(AuditLogTest, OpenRefusesAnotherSiteOrKey) {
  Append(2);
  absl::StatusOr<std::unique_ptr<AuditLog>> log =
      AuditLog::Open(dir_, &site_, "site-c", std::nullopt);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kFailedPrecondition);
  const crypto::Identity other = crypto::Identity::Generate();
  log = AuditLog::Open(dir_, &other, "site-b", std::nullopt);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(log.status().message(), HasSubstr("does not verify"));
  log = AuditLog::Open(dir_, &site_, "bad\nsite", std::nullopt);
  EXPECT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument);
  log = AuditLog::Open(dir_, nullptr, "site-b", std::nullopt);
  EXPECT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AuditLogTest, OpenRefusesAMissingCheckpointsFile) {
  Append(2);
  ASSERT_EQ(::unlink(ck_path().c_str()), 0);
  absl::StatusOr<std::unique_ptr<AuditLog>> log =
      AuditLog::Open(dir_, &site_, "site-b", std::nullopt);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  // And creates nothing that a later open would take for a fresh start.
  EXPECT_NE(::access(ck_path().c_str(), F_OK), 0);
}

TEST_F(AuditLogTest, InterruptedAppendIsCutOffOnOpen) {
  Append(3);
  const Bytes good_log = ReadBytes(log_path());
  const std::string good_cks = ReadText(ck_path());
  // A crash after the entry was written, in the middle of its checkpoint.
  Bytes log = good_log;
  const Bytes extra = Frame(EncodeAuditEntry(SampleRecord(3)));
  log.insert(log.end(), extra.begin(), extra.end());
  WriteBytes(log_path(), log);
  WriteText(ck_path(), good_cks + "bunker audit checkpoint v1\nsite site-b\nsi");
  ExpectNamesEntry(3);  // an auditor sees the unsigned entry

  std::unique_ptr<AuditLog> opened = OpenLog();
  ASSERT_NE(opened, nullptr);
  EXPECT_EQ(opened->size(), 3u);
  EXPECT_EQ(ReadBytes(log_path()), good_log);
  EXPECT_EQ(ReadText(ck_path()), good_cks);
  EXPECT_TRUE(Verify().ok());

  // A file system that, after the crash, shows zeros where the checkpoint was being written.
  WriteBytes(log_path(), log);
  WriteText(ck_path(), good_cks + std::string(540, '\0'));
  opened = OpenLog();
  ASSERT_NE(opened, nullptr);
  EXPECT_EQ(ReadBytes(log_path()), good_log);
  EXPECT_EQ(ReadText(ck_path()), good_cks);

  // A crash in the middle of the entry itself.
  log = good_log;
  log.insert(log.end(), extra.begin(), extra.begin() + 10);
  WriteBytes(log_path(), log);
  opened = OpenLog();
  ASSERT_NE(opened, nullptr);
  EXPECT_EQ(ReadBytes(log_path()), good_log);
  ASSERT_TRUE(opened->Append(SampleRecord(3), 5).ok());
  EXPECT_TRUE(Verify().ok());
}

TEST_F(AuditLogTest, MoreThanOneUnsignedEntryIsNotACrash) {
  Append(3);
  Bytes log = ReadBytes(log_path());
  for (int i = 3; i < 5; ++i) {
    const Bytes extra = Frame(EncodeAuditEntry(SampleRecord(i)));
    log.insert(log.end(), extra.begin(), extra.end());
  }
  WriteBytes(log_path(), log);
  absl::StatusOr<std::unique_ptr<AuditLog>> opened =
      AuditLog::Open(dir_, &site_, "site-b", std::nullopt);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadBytes(log_path()), log);  // nothing was cut
}

TEST_F(AuditLogTest, AppendCatchesATamperingWhileOpen) {
  std::unique_ptr<AuditLog> log = OpenLog();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Append(SampleRecord(0), 1).ok());
  ASSERT_TRUE(log->Append(SampleRecord(1), 2).ok());
  const Bytes bytes = ReadBytes(log_path());
  WriteBytes(log_path(), Bytes(bytes.begin(), bytes.begin() + 20));
  absl::StatusOr<Checkpoint> c = log->Append(SampleRecord(2), 3);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(AuditLogTest, OversizedRecordIsRefusedAndNothingWritten) {
  std::unique_ptr<AuditLog> log = OpenLog();
  ASSERT_NE(log, nullptr);
  AuditRecord big = SampleRecord(0);
  big.purpose.assign(kMaxAuditEntrySize, 'x');
  absl::StatusOr<Checkpoint> c = log->Append(big, 1);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(log->size(), 0u);
  EXPECT_TRUE(ReadBytes(log_path()).empty());
  EXPECT_TRUE(ReadBytes(ck_path()).empty());
}

// --- Tampering, one class per test; each names the first bad entry --------------------------

class AuditTamperTest : public AuditLogTest {
 protected:
  void SetUp() override {
    checkpoints_ = Append(8);
    ASSERT_EQ(checkpoints_.size(), 8u);
    ASSERT_TRUE(Verify().ok());
    log_ = ReadBytes(log_path());
    cks_ = ReadText(ck_path());
    entries_ = SplitLog(log_);
    ASSERT_EQ(entries_.size(), 8u);
  }
  void Restore() {
    WriteBytes(log_path(), log_);
    WriteText(ck_path(), cks_);
  }
  // The offset of entry k's length prefix in the log.
  size_t OffsetOf(size_t k) const {
    size_t off = 0;
    for (size_t i = 0; i < k; ++i) off += 4 + entries_[i].size();
    return off;
  }

  std::vector<Checkpoint> checkpoints_;
  Bytes log_;
  std::string cks_;
  std::vector<Bytes> entries_;
};

TEST_F(AuditTamperTest, FlippedByteInAnyEntry) {
  for (size_t k = 0; k < entries_.size(); ++k) {
    const size_t begin = OffsetOf(k), end = begin + 4 + entries_[k].size();
    // Every byte of one entry, and a sample (prefix, first, middle, last) of the others.
    std::set<size_t> at;
    if (k == 3) {
      for (size_t i = begin; i < end; ++i) at.insert(i);
    } else {
      at = {begin, begin + 3, begin + 4, (begin + end) / 2, end - 1};
    }
    for (size_t i : at) {
      Bytes bad = log_;
      bad[i] ^= 0x04;
      WriteBytes(log_path(), bad);
      SCOPED_TRACE(absl::StrCat("entry ", k, " byte ", i - begin));
      ExpectNamesEntry(k);
    }
  }
}

TEST_F(AuditTamperTest, DeletedEntry) {
  for (size_t k : {0, 3, 7}) {
    std::vector<Bytes> e = entries_;
    e.erase(e.begin() + static_cast<long>(k));
    WriteBytes(log_path(), JoinLog(e));
    SCOPED_TRACE(k);
    ExpectNamesEntry(k);
  }
}

TEST_F(AuditTamperTest, ReorderedEntries) {
  std::vector<Bytes> e = entries_;
  std::swap(e[2], e[5]);
  WriteBytes(log_path(), JoinLog(e));
  ExpectNamesEntry(2);
}

TEST_F(AuditTamperTest, InsertedEntry) {
  std::vector<Bytes> e = entries_;
  e.insert(e.begin() + 4, EncodeAuditEntry(SampleRecord(50)));
  WriteBytes(log_path(), JoinLog(e));
  ExpectNamesEntry(4);
  // Appended at the end, where no checkpoint covers it.
  e = entries_;
  e.push_back(EncodeAuditEntry(SampleRecord(50)));
  WriteBytes(log_path(), JoinLog(e));
  ExpectNamesEntry(8);
}

TEST_F(AuditTamperTest, ForgedEntry) {
  // A deny rewritten as a permit, in valid canonical form.
  AuditRecord r = *DecodeAuditEntry(entries_[5]);
  ASSERT_EQ(r.decision, "deny");
  r.decision = "permit";
  std::vector<Bytes> e = entries_;
  e[5] = EncodeAuditEntry(r);
  WriteBytes(log_path(), JoinLog(e));
  ExpectNamesEntry(5);

  // The forger also re-signs the checkpoints from there on, with a key of their own.
  const crypto::Identity mallory = crypto::Identity::Generate();
  std::vector<std::string> blocks = SplitCheckpoints(cks_);
  crypto::MerkleTreeBuilder tree;
  for (size_t i = 0; i < e.size(); ++i) {
    tree.AddLeafHash(crypto::MerkleLeafHash(e[i]));
    if (i < 5) continue;
    Checkpoint c = *Checkpoint::Parse(blocks[i]);
    c.root = tree.Root();
    const std::string text = c.SignedText();
    c.signature = mallory.Sign(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    blocks[i] = c.Encode();
  }
  WriteText(ck_path(), JoinCheckpoints(blocks));
  ExpectNamesEntry(5);
  absl::Status s = Verify();
  EXPECT_THAT(s.message(), HasSubstr("does not verify under the site key"));
}

TEST_F(AuditTamperTest, ForgedEntryAppendedWithACheckpoint) {
  const crypto::Identity mallory = crypto::Identity::Generate();
  std::vector<Bytes> e = entries_;
  e.push_back(EncodeAuditEntry(SampleRecord(60)));
  crypto::MerkleTreeBuilder tree;
  for (const Bytes& b : e) tree.AddLeafHash(crypto::MerkleLeafHash(b));
  Checkpoint c = checkpoints_.back();
  c.size = 9;
  c.root = tree.Root();
  const std::string text = c.SignedText();
  c.signature =
      mallory.Sign(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  WriteBytes(log_path(), JoinLog(e));
  WriteText(ck_path(), cks_ + c.Encode());
  ExpectNamesEntry(8);
}

TEST_F(AuditTamperTest, Truncation) {
  // At an entry boundary: the checkpoints still cover the lost entries.
  WriteBytes(log_path(), Bytes(log_.begin(), log_.begin() + static_cast<long>(OffsetOf(5))));
  ExpectNamesEntry(5);
  EXPECT_THAT(Verify().message(), HasSubstr("missing"));
  // Inside an entry.
  WriteBytes(log_path(), Bytes(log_.begin(), log_.begin() + static_cast<long>(OffsetOf(5) + 9)));
  ExpectNamesEntry(5);
  // Both files cut back consistently: only a trusted newer checkpoint shows it.
  const std::vector<std::string> blocks = SplitCheckpoints(cks_);
  WriteBytes(log_path(), Bytes(log_.begin(), log_.begin() + static_cast<long>(OffsetOf(5))));
  WriteText(ck_path(), JoinCheckpoints({blocks.begin(), blocks.begin() + 5}));
  EXPECT_TRUE(Verify().ok());
  ExpectNamesEntry(5, checkpoints_.back());
  // A torn checkpoints file.
  Restore();
  WriteText(ck_path(), cks_.substr(0, cks_.size() - 10));
  ExpectNamesEntry(7);
}

TEST_F(AuditTamperTest, ReplacedByAnOlderCopy) {
  // The site keeps appending; the attacker puts back the copy of 8 entries.
  const std::vector<Checkpoint> newer = Append(4, 8);
  ASSERT_EQ(newer.size(), 4u);
  EXPECT_TRUE(Verify(checkpoints_[3]).ok());
  Restore();
  EXPECT_TRUE(Verify().ok());         // undetectable without a newer checkpoint
  ExpectNamesEntry(8, newer.back());  // detected with one
  EXPECT_THAT(Verify(newer.back()).message(), HasSubstr("older copy"));
}

TEST_F(AuditTamperTest, ForkedHistoryAgainstTheTrustedCheckpoint) {
  // The same key signs a different history of the same length elsewhere.
  const std::string other = TempDir();
  std::vector<Checkpoint> fork;
  {
    absl::StatusOr<std::unique_ptr<AuditLog>> log =
        AuditLog::Open(other, &site_, "site-b", std::nullopt);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 8; ++i) fork.push_back(*(*log)->Append(SampleRecord(i + 30), 1));
  }
  absl::Status s = Verify(fork[6]);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("two different histories"));
  // A trusted checkpoint that does not verify is refused before anything else.
  Checkpoint bad = checkpoints_[3];
  bad.time += 1;
  EXPECT_EQ(Verify(bad).code(), absl::StatusCode::kDataLoss);
}

TEST_F(AuditTamperTest, AlteredCheckpoint) {
  std::vector<std::string> blocks = SplitCheckpoints(cks_);
  // A root that is not the tree's.
  std::string b = blocks[3];
  const size_t root = b.find("root ") + 5;
  b[root] = b[root] == '0' ? '1' : '0';
  blocks[3] = b;
  WriteText(ck_path(), JoinCheckpoints(blocks));
  ExpectNamesEntry(3);
  // A flipped signature.
  blocks = SplitCheckpoints(cks_);
  b = blocks[6];
  const size_t sig = b.find("sig ") + 4;
  b[sig] = b[sig] == '0' ? '1' : '0';
  blocks[6] = b;
  WriteText(ck_path(), JoinCheckpoints(blocks));
  ExpectNamesEntry(6);
  // A malformed one.
  blocks = SplitCheckpoints(cks_);
  blocks[2].replace(blocks[2].find("size "), 5, "SIZE ");
  WriteText(ck_path(), JoinCheckpoints(blocks));
  ExpectNamesEntry(2);
  // Two checkpoints swapped: entries 1..4 match the (genuine) checkpoint of size 5 that now
  // comes second; what follows it is out of order.
  blocks = SplitCheckpoints(cks_);
  std::swap(blocks[1], blocks[4]);
  WriteText(ck_path(), JoinCheckpoints(blocks));
  ExpectNamesEntry(5);
  // A deleted one is harmless in itself (the next checkpoint covers both entries)...
  blocks = SplitCheckpoints(cks_);
  blocks.erase(blocks.begin() + 4);
  WriteText(ck_path(), JoinCheckpoints(blocks));
  EXPECT_TRUE(Verify().ok());
}

// --- Proofs ----------------------------------------------------------------------------------

class AuditProofTest : public AuditLogTest {};

TEST_F(AuditProofTest, InclusionAndConsistencyProofsVerifyAgainstCheckpoints) {
  const std::vector<Checkpoint> cps = Append(13);
  const std::vector<Bytes> entries = SplitLog(ReadBytes(log_path()));
  std::vector<crypto::Sha256Digest> leaves;
  for (const Bytes& e : entries) leaves.push_back(crypto::MerkleLeafHash(e));
  const crypto::LeafHashFetcher memory = [&leaves](uint64_t i) { return leaves[i]; };
  for (uint64_t size = 1; size <= cps.size(); ++size) {
    const Checkpoint& cp = cps[size - 1];
    for (uint64_t index = 0; index < size; ++index) {
      absl::StatusOr<InclusionProof> p = ProveInclusion(log_path(), index, size);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_EQ(p->root, cp.root);
      EXPECT_EQ(p->leaf, leaves[index]);
      EXPECT_TRUE(crypto::VerifyInclusion(index, size, p->leaf, p->path, cp.root));
      EXPECT_EQ(p->path, *crypto::InclusionProof(index, size, memory));
    }
    for (uint64_t old_size = 0; old_size <= size; ++old_size) {
      absl::StatusOr<ConsistencyProof> p = ProveConsistency(log_path(), old_size, size);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_EQ(p->new_root, cp.root);
      if (old_size > 0) {
        EXPECT_EQ(p->old_root, cps[old_size - 1].root);
      }
      EXPECT_TRUE(crypto::VerifyConsistency(old_size, size, p->old_root, cp.root, p->path));
      EXPECT_EQ(p->path, *crypto::ConsistencyProof(old_size, size, memory));
    }
  }
}

TEST_F(AuditProofTest, LargeLogProofsMatchTheInMemoryTree) {
  // More than one offset sample; written directly (proofs need no checkpoints).
  std::vector<Bytes> entries;
  std::vector<crypto::Sha256Digest> leaves;
  for (int i = 0; i < 2600; ++i) {
    entries.push_back(EncodeAuditEntry(SampleRecord(i)));
    leaves.push_back(crypto::MerkleLeafHash(entries.back()));
  }
  WriteBytes(log_path(), JoinLog(entries));
  const crypto::LeafHashFetcher memory = [&leaves](uint64_t i) { return leaves[i]; };
  for (auto [index, size] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 2600}, {1023, 2600}, {1024, 2049}, {2599, 2600}, {1500, 1501}}) {
    absl::StatusOr<InclusionProof> p = ProveInclusion(log_path(), index, size);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->path, *crypto::InclusionProof(index, size, memory));
  }
  absl::StatusOr<ConsistencyProof> c = ProveConsistency(log_path(), 1025, 2600);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->path, *crypto::ConsistencyProof(1025, 2600, memory));
}

TEST_F(AuditProofTest, RefusesOutOfRangeRequests) {
  Append(3);
  EXPECT_EQ(ProveInclusion(log_path(), 3, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ProveInclusion(log_path(), 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ProveConsistency(log_path(), 3, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ProveInclusion(dir_ + "/nothing.log", 0, 1).status().code(),
            absl::StatusCode::kNotFound);
}

// Regression: a checkpoint larger than the log (the log truncated or rolled back since it was
// signed) was an invalid argument (exit 3), as if the auditor had asked for something wrong.
TEST_F(AuditProofTest, ALogShorterThanTheCheckpointIsDataLoss) {
  Append(3);
  for (const absl::Status& s : {ProveInclusion(log_path(), 0, 4).status(),
                                ProveConsistency(log_path(), 1, 4).status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("has only 3 entries, fewer than 4"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("truncated or rolled back"));
  }
}

// --- Export and filters ----------------------------------------------------------------------

TEST(AuditExportTest, JsonLine) {
  AuditRecord r = SampleRecord(0);
  r.purpose = "say \"hi\"\n\x1b[2J\xff\x7f";
  EXPECT_EQ(AuditRecordToJson(7, r),
            "{\"index\": 7, \"time\": 1700000000, \"timeUtc\": \"2023-11-14T22:13:20Z\", "
            "\"event\": \"open\", \"decision\": \"permit\", "
            "\"capsuleId\": \"0123456789abcdef0123456789abcd10\", "
            "\"issuer\": \"bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa\", \"site\": \"site-b\", "
            "\"requester\": \"bk1:bbbbbbbbbbbbbbbbbbbbbbbbba\", "
            "\"purpose\": \"say \\\"hi\\\"\\n\\u001b[2J\xEF\xBF\xBD\\u007f\", "
            "\"paths\": [\"train/**\"], \"rules\": [\"train\"], \"reasons\": [\"reason 0\"], "
            "\"uses\": 0, \"uid\": null, \"pid\": null}");
  // Valid multi-byte UTF-8 passes through; truncated or overlong sequences do not.
  AuditRecord u;
  u.purpose = "caf\xC3\xA9 \xE2\x82\xAC \xC3 \xC0\xAF \xED\xA0\x80 \xC2\x9B";
  EXPECT_THAT(AuditRecordToJson(0, u),
              HasSubstr("\"purpose\": \"caf\xC3\xA9 \xE2\x82\xAC \xEF\xBF\xBD \xEF\xBF\xBD\xEF"
                        "\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \\u009b\""));
}

TEST(AuditExportTest, CsvRow) {
  EXPECT_EQ(AuditCsvHeader(),
            "index,time,timeUtc,event,decision,capsuleId,issuer,site,requester,purpose,paths,"
            "rules,reasons,uses,uid,pid");
  AuditRecord r = SampleRecord(2);
  r.purpose = "=HYPERLINK(\"http://x\"), really";
  r.reasons = {"a, b", "line\nbreak"};
  EXPECT_EQ(AuditRecordToCsv(2, r),
            "2,1700000120,2023-11-14T22:15:20Z,\"open\",\"deny\","
            "\"0123456789abcdef0123456789abcd12\",\"bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa\",\"site-b\","
            "\"bk1:bbbbbbbbbbbbbbbbbbbbbbbbba\",\"'=HYPERLINK(\"\"http://x\"\"), really\","
            "\"[\"\"train/**\"\"]\",\"[\"\"no-pii\"\"]\",\"[\"\"a, b\"\", \"\"line\\nbreak\"\"]\","
            "0,,");
  r.purpose = "-1+2";
  EXPECT_THAT(AuditRecordToCsv(2, r), HasSubstr(",\"'-1+2\","));
}

TEST(AuditExportTest, Filter) {
  const AuditRecord r = SampleRecord(2);  // deny, time 1700000120, requester bk1:bbb...a
  EXPECT_TRUE(AuditFilter{}.Matches(r));
  AuditFilter f;
  f.decision = "deny";
  EXPECT_TRUE(f.Matches(r));
  f.decision = "permit";
  EXPECT_FALSE(f.Matches(r));
  f = {};
  f.capsule_id = "0123456789ABCDEF0123456789ABCD12";
  EXPECT_TRUE(f.Matches(r));
  f.capsule_id = "0123456789abcdef0123456789abcd13";
  EXPECT_FALSE(f.Matches(r));
  f = {};
  f.requester = "BK1:BBBBBBBBBBBBBBBBBBBBBBBBBA";  // the same fingerprint, other case
  EXPECT_TRUE(f.Matches(r));
  f.requester = "bk1:bbbbbbbbbbbbbbbbbbbbbbbbbb";  // not the canonical spelling of anyone here
  EXPECT_FALSE(f.Matches(r));
  f = {};
  f.since = 1700000120;
  f.until = 1700000120;
  EXPECT_TRUE(f.Matches(r));
  f.since = 1700000121;
  EXPECT_FALSE(f.Matches(r));
  f.since.reset();
  f.until = 1700000119;
  EXPECT_FALSE(f.Matches(r));
}

TEST_F(AuditLogTest, ReadLatestCheckpointRejectsATornTail) {
  const std::vector<Checkpoint> cps = Append(2);
  const std::string text = ReadText(ck_path());
  WriteText(ck_path(), text.substr(0, text.size() - 3));
  EXPECT_EQ(ReadLatestCheckpoint(log_path()).status().code(), absl::StatusCode::kDataLoss);
  WriteText(ck_path(), text);
  EXPECT_EQ(ReadLatestCheckpoint(log_path())->Encode(), cps.back().Encode());
  EXPECT_EQ(AuditCheckpointsPath("/x/audit.log"), "/x/audit.checkpoints");
  EXPECT_EQ(AuditCheckpointsPath("/x/copy"), "/x/copy.checkpoints");
}

// --- spec/AUDIT.md "Example" -------------------------------------------------------------------

namespace example {

crypto::Identity SiteKey() {
  std::vector<uint8_t> seed(32), scalar(32);
  for (int i = 0; i < 32; ++i) {
    seed[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
    scalar[static_cast<size_t>(i)] = static_cast<uint8_t>(0x20 + i);
  }
  return *crypto::Identity::FromSecrets(seed, scalar);
}

AuditRecord First() {
  AuditRecord r;
  r.time = 1714521600;  // 2024-05-01T00:00:00Z
  r.decision = "permit";
  r.capsule_id = "00112233445566778899aabbccddeeff";
  r.issuer = "bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa";
  r.site = "site-b";
  r.requester = "bk1:bbbbbbbbbbbbbbbbbbbbbbbbba";
  r.purpose = "training";
  r.paths = {"train/**"};
  r.rules = {"train"};
  r.reasons = {"rule train permits"};
  return r;
}

AuditRecord Second() {
  AuditRecord r;
  r.time = 1714525200;
  r.decision = "deny";
  r.capsule_id = "00112233445566778899aabbccddeeff";
  r.issuer = "bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa";
  r.site = "site-b";
  r.purpose = "marketing";
  r.paths = {"**"};
  r.reasons = {"no rule permits purpose \"marketing\""};
  return r;
}

}  // namespace example

TEST(AuditSpecTest, ExampleMatchesAuditMd) {
  const Bytes a = EncodeAuditEntry(example::First());
  const Bytes b = EncodeAuditEntry(example::Second());
  const crypto::Sha256Digest la = crypto::MerkleLeafHash(a), lb = crypto::MerkleLeafHash(b);
  crypto::MerkleTreeBuilder tree;
  tree.AddLeafHash(la);
  tree.AddLeafHash(lb);
  Checkpoint c;
  c.site = "site-b";
  c.size = 2;
  c.root = tree.Root();
  c.time = 1714525201;
  const crypto::Identity key = example::SiteKey();
  const std::string text = c.SignedText();
  c.signature =
      key.Sign(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  // The same values as spec/AUDIT.md "Example", which were checked there with Python's hashlib
  // and `openssl pkeyutl`, and the entries with `capnp convert text:canonical`.
  EXPECT_EQ(crypto::ToHex(a),
            "0000000001000a000086316600000000250000002a000000250000003a000000250000000a010000"
            "35000000fa000000410000003a00000041000000fa0000004d0000004a000000510000000e000000"
            "590000000e0000005d0000000e0000006f70656e000000007065726d697400003030313132323333"
            "3434353536363737383839396161626263636464656566660000000000000000626b313a61616161"
            "616161616161616161616161616161616161616161610000736974652d620000626b313a62626262"
            "626262626262626262626262626262626262626262610000747261696e696e670000000000000000"
            "010000004a000000747261696e2f2a2a00000000000000000100000032000000747261696e000000"
            "010000009a00000072756c6520747261696e207065726d697473000000000000");
  EXPECT_EQ(crypto::ToHex(b),
            "0000000001000a001094316600000000250000002a000000250000002a000000250000000a010000"
            "35000000fa000000410000003a00000000000000000000003d00000052000000410000000e000000"
            "0000000000000000410000000e0000006f70656e0000000064656e79000000003030313132323333"
            "3434353536363737383839396161626263636464656566660000000000000000626b313a61616161"
            "616161616161616161616161616161616161616161610000736974652d6200006d61726b6574696e"
            "6700000000000000010000001a0000002a2a00000000000001000000220100006e6f2072756c6520"
            "7065726d69747320707572706f736520226d61726b6574696e67220000000000");
  EXPECT_EQ(crypto::ToHex(la), "de44045e4fa1d5c4212b2df76bbec1870cb80015c1611f11421c12893a00e7c0");
  EXPECT_EQ(crypto::ToHex(lb), "277e4c5e135a735556241cb1120b9a41c6880b09c732358935f9d417682c48ed");
  EXPECT_EQ(crypto::ToHex(key.public_identity().sign_key),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8");
  EXPECT_EQ(c.Encode(),
            "bunker audit checkpoint v1\n"
            "site site-b\n"
            "size 2\n"
            "root 9d9c1eec1851a375ac9992d44eb0c8ae3d28d438eb367b8ed01283e234b96050\n"
            "time 1714525201\n"
            "sig 2d4decb46426ba7234509ffffa1e7369c7e87801e5ba9bfdb1e50d2ec7f12d9e"
            "8c6f3dcce1f589a00735022ba43f099b16ad59709a2de8de55fb125a9e26f709\n");
  EXPECT_TRUE(c.Verify(key.public_identity()).ok());
  // And the library's own log produces exactly these bytes.
  const std::string dir = TempDir();
  absl::StatusOr<std::unique_ptr<AuditLog>> log = AuditLog::Open(dir, &key, "site-b", {});
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE((*log)->Append(example::First(), 1714521601).ok());
  absl::StatusOr<Checkpoint> second = (*log)->Append(example::Second(), 1714525201);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->Encode(), c.Encode());
  Bytes file = Frame(a);
  const Bytes fb = Frame(b);
  file.insert(file.end(), fb.begin(), fb.end());
  EXPECT_EQ(ReadBytes(dir + "/audit.log"), file);
  EXPECT_EQ(crypto::ToHex(Bytes(file.begin(), file.begin() + 4)), "00000138");
}

}  // namespace
}  // namespace bunker::verifier

// Tests of verifier/audit_report.h: the figures, the escaping, the script's hash, fail-closed.
#include "verifier/audit_report.h"

#include <unistd.h>

#include <fstream>
#include <iterator>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace bunker::verifier {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kImg[] = "<img src=x onerror=alert(1)>";
constexpr char kBreakOut[] = "</script><script>window.__pwned=1</script><!--";

std::string TempDir() {
  return bunker::test_temp::MakeTempDir("report");
}

size_t Count(std::string_view hay, std::string_view needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string_view::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

AuditRecord Rec(int64_t time, std::string event, std::string decision, std::string capsule,
                std::string requester, std::string purpose, std::vector<std::string> reasons,
                int8_t uses = 0) {
  AuditRecord r;
  r.time = time;
  r.event = std::move(event);
  r.decision = std::move(decision);
  r.capsule_id = std::move(capsule);
  r.requester = std::move(requester);
  r.purpose = std::move(purpose);
  r.reasons = std::move(reasons);
  r.uses = uses;
  r.paths = {"train/**"};
  return r;
}

class AuditReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_a_ = TempDir();
    dir_b_ = TempDir();
    const std::string fa = site_a_.fingerprint().ToString();
    const std::string fb = site_b_.fingerprint().ToString();
    Append(dir_a_, site_a_, "site-a", Rec(1000, "sent", "permit", kId, fb, "", {"to b"}));
    Append(dir_b_, site_b_, "site-b", Rec(1010, "received", "permit", kId, fa, "", {"from a"}));
    Append(dir_b_, site_b_, "site-b",
           Rec(1020, "open", "permit", kId, "bk1:alice", "training", {"rule t"}, 1));
    Append(dir_b_, site_b_, "site-b",
           Rec(1030, "open", "permit", kId, "bk1:alice", kImg, {"rule t"}, 1));
    Append(dir_b_, site_b_, "site-b",
           Rec(1040, "open", "deny", kId, "bk1:alice", kBreakOut, {"purpose not allowed"}));
    Append(dir_b_, site_b_, "site-b",
           Rec(5000, "open", "deny", kId, "bk1:bob", "ads",
               {"purpose not allowed", "requester not allowed", "purpose not allowed"}));
    Append(dir_b_, site_b_, "site-b",
           Rec(5010, "release-failed", "failed", kId, "bk1:alice", "training", {"disk full"}, -1));
  }

  void Append(const std::string& dir, const crypto::Identity& key, const std::string& site,
              const AuditRecord& r) {
    absl::StatusOr<std::unique_ptr<AuditLog>> log = AuditLog::Open(dir, &key, site, std::nullopt);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE((*log)->Append(r, r.time).ok());
  }

  std::vector<ReportLogInput> Inputs() {
    return {{dir_a_ + "/audit.log", "a.pub", site_a_.public_identity(), "", std::nullopt, ""},
            {dir_b_ + "/audit.log", "b.pub", site_b_.public_identity(), "", std::nullopt, ""}};
  }

  std::string ForgedLogOfB();

  std::string Html(const AuditReport& rep) {
    capsule::MemorySink sink;
    absl::Status s = WriteAuditReportHtml(rep, &sink);
    EXPECT_TRUE(s.ok()) << s;
    return std::string(sink.bytes.begin(), sink.bytes.end());
  }

  static constexpr char kId[] = "00112233445566778899aabbccddeeff";
  crypto::Identity site_a_ = crypto::Identity::Generate();
  crypto::Identity site_b_ = crypto::Identity::Generate();
  std::string dir_a_, dir_b_;
};

TEST_F(AuditReportTest, FiguresAreCountsOverTheVerifiedEntries) {
  absl::StatusOr<AuditReport> rep = BuildAuditReport(Inputs(), 9999);
  ASSERT_TRUE(rep.ok()) << rep.status();
  ASSERT_EQ(rep->sites.size(), 2u);
  EXPECT_EQ(rep->sites[0].name, "site-a");
  EXPECT_EQ(rep->sites[1].entries, 6u);
  EXPECT_EQ(rep->sites[1].checkpoints, 6u);
  EXPECT_EQ(rep->total, 7u);
  EXPECT_EQ(rep->by_decision.at("permit"), 4u);
  EXPECT_EQ(rep->by_decision.at("deny"), 2u);
  EXPECT_EQ(rep->by_decision.at("failed"), 1u);
  // A reason listed twice in one entry counts once.
  EXPECT_EQ(rep->denial_reasons.at("purpose not allowed"), 2u);
  EXPECT_EQ(rep->denial_reasons.at("requester not allowed"), 1u);
  const ReportCapsule& c = rep->capsules.at(kId);
  EXPECT_EQ(c.kinds.at(0).at("sent"), 1u);
  EXPECT_EQ(c.kinds.at(1).at("received"), 1u);
  EXPECT_EQ(c.kinds.at(1).at("opened"), 2u);
  EXPECT_EQ(c.kinds.at(1).at("denied"), 2u);
  EXPECT_EQ(c.kinds.at(1).at("release-failed"), 1u);
  EXPECT_EQ(c.uses.at(1), 1);  // two uses, one refunded
  EXPECT_EQ(c.history.size(), 7u);
  EXPECT_EQ(c.transfers.size(), 2u);
  const ReportRequester& q = rep->requesters.at({"bk1:alice", "training"});
  EXPECT_EQ(q.permits, 1u);
  EXPECT_EQ(q.opened.count(kId), 1u);
  EXPECT_EQ(rep->requesters.at({"bk1:bob", "ads"}).denies, 1u);
  // Hours 0 and 1: the timeline's buckets.
  EXPECT_EQ(rep->hours.at(0).first, 4u);
  EXPECT_EQ(rep->hours.at(1).second, 1u);
}

TEST_F(AuditReportTest, PageEscapesEveryLogTextAndRunsOnlyItsOwnScript) {
  absl::StatusOr<AuditReport> rep = BuildAuditReport(Inputs(), 9999);
  ASSERT_TRUE(rep.ok()) << rep.status();
  const std::string html = Html(*rep);
  EXPECT_THAT(html, Not(HasSubstr(kImg)));
  EXPECT_THAT(html, Not(HasSubstr("<img")));
  EXPECT_THAT(html, Not(HasSubstr("window.__pwned=1</script>")));
  EXPECT_THAT(html, Not(HasSubstr("<!--")));
  EXPECT_EQ(Count(html, "<script"), 2u);
  EXPECT_EQ(Count(html, "</script>"), 2u);
  // Shown as text in the summary, and carried as escaped JSON to the table.
  EXPECT_THAT(html, HasSubstr("&lt;img src=x onerror=alert(1)&gt;"));
  EXPECT_THAT(html, HasSubstr("\\u003c/script\\u003e\\u003cscript\\u003ewindow.__pwned=1"));
  // Nothing is loaded from anywhere.
  EXPECT_THAT(html, Not(HasSubstr("http://")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  EXPECT_THAT(html, Not(HasSubstr("<link")));
  EXPECT_THAT(html, Not(HasSubstr("<iframe")));
  EXPECT_THAT(html, Not(HasSubstr("url(")));
}

TEST_F(AuditReportTest, ContentSecurityPolicyAdmitsExactlyThePageScript) {
  absl::StatusOr<AuditReport> rep = BuildAuditReport(Inputs(), 9999);
  ASSERT_TRUE(rep.ok());
  const std::string html = Html(*rep);
  const size_t open = html.rfind("<script>");
  const size_t close = html.rfind("</script>");
  ASSERT_NE(open, std::string::npos);
  const std::string script = html.substr(open + 8, close - open - 8);
  EXPECT_EQ(script, ReportScript());
  const crypto::Sha256Digest h = crypto::Sha256::Hash(script);
  const std::string want = absl::StrCat(
      "script-src 'sha256-",
      absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(h.data()), h.size())),
      "'");
  EXPECT_THAT(ReportContentSecurityPolicy(), HasSubstr(want));
  EXPECT_THAT(ReportContentSecurityPolicy(), HasSubstr("default-src 'none'"));
  EXPECT_THAT(html, HasSubstr(ReportContentSecurityPolicy()));
}

TEST_F(AuditReportTest, JourneyMatchesTheSendToTheReceiptByKeys) {
  absl::StatusOr<AuditReport> rep = BuildAuditReport(Inputs(), 9999);
  ASSERT_TRUE(rep.ok());
  const std::string html = Html(*rep);
  EXPECT_THAT(html, HasSubstr("data-site=\"site-a\" data-step=\"sent\" data-peer=\"site-b\""));
  EXPECT_THAT(html,
              HasSubstr("data-site=\"site-b\" data-step=\"received\" data-peer=\"site-a\""));
  EXPECT_THAT(html, HasSubstr("data-step=\"use\" data-opened=\"2\" data-denied=\"2\""));
  EXPECT_THAT(html, Not(HasSubstr("no receipt in")));
}

TEST_F(AuditReportTest, SendWithoutReceiptIsFlagged) {
  std::vector<ReportLogInput> in = Inputs();
  // B's log without its receipt: a fresh B log holding only an open.
  const std::string other = TempDir();
  Append(other, site_b_, "site-b", Rec(1020, "open", "permit", kId, "bk1:alice", "t", {}, 1));
  in[1].log_path = other + "/audit.log";
  absl::StatusOr<AuditReport> rep = BuildAuditReport(in, 9999);
  ASSERT_TRUE(rep.ok());
  EXPECT_THAT(Html(*rep), HasSubstr("no receipt in site-b's log"));
}

TEST(AuditReportText, HtmlTextEscapesMarkupControlsAndBidi) {
  EXPECT_EQ(ReportHtmlText("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(ReportHtmlText("evil \x1b[2J \xe2\x80\xae \xff"), "evil \\x1b[2J \\u202e \\xff");
}

TEST(AuditReportText, ScriptSafeJsonCannotEndTheDataBlock) {
  EXPECT_EQ(ReportScriptSafeJson("\"</script><!--&\xe2\x80\xa8\xe2\x80\xa9\""),
            "\"\\u003c/script\\u003e\\u003c!--\\u0026\\u2028\\u2029\"");
}

TEST_F(AuditReportTest, TamperedLogWritesNoReport) {
  const std::string log = dir_b_ + "/audit.log";
  std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
  // Flipped, not overwritten with a fixed value that may already be there.
  f.seekg(40);
  const int was = f.get();
  ASSERT_NE(was, EOF);
  f.seekp(40);
  f.put(static_cast<char>(was ^ 0x01));
  f.close();
  absl::StatusOr<AuditReport> rep = BuildAuditReport(Inputs(), 9999);
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(rep.status().message(), HasSubstr(log));
}

TEST_F(AuditReportTest, LogChangedAfterVerificationFailsTheWrite) {
  absl::StatusOr<AuditReport> rep = BuildAuditReport(Inputs(), 9999);
  ASSERT_TRUE(rep.ok());
  // Another B log of the same length in its place: same entries, one purpose changed.
  const std::string other = TempDir();
  Append(other, site_b_, "site-b", Rec(1010, "received", "permit", kId, "x", "", {"from a"}));
  rep->sites[1].log_path = other + "/audit.log";
  rep->sites[1].entries = 1;
  capsule::MemorySink sink;
  absl::Status s = WriteAuditReportHtml(*rep, &sink);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("not the one that was verified"));
}

// Another log of B's length, written by someone without B's key: what an attacker puts in place
// of the verified log while the report reads it.
std::string AuditReportTest::ForgedLogOfB() {
  const std::string dir = TempDir();
  const crypto::Identity forger = crypto::Identity::Generate();
  for (int i = 0; i < 6; ++i) {
    Append(dir, forger, "site-b", Rec(2000 + i, "open", "permit", kId, "bk1:mallory", "forged", {}));
  }
  return dir + "/audit.log";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST_F(AuditReportTest, LogRenamedOverAfterVerificationWritesNoReport) {
  absl::StatusOr<AuditReport> rep = VerifyReportLogs(Inputs(), 9999);
  ASSERT_TRUE(rep.ok()) << rep.status();
  ASSERT_EQ(rep->sites[1].entries, 6u);
  // The swap a delayed second open lets through: the same number of entries, other content.
  const std::string log = dir_b_ + "/audit.log";
  ASSERT_EQ(::rename(ForgedLogOfB().c_str(), log.c_str()), 0);
  absl::Status s = GatherReportFigures(&*rep);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(log));
  EXPECT_THAT(s.message(), HasSubstr("not the one that was verified"));
}

TEST_F(AuditReportTest, LogRewrittenInPlaceAfterVerificationWritesNoReport) {
  absl::StatusOr<AuditReport> rep = VerifyReportLogs(Inputs(), 9999);
  ASSERT_TRUE(rep.ok()) << rep.status();
  // The same file (inode) given other bytes: an open descriptor would read them too.
  const std::string log = dir_b_ + "/audit.log";
  const std::string forged = ReadAll(ForgedLogOfB());
  std::ofstream(log, std::ios::binary | std::ios::trunc) << forged;
  absl::Status s = GatherReportFigures(&*rep);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("not the one that was verified"));
}

TEST_F(AuditReportTest, LogRewrittenBeforeThePageIsWrittenFailsThePage) {
  absl::StatusOr<AuditReport> rep = BuildAuditReport(Inputs(), 9999);
  ASSERT_TRUE(rep.ok()) << rep.status();
  const std::string log = dir_b_ + "/audit.log";
  ASSERT_EQ(::rename(ForgedLogOfB().c_str(), log.c_str()), 0);
  capsule::MemorySink sink;
  absl::Status s = WriteAuditReportHtml(*rep, &sink);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("not the one that was verified"));
}

TEST_F(AuditReportTest, EntriesAppendedAfterVerificationAreLeftOut) {
  absl::StatusOr<AuditReport> rep = VerifyReportLogs(Inputs(), 9999);
  ASSERT_TRUE(rep.ok()) << rep.status();
  Append(dir_b_, site_b_, "site-b", Rec(6000, "open", "deny", kId, "bk1:carol", "late", {}));
  ASSERT_TRUE(GatherReportFigures(&*rep).ok());
  EXPECT_EQ(rep->sites[1].left_out, 1u);
  EXPECT_EQ(rep->total, 7u);
  capsule::MemorySink sink;
  EXPECT_TRUE(WriteAuditReportHtml(*rep, &sink).ok());
}

// Regression: the figures kept every distinct reason, requester-and-purpose pair and capsule,
// so a requester that varied its purpose grew the report's memory with the log.
TEST_F(AuditReportTest, ManyDistinctPurposesStayBoundedWithAnOtherCount) {
  constexpr int kMore = 1100;
  {
    absl::StatusOr<std::unique_ptr<AuditLog>> log =
        AuditLog::Open(dir_b_, &site_b_, "site-b", std::nullopt);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < kMore; ++i) {
      const std::string purpose = absl::StrCat("purpose-", i, "-", std::string(1100, 'p'));
      const std::string id = absl::StrCat("cafe", i);
      ASSERT_TRUE((*log)
                      ->Append(Rec(7000 + i, "open", "deny", id, "bk1:mallory", purpose,
                                   {absl::StrCat("purpose \"", purpose, "\" is not allowed")}),
                               7000 + i)
                      .ok());
    }
  }
  absl::StatusOr<AuditReport> rep = BuildAuditReport(Inputs(), 9999);
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_EQ(rep->total, 7u + kMore);
  // The setup's 4 pairs, 2 reasons and 1 capsule come first.
  EXPECT_EQ(rep->requesters.size(), kReportMaxKeys);
  EXPECT_EQ(rep->other_requester_entries, 4u + kMore - kReportMaxKeys);
  EXPECT_EQ(rep->denial_reasons.size(), kReportMaxKeys);
  EXPECT_EQ(rep->other_reason_denials, 2u + kMore - kReportMaxKeys);
  EXPECT_EQ(rep->capsules.size(), kReportMaxCapsules);
  EXPECT_EQ(rep->other_capsule_entries, static_cast<uint64_t>(kMore - (kReportMaxCapsules - 1)));
  for (const auto& [key, q] : rep->requesters) {
    EXPECT_LE(q.purpose.size(), kReportMaxText);
  }
  for (const auto& [reason, n] : rep->denial_reasons) EXPECT_LE(reason.size(), kReportMaxText);
  for (const ReportHistoryItem& h : rep->capsules.at("cafe0").history) {
    EXPECT_LE(h.purpose.size(), kReportMaxItemText);
  }
  const std::string html = Html(*rep);
  EXPECT_THAT(html, HasSubstr(absl::StrCat("id=\"other-requesters\" data-count=\"",
                                           rep->other_requester_entries, "\"")));
  EXPECT_THAT(html, HasSubstr(absl::StrCat("id=\"other-reason-denials\" data-count=\"",
                                           rep->other_reason_denials, "\"")));
  EXPECT_THAT(html, HasSubstr("id=\"other-capsules\""));
}

TEST(AuditReportText, CutKeepsUtf8WholeAndMarksTheCut) {
  EXPECT_EQ(ReportCut("short"), "short");
  const std::string exact(kReportMaxText, 'x');
  EXPECT_EQ(ReportCut(exact), exact);
  const std::string cut = ReportCut(std::string(kReportMaxText - 4, 'x') + "\xe2\x82\xac\xe2\x82\xac");
  EXPECT_EQ(cut, std::string(kReportMaxText - 4, 'x') + "...");
  EXPECT_LE(cut.size(), kReportMaxText);
}

TEST_F(AuditReportTest, SameLogTwiceIsRefused) {
  std::vector<ReportLogInput> in = Inputs();
  in.push_back(in[1]);
  EXPECT_EQ(BuildAuditReport(in, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AuditReportTest, WitnessedCheckpointAheadOfTheLogIsDataLoss) {
  std::vector<ReportLogInput> in = Inputs();
  absl::StatusOr<Checkpoint> latest = ReadLatestCheckpoint(in[1].log_path);
  ASSERT_TRUE(latest.ok());
  // The witness saw one more entry than the log now has (rolled back).
  Append(dir_b_, site_b_, "site-b", Rec(6000, "open", "deny", kId, "", "", {}));
  absl::StatusOr<Checkpoint> ahead = ReadLatestCheckpoint(in[1].log_path);
  ASSERT_TRUE(ahead.ok());
  in[1].witnessed = *ahead;
  absl::StatusOr<AuditReport> ok = BuildAuditReport(in, 0);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->sites[1].witnessed_size, ahead->size);
  const std::string log = in[1].log_path;
  ASSERT_EQ(::truncate(log.c_str(), 0), 0);
  EXPECT_FALSE(BuildAuditReport(in, 0).ok());
}

}  // namespace
}  // namespace bunker::verifier

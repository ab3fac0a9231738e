// The fields added to AuditEntry after the first version (spec/AUDIT.md "Entries": uses,
// localUid, localPid): their encoding, strict decoding and export.
#include <cstdint>
#include <vector>

#include "capnp/message.h"
#include "crypto/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spec/audit.capnp.h"
#include "verifier/audit_log.h"

namespace bunker::verifier {
namespace {

using ::testing::HasSubstr;
using Bytes = std::vector<uint8_t>;

// spec/AUDIT.md section 11, "An entry with the later fields".
AuditRecord RefundExample() {
  AuditRecord r;
  r.time = 1714525260;
  r.event = "release-failed";
  r.decision = "failed";
  r.capsule_id = "00112233445566778899aabbccddeeff";
  r.issuer = "bk1:aaaaaaaaaaaaaaaaaaaaaaaaaa";
  r.site = "site-b";
  r.reasons = {"disk full"};
  r.uses = -1;
  r.uid = 1000;
  r.pid = 4242;
  return r;
}

Bytes Canonical(const capnp::MallocMessageBuilder& builder) {
  auto words = capnp::canonicalize(
      const_cast<capnp::MallocMessageBuilder&>(builder).getRoot<schema::AuditEntry>().asReader());
  return Bytes(words.asBytes().begin(), words.asBytes().end());
}

TEST(AuditEntryFieldsTest, DefaultsAddNoBytes) {
  // An entry of the first version (no use change, no local client) keeps its exact bytes: the
  // data section is still one word, so every existing log stays valid.
  AuditRecord r;
  r.time = 5;
  r.event.clear();
  EXPECT_EQ(EncodeAuditEntry(r).size(), 16u);  // root pointer + time
  r.uses = 0;
  r.uid.reset();
  r.pid.reset();
  EXPECT_EQ(EncodeAuditEntry(r).size(), 16u);
}

TEST(AuditEntryFieldsTest, RoundTrip) {
  for (int8_t uses : {int8_t{-1}, int8_t{0}, int8_t{1}}) {
    for (std::optional<uint32_t> uid : {std::optional<uint32_t>(), std::optional<uint32_t>(0),
                                        std::optional<uint32_t>(UINT32_MAX)}) {
      for (std::optional<int32_t> pid : {std::optional<int32_t>(), std::optional<int32_t>(0),
                                         std::optional<int32_t>(INT32_MAX)}) {
        AuditRecord r = RefundExample();
        r.uses = uses;
        r.uid = uid;
        r.pid = pid;
        const Bytes bytes = EncodeAuditEntry(r);
        absl::StatusOr<AuditRecord> back = DecodeAuditEntry(bytes);
        ASSERT_TRUE(back.ok()) << back.status();
        EXPECT_EQ(back->uses, uses);
        EXPECT_EQ(back->uid, uid);
        EXPECT_EQ(back->pid, pid);
        EXPECT_EQ(EncodeAuditEntry(*back), bytes);
      }
    }
  }
}

TEST(AuditEntryFieldsTest, RejectsImpossibleUidOrPid) {
  for (auto [uid, pid] : {std::pair<int64_t, int64_t>{-2, -1}, {int64_t{UINT32_MAX} + 1, -1},
                          {-1, -2}, {-1, int64_t{INT32_MAX} + 1}, {INT64_MIN, INT64_MAX}}) {
    capnp::MallocMessageBuilder builder;
    auto root = builder.initRoot<schema::AuditEntry>();
    root.setTime(1);
    root.setLocalUid(uid);
    root.setLocalPid(pid);
    absl::StatusOr<AuditRecord> r = DecodeAuditEntry(Canonical(builder));
    ASSERT_FALSE(r.ok()) << uid << " " << pid;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(r.status().message(), HasSubstr("uid or pid"));
  }
}

TEST(AuditEntryFieldsTest, ExampleMatchesAuditMd) {
  const Bytes bytes = EncodeAuditEntry(RefundExample());
  EXPECT_EQ(bytes.size(), 248u);
  EXPECT_EQ(crypto::ToHex(bytes),
            "0000000004000a004c94316600000000ff0000000000000017fcffffffffffff6defffffffffffff"
            "250000007a000000290000003a000000290000000a01000039000000fa000000450000003a000000"
            "0000000000000000000000000000000000000000000000000000000000000000350000000e000000"
            "72656c656173652d6661696c656400006661696c6564000030303131323233333434353536363737"
            "383839396161626263636464656566660000000000000000626b313a616161616161616161616161"
            "61616161616161616161616161610000736974652d62000001000000520000006469736b2066756c"
            "6c00000000000000");
}

TEST(AuditEntryFieldsTest, ExportShowsTheLocalClient) {
  const AuditRecord r = RefundExample();
  EXPECT_THAT(AuditRecordToJson(3, r), HasSubstr("\"uses\": -1, \"uid\": 1000, \"pid\": 4242}"));
  EXPECT_THAT(AuditRecordToCsv(3, r), ::testing::EndsWith(",-1,1000,4242"));
  AuditRecord none;
  EXPECT_THAT(AuditRecordToJson(0, none), HasSubstr("\"uses\": 0, \"uid\": null, \"pid\": null}"));
  EXPECT_THAT(AuditRecordToCsv(0, none), ::testing::EndsWith(",0,,"));
}

}  // namespace
}  // namespace bunker::verifier

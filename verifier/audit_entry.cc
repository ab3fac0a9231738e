// Audit entries: the canonical Cap'n Proto encoding of a record (spec/AUDIT.md "Entries").
#include <climits>
#include <cstring>

#include "capnp/message.h"
#include "capsule/strict_decode.h"
#include "spec/audit.capnp.h"
#include "verifier/audit_log.h"

namespace bunker::verifier {
namespace {

capnp::Text::Reader AsText(const std::string& s) { return capnp::Text::Reader(s.data(), s.size()); }

void SetList(capnp::List<capnp::Text>::Builder list, const std::vector<std::string>& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].empty()) list.set(static_cast<unsigned>(i), AsText(items[i]));
  }
}

void GetList(capnp::List<capnp::Text>::Reader list, std::vector<std::string>& out) {
  out.clear();
  out.reserve(list.size());
  for (capnp::Text::Reader t : list) out.emplace_back(t.begin(), t.size());
}

}  // namespace

// --- Entries -------------------------------------------------------------------------------

std::vector<uint8_t> EncodeAuditEntry(const AuditRecord& r) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<schema::AuditEntry>();
  root.setTime(r.time);
  // spec/AUDIT.md "Entries": an empty text or list is a null pointer, so it has one encoding.
  if (!r.event.empty()) root.setEvent(AsText(r.event));
  if (!r.decision.empty()) root.setDecision(AsText(r.decision));
  if (!r.capsule_id.empty()) root.setCapsuleId(AsText(r.capsule_id));
  if (!r.issuer.empty()) root.setIssuer(AsText(r.issuer));
  if (!r.site.empty()) root.setSite(AsText(r.site));
  if (!r.requester.empty()) root.setRequester(AsText(r.requester));
  if (!r.purpose.empty()) root.setPurpose(AsText(r.purpose));
  if (!r.paths.empty()) SetList(root.initPaths(static_cast<unsigned>(r.paths.size())), r.paths);
  if (!r.rules.empty()) SetList(root.initRules(static_cast<unsigned>(r.rules.size())), r.rules);
  if (!r.reasons.empty()) {
    SetList(root.initReasons(static_cast<unsigned>(r.reasons.size())), r.reasons);
  }
  root.setUses(r.uses);
  root.setLocalUid(r.uid ? int64_t{*r.uid} : -1);
  root.setLocalPid(r.pid ? int64_t{*r.pid} : -1);
  kj::Array<capnp::word> words = capnp::canonicalize(root.asReader());
  auto bytes = words.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

namespace {

// The fields of a canonical AuditEntry message (a kj::Exception escapes for a malformed one).
absl::StatusOr<AuditRecord> ReadAuditEntry(schema::AuditEntry::Reader root) {
  AuditRecord r;
  r.time = root.getTime();
  auto text = [](capnp::Text::Reader t) { return std::string(t.begin(), t.size()); };
  r.event = text(root.getEvent());
  r.decision = text(root.getDecision());
  r.capsule_id = text(root.getCapsuleId());
  r.issuer = text(root.getIssuer());
  r.site = text(root.getSite());
  r.requester = text(root.getRequester());
  r.purpose = text(root.getPurpose());
  GetList(root.getPaths(), r.paths);
  GetList(root.getRules(), r.rules);
  GetList(root.getReasons(), r.reasons);
  r.uses = root.getUses();
  const int64_t uid = root.getLocalUid(), pid = root.getLocalPid();
  if (uid < -1 || uid > int64_t{UINT32_MAX} || pid < -1 || pid > int64_t{INT32_MAX}) {
    return absl::DataLossError("audit entry has an impossible local uid or pid");
  }
  if (uid >= 0) r.uid = static_cast<uint32_t>(uid);
  if (pid >= 0) r.pid = static_cast<int32_t>(pid);
  return r;
}

}  // namespace

absl::StatusOr<AuditRecord> DecodeAuditEntry(absl::Span<const uint8_t> bytes) {
  // A canonical message has no far pointers or unreachable words, so the canonical check and the
  // field reads each read a word at most once; 4x plus slack bounds the work to a few passes.
  const capsule::StrictDecodeLimits limits{kMaxAuditEntrySize, /*traversal_factor=*/4,
                                           /*nesting=*/8};
  // Re-encoding must give the input back: no unknown fields, no empty-but-present values.
  return capsule::StrictDecode<schema::AuditEntry>(
      bytes, limits, ReadAuditEntry, EncodeAuditEntry, [](capsule::StrictDecodeFailure failure) {
        switch (failure) {
          case capsule::StrictDecodeFailure::kBadLength:
            return absl::DataLossError("audit entry has a bad length");
          case capsule::StrictDecodeFailure::kNotCanonical:
            return absl::DataLossError("audit entry is not canonical");
          case capsule::StrictDecodeFailure::kMalformed:
            // Cap'n Proto's message names internals only.
            return absl::DataLossError("audit entry is not a valid AuditEntry message");
          case capsule::StrictDecodeFailure::kNotReencoded:
            break;
        }
        return absl::DataLossError("audit entry is not in canonical form (unknown or extra data)");
      });
}

}  // namespace bunker::verifier

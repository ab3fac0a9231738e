// Audit entries: the canonical Cap'n Proto encoding of a record (spec/AUDIT.md "Entries").
#include <climits>
#include <cstring>

#include "capnp/message.h"
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

absl::StatusOr<AuditRecord> DecodeAuditEntry(absl::Span<const uint8_t> bytes) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0 ||
      bytes.size() > kMaxAuditEntrySize) {
    return absl::DataLossError("audit entry has a bad length");
  }
  // Word-aligned copy: the caller's buffer carries no alignment guarantee.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  kj::ArrayPtr<const capnp::word> segments[1] = {words.asPtr()};
  capnp::ReaderOptions options;
  // The limit is cumulative per reader. A canonical message has no far pointers or unreachable
  // words, so the canonical check and the field reads each read a word at most once; 4x plus
  // slack bounds the work to a few passes over the bytes, as in capsule/manifest.cc.
  options.traversalLimitInWords = 4 * words.size() + 64;
  options.nestingLimit = 8;
  AuditRecord r;
  try {
    capnp::SegmentArrayMessageReader reader(kj::arrayPtr(segments, 1), options);
    if (!reader.isCanonical()) return absl::DataLossError("audit entry is not canonical");
    auto root = reader.getRoot<schema::AuditEntry>();
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
  } catch (const kj::Exception&) {
    // Cap'n Proto's message names internals only.
    return absl::DataLossError("audit entry is not a valid AuditEntry message");
  }
  // Re-encoding must give the input back: no unknown fields, no empty-but-present values.
  const std::vector<uint8_t> again = EncodeAuditEntry(r);
  if (again.size() != bytes.size() || std::memcmp(again.data(), bytes.data(), bytes.size()) != 0) {
    return absl::DataLossError("audit entry is not in canonical form (unknown or extra data)");
  }
  return r;
}

}  // namespace bunker::verifier

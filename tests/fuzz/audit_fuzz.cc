// libFuzzer target for the audit log's parsers (spec/AUDIT.md): an entry decodes only if it
// re-encodes to the same bytes, and a checkpoint parses only if it re-encodes to the same text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "verifier/audit_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<bunker::verifier::AuditRecord> r =
      bunker::verifier::DecodeAuditEntry(absl::MakeConstSpan(data, size));
  if (r.ok()) {
    const std::vector<uint8_t> again = bunker::verifier::EncodeAuditEntry(*r);
    if (again != std::vector<uint8_t>(data, data + size)) std::abort();
  } else if (r.status().code() != absl::StatusCode::kDataLoss) {
    std::abort();
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<bunker::verifier::Checkpoint> c = bunker::verifier::Checkpoint::Parse(text);
  if (c.ok() && c->Encode() != text) std::abort();
  return 0;
}

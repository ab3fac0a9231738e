// The reader side: the latest checkpoint, verification of a whole log, iteration and filters.
#include "absl/strings/match.h"
#include "verifier/audit_log_internal.h"

namespace bunker::verifier {

using audit_internal::FdView;
using audit_internal::EntryReader;
using audit_internal::FileSize;
using audit_internal::kCheckpointMagic;
using audit_internal::kCheckpointTail;
using audit_internal::OpenForReading;
using audit_internal::OpenSnapshot;
using audit_internal::Position;
using audit_internal::Scan;
using audit_internal::ScanOptions;
using audit_internal::ScanResult;
using audit_internal::Snapshot;
using capsule::Fd;

// --- The reader side -----------------------------------------------------------------------

std::string AuditCheckpointsPath(const std::string& log_path) {
  std::string base = log_path;
  if (absl::EndsWith(base, ".log")) base.resize(base.size() - 4);
  return base + ".checkpoints";
}

absl::StatusOr<Checkpoint> ReadLatestCheckpoint(const std::string& log_path) {
  BUNKER_ASSIGN_OR_RETURN(Fd fd, OpenForReading(AuditCheckpointsPath(log_path)));
  const uint64_t size = FileSize(fd.get());
  if (size == 0) return absl::NotFoundError("the audit log has no checkpoint yet");
  const uint64_t len = std::min(size, kCheckpointTail);
  std::string tail(len, '\0');
  FdView view(fd.get(), size);
  BUNKER_RETURN_IF_ERROR(view.ReadAt(
      size - len, absl::MakeSpan(reinterpret_cast<uint8_t*>(tail.data()), tail.size())));
  if (tail.back() != '\n') {
    return absl::DataLossError("the checkpoints file ends in an incomplete checkpoint");
  }
  // Lines cannot contain newlines and only a checkpoint's first line starts with the magic.
  const std::string marker = absl::StrCat("\n", kCheckpointMagic, "\n");
  size_t start = tail.rfind(marker);
  if (start != std::string::npos) {
    ++start;
  } else if (len == size && tail.compare(0, marker.size() - 1, marker.substr(1)) == 0) {
    start = 0;
  } else {
    return absl::DataLossError("the checkpoints file does not end in a checkpoint");
  }
  absl::StatusOr<Checkpoint> c = Checkpoint::Parse(std::string_view(tail).substr(start));
  if (!c.ok()) {
    return absl::DataLossError(
        absl::StrCat("the latest audit checkpoint is malformed (", c.status().message(), ")"));
  }
  return c;
}

absl::StatusOr<AuditVerifyResult> VerifyAuditLog(const std::string& log_path,
                                                 const crypto::PublicIdentity& site_key,
                                                 const std::optional<Checkpoint>& trusted,
                                                 bool every_signature) {
  if (trusted && !trusted->Verify(site_key).ok()) {
    return absl::DataLossError("the trusted checkpoint does not verify under the site key");
  }
  BUNKER_ASSIGN_OR_RETURN(Snapshot snap, OpenSnapshot(log_path, /*with_checkpoints=*/true));
  ScanOptions opts;
  opts.key = &site_key;
  opts.verify_every_signature = every_signature;
  opts.check_uses = true;
  if (trusted) opts.capture_size = trusted->size;
  Position pos;
  BUNKER_ASSIGN_OR_RETURN(const ScanResult scan, Scan(*snap.log, *snap.checkpoints, opts, pos));
  const uint64_t n = pos.tree.size();
  if (trusted) {
    if (pos.latest && pos.latest->site != trusted->site) {
      return absl::InvalidArgumentError(absl::StrCat("the trusted checkpoint is for site '",
                                                     trusted->site, "', the log for '",
                                                     pos.latest->site, "'"));
    }
    if (trusted->size > n) {
      return absl::DataLossError(absl::StrCat(
          "audit log entry ", n, " is missing: the trusted checkpoint covers ", trusted->size,
          " entries, the log only ", n, " (truncated, or replaced by an older copy)"));
    }
    if (!scan.captured_root || *scan.captured_root != trusted->root) {
      return absl::DataLossError(
          absl::StrCat("audit log does not match the trusted checkpoint of size ", trusted->size,
                       ": the site signed two different histories (forked log)"));
    }
  }
  AuditVerifyResult out;
  out.entries = n;
  out.checkpoints = pos.checkpoints;
  if (pos.latest) {
    out.checkpoint = *pos.latest;
  } else {
    out.checkpoint.root = pos.tree.Root();
  }
  return out;
}

absl::Status ForEachAuditRecord(const std::string& log_path,
                                const std::function<bool(uint64_t, const AuditRecord&)>& fn) {
  BUNKER_ASSIGN_OR_RETURN(Snapshot snap, OpenSnapshot(log_path, /*with_checkpoints=*/false));
  EntryReader entries(*snap.log, 0, 0);
  std::vector<uint8_t> bytes;
  for (;;) {
    const uint64_t index = entries.index();
    BUNKER_ASSIGN_OR_RETURN(const bool more, entries.Next(bytes));
    if (!more) return absl::OkStatus();
    absl::StatusOr<AuditRecord> r = DecodeAuditEntry(bytes);
    if (!r.ok()) {
      return absl::DataLossError(
          absl::StrCat("audit log entry ", index, " is malformed (", r.status().message(), ")"));
    }
    if (!fn(index, *r)) return absl::OkStatus();
  }
}

absl::StatusOr<uint64_t> ForEachVerifiedAuditRecord(
    const std::string& log_path, uint64_t size, const crypto::Sha256Digest& root,
    const std::function<void(uint64_t, const AuditRecord&)>& fn) {
  BUNKER_ASSIGN_OR_RETURN(Snapshot snap, OpenSnapshot(log_path, /*with_checkpoints=*/false));
  EntryReader entries(*snap.log, 0, 0);
  crypto::MerkleTreeBuilder tree;
  std::vector<uint8_t> bytes;
  while (tree.size() < size) {
    const uint64_t index = entries.index();
    BUNKER_ASSIGN_OR_RETURN(const bool more, entries.Next(bytes));
    if (!more) {
      return absl::DataLossError(absl::StrCat("the log now holds ", index, " entries, not the ",
                                              size, " that were verified (cut or replaced since)"));
    }
    absl::StatusOr<AuditRecord> r = DecodeAuditEntry(bytes);
    if (!r.ok()) {
      return absl::DataLossError(
          absl::StrCat("audit log entry ", index, " is malformed (", r.status().message(), ")"));
    }
    tree.AddLeafHash(crypto::MerkleLeafHash(bytes));
    fn(index, *r);
  }
  // A descriptor of our own would not do: whoever can write the file can rewrite it in place.
  if (tree.Root() != root) {
    return absl::DataLossError(absl::StrCat(
        "the log is not the one that was verified: its first ", size,
        " entries do not give the verified root (replaced or rewritten since)"));
  }
  for (;;) {
    BUNKER_ASSIGN_OR_RETURN(const bool more, entries.Next(bytes));
    if (!more) return entries.index();
  }
}

bool AuditFilter::Matches(const AuditRecord& r) const {
  if (!capsule_id.empty() && !absl::EqualsIgnoreCase(capsule_id, r.capsule_id)) return false;
  if (!requester.empty()) {
    absl::StatusOr<crypto::Fingerprint> want = crypto::Fingerprint::Parse(requester);
    absl::StatusOr<crypto::Fingerprint> got = crypto::Fingerprint::Parse(r.requester);
    if (want.ok() && got.ok()) {
      if (*want != *got) return false;
    } else if (requester != r.requester) {
      return false;
    }
  }
  if (!decision.empty() && decision != r.decision) return false;
  if (since && r.time < *since) return false;
  if (until && r.time > *until) return false;
  return true;
}

}  // namespace bunker::verifier

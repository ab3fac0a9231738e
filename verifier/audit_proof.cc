// Inclusion and consistency proofs over a log file (spec/AUDIT.md "Proofs").
#include "verifier/audit_log_internal.h"

namespace bunker::verifier {

using audit_internal::EntryReader;
using audit_internal::kOffsetSampleEvery;
using audit_internal::OpenSnapshot;
using audit_internal::Snapshot;

// --- Proofs --------------------------------------------------------------------------------

namespace {

// The first `size` entries of a log, hashed in one pass that also keeps every 1024th offset;
// leaves are then fetched again from the file, in O(size / 1024) memory instead of 32 bytes
// per entry.
class LeafSource {
 public:
  static absl::StatusOr<std::unique_ptr<LeafSource>> Open(const std::string& log_path,
                                                          uint64_t size,
                                                          std::optional<uint64_t> capture) {
    BUNKER_ASSIGN_OR_RETURN(Snapshot snap, OpenSnapshot(log_path, /*with_checkpoints=*/false));
    std::unique_ptr<LeafSource> s(new LeafSource(std::move(snap)));
    crypto::MerkleTreeBuilder tree;
    if (capture && *capture == 0) s->captured_ = tree.Root();
    std::vector<uint8_t> bytes;
    while (tree.size() < size) {
      if (tree.size() % kOffsetSampleEvery == 0) s->samples_.push_back(s->cursor_.offset());
      BUNKER_ASSIGN_OR_RETURN(const bool more, s->cursor_.Next(bytes));
      if (!more) {
        // Sizes come from checkpoints the site signed: a log that no longer holds that many
        // entries lost some, whatever the caller wanted proven.
        return absl::DataLossError(absl::StrCat("the audit log has only ", tree.size(),
                                                " entries, fewer than ", size,
                                                ": it was truncated or rolled back"));
      }
      tree.AddLeafHash(crypto::MerkleLeafHash(bytes));
      if (capture && *capture == tree.size()) s->captured_ = tree.Root();
    }
    s->root_ = tree.Root();
    return s;
  }

  // A crypto::LeafHashFetcher: sequential reads are free, a jump re-reads at most 1023 entries.
  absl::StatusOr<crypto::Sha256Digest> Leaf(uint64_t i) {
    if (i / kOffsetSampleEvery >= samples_.size()) {
      return absl::InvalidArgumentError("leaf index out of range");
    }
    if (cursor_.index() > i || i - cursor_.index() >= kOffsetSampleEvery) {
      const uint64_t base = i / kOffsetSampleEvery;
      cursor_.Seek(samples_[base], base * kOffsetSampleEvery);
    }
    std::vector<uint8_t>& bytes = scratch_;
    while (cursor_.index() <= i) {
      BUNKER_ASSIGN_OR_RETURN(const bool more, cursor_.Next(bytes));
      if (!more) return absl::DataLossError("the audit log shrank while proving");
    }
    return crypto::MerkleLeafHash(bytes);
  }

  crypto::LeafHashFetcher Fetcher() {
    return [this](uint64_t i) { return Leaf(i); };
  }
  const crypto::Sha256Digest& root() const { return root_; }
  const std::optional<crypto::Sha256Digest>& captured() const { return captured_; }

 private:
  explicit LeafSource(Snapshot snap) : snap_(std::move(snap)), cursor_(*snap_.log, 0, 0) {}
  Snapshot snap_;
  EntryReader cursor_;
  std::vector<uint64_t> samples_;
  std::vector<uint8_t> scratch_;
  crypto::Sha256Digest root_{};
  std::optional<crypto::Sha256Digest> captured_;
};

}  // namespace

absl::StatusOr<InclusionProof> ProveInclusion(const std::string& log_path, uint64_t index,
                                              uint64_t size) {
  if (index >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry ", index, " is not in a tree of ", size, " entries"));
  }
  BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<LeafSource> leaves,
                          LeafSource::Open(log_path, size, std::nullopt));
  InclusionProof p;
  p.index = index;
  p.size = size;
  p.root = leaves->root();
  BUNKER_ASSIGN_OR_RETURN(p.leaf, leaves->Leaf(index));
  BUNKER_ASSIGN_OR_RETURN(p.path, crypto::InclusionProof(index, size, leaves->Fetcher()));
  // The two passes must have read the same bytes; an auditor will check this anyway.
  if (!crypto::VerifyInclusion(index, size, p.leaf, p.path, p.root)) {
    return absl::DataLossError("the audit log changed while the proof was built");
  }
  return p;
}

absl::StatusOr<ConsistencyProof> ProveConsistency(const std::string& log_path, uint64_t old_size,
                                                  uint64_t new_size) {
  if (old_size > new_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("old size ", old_size, " is larger than new size ", new_size));
  }
  BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<LeafSource> leaves,
                          LeafSource::Open(log_path, new_size, old_size));
  ConsistencyProof p;
  p.old_size = old_size;
  p.new_size = new_size;
  p.old_root = *leaves->captured();
  p.new_root = leaves->root();
  BUNKER_ASSIGN_OR_RETURN(p.path, crypto::ConsistencyProof(old_size, new_size, leaves->Fetcher()));
  if (!crypto::VerifyConsistency(old_size, new_size, p.old_root, p.new_root, p.path)) {
    return absl::DataLossError("the audit log changed while the proof was built");
  }
  return p;
}

}  // namespace bunker::verifier

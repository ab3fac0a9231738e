#include "crypto/merkle.h"

#include <array>
#include <cstring>

namespace bunker::crypto {
namespace {

// Largest power of two strictly less than n (n >= 2).
uint64_t SplitPoint(uint64_t n) {
  uint64_t k = 1;
  while (k << 1 < n) k <<= 1;
  return k;
}

// RFC 9162 2.1.3.1 PATH(m, D[begin:end]).
absl::Status Path(uint64_t m, uint64_t begin, uint64_t end, const LeafHashFetcher& leaf,
                  std::vector<Sha256Digest>& out) {
  const uint64_t n = end - begin;
  if (n <= 1) return absl::OkStatus();
  const uint64_t k = SplitPoint(n);
  if (m < k) {
    absl::Status s = Path(m, begin, begin + k, leaf, out);
    if (!s.ok()) return s;
    absl::StatusOr<Sha256Digest> r = SubtreeRoot(begin + k, end, leaf);
    if (!r.ok()) return r.status();
    out.push_back(*r);
  } else {
    absl::Status s = Path(m - k, begin + k, end, leaf, out);
    if (!s.ok()) return s;
    absl::StatusOr<Sha256Digest> l = SubtreeRoot(begin, begin + k, leaf);
    if (!l.ok()) return l.status();
    out.push_back(*l);
  }
  return absl::OkStatus();
}

// RFC 9162 2.1.4.1 SUBPROOF(m, D[begin:end], b).
absl::Status Subproof(uint64_t m, uint64_t begin, uint64_t end, bool b,
                      const LeafHashFetcher& leaf, std::vector<Sha256Digest>& out) {
  const uint64_t n = end - begin;
  if (m == n) {
    if (b) return absl::OkStatus();
    absl::StatusOr<Sha256Digest> r = SubtreeRoot(begin, end, leaf);
    if (!r.ok()) return r.status();
    out.push_back(*r);
    return absl::OkStatus();
  }
  const uint64_t k = SplitPoint(n);
  if (m <= k) {
    absl::Status s = Subproof(m, begin, begin + k, b, leaf, out);
    if (!s.ok()) return s;
    absl::StatusOr<Sha256Digest> r = SubtreeRoot(begin + k, end, leaf);
    if (!r.ok()) return r.status();
    out.push_back(*r);
  } else {
    absl::Status s = Subproof(m - k, begin + k, end, false, leaf, out);
    if (!s.ok()) return s;
    absl::StatusOr<Sha256Digest> l = SubtreeRoot(begin, begin + k, leaf);
    if (!l.ok()) return l.status();
    out.push_back(*l);
  }
  return absl::OkStatus();
}

}  // namespace

Sha256Digest MerkleLeafHash(absl::Span<const uint8_t> leaf) {
  Sha256 h;
  const uint8_t prefix = 0x00;
  h.Update(absl::MakeConstSpan(&prefix, 1));
  h.Update(leaf);
  return h.Finish();
}

Sha256Digest MerkleNodeHash(const Sha256Digest& left, const Sha256Digest& right) {
  // One-shot over the 65 bytes: a reader checks a tree of n leaves by hashing n - 1 nodes (3,000
  // for a 3 GiB capsule before its first byte is read), and a streaming context per node
  // (allocated, then initialized twice) cost several times the hashing itself.
  std::array<uint8_t, 1 + 2 * 32> input;
  input[0] = 0x01;
  std::memcpy(input.data() + 1, left.data(), left.size());
  std::memcpy(input.data() + 1 + left.size(), right.data(), right.size());
  return Sha256::Hash(absl::MakeConstSpan(input));
}

void MerkleTreeBuilder::AddLeafHash(const Sha256Digest& leaf_hash) {
  // Binary-counter merge: each set low bit of size_ is a perfect subtree to fold into.
  Sha256Digest h = leaf_hash;
  for (uint64_t s = size_; s & 1; s >>= 1) {
    h = MerkleNodeHash(stack_.back(), h);
    stack_.pop_back();
  }
  stack_.push_back(h);
  ++size_;
}

Sha256Digest MerkleTreeBuilder::Root() const {
  if (stack_.empty()) return Sha256::Hash(std::string_view());
  // Folding right to left yields MTH because RFC 9162 splits at the largest power of two,
  // which is exactly the binary decomposition kept on the stack.
  Sha256Digest r = stack_.back();
  for (size_t i = stack_.size() - 1; i-- > 0;) r = MerkleNodeHash(stack_[i], r);
  return r;
}

absl::StatusOr<Sha256Digest> SubtreeRoot(uint64_t begin, uint64_t end,
                                         const LeafHashFetcher& leaf) {
  MerkleTreeBuilder b;
  for (uint64_t i = begin; i < end; ++i) {
    absl::StatusOr<Sha256Digest> h = leaf(i);
    if (!h.ok()) return h.status();
    b.AddLeafHash(*h);
  }
  return b.Root();
}

absl::StatusOr<std::vector<Sha256Digest>> InclusionProof(uint64_t index, uint64_t size,
                                                         const LeafHashFetcher& leaf) {
  if (index >= size) return absl::InvalidArgumentError("leaf index out of range");
  std::vector<Sha256Digest> out;
  absl::Status s = Path(index, 0, size, leaf, out);
  if (!s.ok()) return s;
  return out;
}

bool VerifyInclusion(uint64_t index, uint64_t size, const Sha256Digest& leaf_hash,
                     absl::Span<const Sha256Digest> proof, const Sha256Digest& root) {
  if (index >= size) return false;
  uint64_t fn = index, sn = size - 1;
  Sha256Digest r = leaf_hash;
  for (const Sha256Digest& p : proof) {
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      r = MerkleNodeHash(p, r);
      if (!(fn & 1)) {
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = MerkleNodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

absl::StatusOr<std::vector<Sha256Digest>> ConsistencyProof(uint64_t old_size, uint64_t new_size,
                                                           const LeafHashFetcher& leaf) {
  if (old_size > new_size) return absl::InvalidArgumentError("old size exceeds new size");
  std::vector<Sha256Digest> out;
  if (old_size == 0 || old_size == new_size) return out;
  absl::Status s = Subproof(old_size, 0, new_size, true, leaf, out);
  if (!s.ok()) return s;
  return out;
}

bool VerifyConsistency(uint64_t old_size, uint64_t new_size, const Sha256Digest& old_root,
                       const Sha256Digest& new_root, absl::Span<const Sha256Digest> proof) {
  if (old_size > new_size) return false;
  if (old_size == new_size) return proof.empty() && old_root == new_root;
  if (old_size == 0) return proof.empty();
  if (proof.empty()) return false;
  std::vector<Sha256Digest> path(proof.begin(), proof.end());
  // RFC 9162 2.1.4.2: if old_size is a power of two, prepend old_root.
  if ((old_size & (old_size - 1)) == 0) path.insert(path.begin(), old_root);
  uint64_t fn = old_size - 1, sn = new_size - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  Sha256Digest fr = path[0], sr = path[0];
  for (size_t i = 1; i < path.size(); ++i) {
    const Sha256Digest& c = path[i];
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      fr = MerkleNodeHash(c, fr);
      sr = MerkleNodeHash(c, sr);
      if (!(fn & 1)) {
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = MerkleNodeHash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && fr == old_root && sr == new_root;
}

}  // namespace bunker::crypto

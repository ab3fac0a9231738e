// RFC 9162 (Certificate Transparency v2) Merkle tree hashing over SHA-256:
//   leaf hash  = SHA-256(0x00 || leaf)
//   node hash  = SHA-256(0x01 || left || right)
//   MTH({})    = SHA-256("")
//   MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n.
// Used for capsule chunk tables and audit logs.
#ifndef BUNKER_CRYPTO_MERKLE_H_
#define BUNKER_CRYPTO_MERKLE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "crypto/sha256.h"

namespace bunker::crypto {

Sha256Digest MerkleLeafHash(absl::Span<const uint8_t> leaf);
Sha256Digest MerkleNodeHash(const Sha256Digest& left, const Sha256Digest& right);

// Computes MTH incrementally from leaf hashes in order, in O(log n) memory.
class MerkleTreeBuilder {
 public:
  void AddLeafHash(const Sha256Digest& leaf_hash);
  uint64_t size() const { return size_; }
  // The root over the leaves added so far (SHA-256("") when none).
  Sha256Digest Root() const;

 private:
  // Roots of the perfect subtrees of the binary decomposition of size_, largest first.
  std::vector<Sha256Digest> stack_;
  uint64_t size_ = 0;
};

// Fetches the leaf hash at an index (from a file, an array, ...).
using LeafHashFetcher = std::function<absl::StatusOr<Sha256Digest>(uint64_t index)>;

// RFC 9162 section 2.1.3.1 inclusion proof for leaf `index` in a tree of `size` leaves.
absl::StatusOr<std::vector<Sha256Digest>> InclusionProof(uint64_t index, uint64_t size,
                                                         const LeafHashFetcher& leaf);
// RFC 9162 section 2.1.3.2: whether `proof` shows `leaf_hash` at `index` in a tree of `size`
// leaves with root `root`.
bool VerifyInclusion(uint64_t index, uint64_t size, const Sha256Digest& leaf_hash,
                     absl::Span<const Sha256Digest> proof, const Sha256Digest& root);

// RFC 9162 section 2.1.4.1 consistency proof between sizes old_size <= new_size.
absl::StatusOr<std::vector<Sha256Digest>> ConsistencyProof(uint64_t old_size, uint64_t new_size,
                                                           const LeafHashFetcher& leaf);
// RFC 9162 section 2.1.4.2 verification of a consistency proof.
bool VerifyConsistency(uint64_t old_size, uint64_t new_size, const Sha256Digest& old_root,
                       const Sha256Digest& new_root, absl::Span<const Sha256Digest> proof);

// MTH over leaves [begin, end) fetched from `leaf` (O(log n) memory, O(n) fetches).
absl::StatusOr<Sha256Digest> SubtreeRoot(uint64_t begin, uint64_t end,
                                         const LeafHashFetcher& leaf);

}  // namespace bunker::crypto

#endif  // BUNKER_CRYPTO_MERKLE_H_

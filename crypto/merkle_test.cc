#include "crypto/merkle.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bunker::crypto {
namespace {

// The leaves of Certificate Transparency's reference Merkle tree tests (RFC 6962 / 9162).
std::vector<std::string> CtLeaves() {
  return {"",
          std::string("\x00", 1),
          "\x10",
          "\x20\x21",
          "\x30\x31",
          "\x40\x41\x42\x43",
          "\x50\x51\x52\x53\x54\x55\x56\x57",
          "\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"};
}

Sha256Digest Leaf(const std::string& s) {
  return MerkleLeafHash(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

// The recursive definition, straight from RFC 9162 section 2.1.1.
Sha256Digest ReferenceRoot(const std::vector<Sha256Digest>& leaves, size_t begin, size_t end) {
  const size_t n = end - begin;
  if (n == 0) return Sha256::Hash(std::string_view());
  if (n == 1) return leaves[begin];
  size_t k = 1;
  while (k * 2 < n) k *= 2;
  return MerkleNodeHash(ReferenceRoot(leaves, begin, begin + k), ReferenceRoot(leaves, begin + k, end));
}

std::vector<Sha256Digest> NumberedLeaves(size_t n) {
  std::vector<Sha256Digest> out;
  for (size_t i = 0; i < n; ++i) out.push_back(Leaf("leaf " + std::to_string(i)));
  return out;
}

LeafHashFetcher FetchFrom(const std::vector<Sha256Digest>& leaves) {
  return [&leaves](uint64_t i) -> absl::StatusOr<Sha256Digest> { return leaves[i]; };
}

TEST(MerkleTest, MatchesCertificateTransparencyRoots) {
  const char* expected[] = {
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
  };
  MerkleTreeBuilder b;
  EXPECT_EQ(ToHex(b.Root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const auto leaves = CtLeaves();
  for (size_t i = 0; i < leaves.size(); ++i) {
    b.AddLeafHash(Leaf(leaves[i]));
    EXPECT_EQ(ToHex(b.Root()), expected[i]) << "size " << i + 1;
  }
}

TEST(MerkleTest, BuilderMatchesRecursiveDefinition) {
  const auto leaves = NumberedLeaves(130);
  MerkleTreeBuilder b;
  for (size_t n = 1; n <= leaves.size(); ++n) {
    b.AddLeafHash(leaves[n - 1]);
    ASSERT_EQ(b.Root(), ReferenceRoot(leaves, 0, n)) << "size " << n;
    ASSERT_EQ(b.size(), n);
  }
}

TEST(MerkleTest, InclusionProofsVerifyAndRejectTampering) {
  const auto leaves = NumberedLeaves(37);
  for (uint64_t n = 1; n <= leaves.size(); ++n) {
    const Sha256Digest root = ReferenceRoot(leaves, 0, n);
    for (uint64_t i = 0; i < n; ++i) {
      auto proof = InclusionProof(i, n, FetchFrom(leaves));
      ASSERT_TRUE(proof.ok());
      EXPECT_TRUE(VerifyInclusion(i, n, leaves[i], *proof, root)) << i << "/" << n;
      EXPECT_FALSE(VerifyInclusion(i, n, leaves[(i + 1) % leaves.size()], *proof, root));
      if (!proof->empty()) {
        auto bad = *proof;
        bad[0][0] ^= 1;
        EXPECT_FALSE(VerifyInclusion(i, n, leaves[i], bad, root));
        bad = *proof;
        bad.pop_back();
        EXPECT_FALSE(VerifyInclusion(i, n, leaves[i], bad, root));
      }
      if (n > 1) {
        EXPECT_FALSE(VerifyInclusion((i + 1) % n, n, leaves[i], *proof, root));
      }
    }
  }
  EXPECT_FALSE(InclusionProof(5, 5, FetchFrom(leaves)).ok());
}

TEST(MerkleTest, ConsistencyProofsVerifyAndRejectTampering) {
  const auto leaves = NumberedLeaves(33);
  for (uint64_t n = 1; n <= leaves.size(); ++n) {
    const Sha256Digest new_root = ReferenceRoot(leaves, 0, n);
    for (uint64_t m = 1; m <= n; ++m) {
      const Sha256Digest old_root = ReferenceRoot(leaves, 0, m);
      auto proof = ConsistencyProof(m, n, FetchFrom(leaves));
      ASSERT_TRUE(proof.ok());
      EXPECT_TRUE(VerifyConsistency(m, n, old_root, new_root, *proof)) << m << "->" << n;
      if (m < n) {
        EXPECT_FALSE(VerifyConsistency(m, n, new_root, new_root, *proof));
        auto bad = *proof;
        bad.back()[31] ^= 0x80;
        EXPECT_FALSE(VerifyConsistency(m, n, old_root, new_root, bad));
      }
    }
  }
}

TEST(MerkleTest, SubtreeRootPropagatesFetchErrors) {
  LeafHashFetcher failing = [](uint64_t) -> absl::StatusOr<Sha256Digest> {
    return absl::DataLossError("gone");
  };
  EXPECT_EQ(SubtreeRoot(0, 3, failing).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace bunker::crypto

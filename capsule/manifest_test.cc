#include "capsule/manifest.h"

#include <cstring>
#include <functional>

#include "capnp/any.h"
#include "capnp/message.h"
#include "gtest/gtest.h"
#include "spec/capsule.capnp.h"

namespace bunker::capsule {
namespace {

Manifest Sample() {
  Manifest m;
  m.capsule_id.fill(7);
  m.created_at = 1790000000;
  const auto issuer = crypto::Identity::Generate();
  m.issuer = issuer.public_identity();
  m.chunk_count = 3;
  m.payload_size = 3 * m.chunk_size - 5;
  m.archive_size = m.payload_size - 100;
  m.index_size = 100;
  m.index_entries = 2;
  m.merkle_root.fill(1);
  m.key_commitment.fill(2);
  m.policy = "{\"version\": 1}";
  RecipientEntry r;
  r.fingerprint = issuer.fingerprint();
  r.wrapped.ephemeral.fill(3);
  r.wrapped.ciphertext.assign(48, 4);
  m.recipients.push_back(r);
  return m;
}

TEST(ManifestTest, RoundTripIsByteExact) {
  const Manifest m = Sample();
  auto bytes = EncodeManifest(m);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->size() % 8, 0u);
  auto back = DecodeManifest(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->capsule_id, m.capsule_id);
  EXPECT_EQ(back->policy, m.policy);
  EXPECT_EQ(back->issuer, m.issuer);
  EXPECT_EQ(back->recipients.size(), 1u);
  EXPECT_EQ(*EncodeManifest(*back), *bytes);
}

TEST(ManifestTest, TruncatedFlippedAndPaddedInputsNeverCrash) {
  const auto bytes = *EncodeManifest(Sample());
  for (size_t n = 0; n < bytes.size(); n += 8) {
    EXPECT_FALSE(DecodeManifest(absl::MakeConstSpan(bytes.data(), n)).ok()) << n;
  }
  auto padded = bytes;
  padded.insert(padded.end(), 8, 0);
  EXPECT_TRUE(absl::IsDataLoss(DecodeManifest(padded).status()));
  for (size_t i = 0; i < bytes.size(); ++i) {
    auto bad = bytes;
    bad[i] ^= 0x40;
    auto m = DecodeManifest(bad);  // may decode (a changed value) but must not crash
    if (m.ok()) {
      EXPECT_EQ(*EncodeManifest(*m), bad) << "decoded input must be canonical, offset " << i;
    }
  }
}

TEST(ManifestTest, RejectsWrongFieldLengthsAndSizes) {
  Manifest m = Sample();
  m.archive_size = m.payload_size + 1;
  auto bytes = EncodeManifest(m);
  ASSERT_TRUE(bytes.ok());
  EXPECT_TRUE(absl::IsDataLoss(DecodeManifest(*bytes).status()));
  Manifest none = Sample();
  none.recipients.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(EncodeManifest(none).status()));
  Manifest big = Sample();
  big.policy.assign(kMaxPolicySize + 1, ' ');
  EXPECT_TRUE(absl::IsInvalidArgument(EncodeManifest(big).status()));
}

// Re-encodes `bytes` with extra room in the root struct, filled by `fill`: a manifest from a
// hypothetical newer writer that this version must not half-understand.
std::vector<uint8_t> WithExtraRoom(const std::vector<uint8_t>& bytes, uint16_t extra_data,
                                   uint16_t extra_pointers,
                                   const std::function<void(capnp::AnyStruct::Builder)>& fill) {
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / 8);
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  kj::ArrayPtr<const capnp::word> segments[1] = {words.asPtr()};
  capnp::SegmentArrayMessageReader reader(kj::arrayPtr(segments, 1));
  auto old_root = reader.getRoot<capnp::AnyStruct>();
  capnp::MallocMessageBuilder builder;
  const auto data = old_root.getDataSection();
  const auto ptrs = old_root.getPointerSection();
  auto root = builder.initRoot<capnp::AnyPointer>().initAsAnyStruct(
      static_cast<uint16_t>(data.size() / 8 + extra_data),
      static_cast<uint16_t>(ptrs.size() + extra_pointers));
  std::memcpy(root.getDataSection().begin(), data.begin(), data.size());
  for (unsigned i = 0; i < ptrs.size(); ++i) root.getPointerSection()[i].set(ptrs[i]);
  fill(root);
  kj::Array<capnp::word> out = root.asReader().canonicalize();
  return std::vector<uint8_t>(out.asBytes().begin(), out.asBytes().end());
}

TEST(ManifestTest, UnknownFieldsAreRejectedNotIgnored) {
  const auto bytes = *EncodeManifest(Sample());
  // Control: the rebuild itself, with no extra room, decodes.
  ASSERT_TRUE(DecodeManifest(WithExtraRoom(bytes, 0, 0, [](capnp::AnyStruct::Builder) {})).ok());
  const auto extra_word = WithExtraRoom(bytes, 1, 0, [&](capnp::AnyStruct::Builder b) {
    b.getDataSection()[b.getDataSection().size() - 1] = 0x42;
  });
  EXPECT_TRUE(absl::IsDataLoss(DecodeManifest(extra_word).status()));
  const auto extra_pointer = WithExtraRoom(bytes, 0, 1, [](capnp::AnyStruct::Builder b) {
    auto ptrs = b.getPointerSection();
    ptrs[ptrs.size() - 1].setAs<capnp::Text>("surprise");
  });
  EXPECT_TRUE(absl::IsDataLoss(DecodeManifest(extra_pointer).status()));
}

TEST(ManifestTest, DuplicateRecipientIsRejected) {
  Manifest m = Sample();
  m.recipients.push_back(m.recipients[0]);
  auto bytes = EncodeManifest(m);
  ASSERT_TRUE(bytes.ok());
  EXPECT_TRUE(absl::IsDataLoss(DecodeManifest(*bytes).status()));
}

TEST(ManifestTest, WrapContextBindsIdAndPolicy) {
  Manifest a = Sample(), b = Sample();
  b.policy = "{}";
  EXPECT_NE(WrapContext(a), WrapContext(b));
  b = Sample();
  b.capsule_id[0] ^= 1;
  EXPECT_NE(WrapContext(a), WrapContext(b));
}

}  // namespace
}  // namespace bunker::capsule

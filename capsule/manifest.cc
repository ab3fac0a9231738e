#include "capsule/manifest.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "capnp/message.h"
#include "capnp/serialize.h"
#include "capsule/strict_decode.h"
#include "spec/capsule.capnp.h"

namespace bunker::capsule {
namespace {

kj::ArrayPtr<const capnp::byte> Bytes(absl::Span<const uint8_t> s) {
  return kj::arrayPtr(reinterpret_cast<const capnp::byte*>(s.data()), s.size());
}

template <size_t N>
absl::Status CopyFixed(capnp::Data::Reader in, std::array<uint8_t, N>& out, const char* field) {
  if (in.size() != N) {
    return absl::DataLossError(absl::StrCat("manifest field ", field, " has length ", in.size(),
                                            ", expected ", N));
  }
  std::memcpy(out.data(), in.begin(), N);
  return absl::OkStatus();
}

}  // namespace

std::string Manifest::IdHex() const { return crypto::ToHex(capsule_id); }

crypto::Sha256Digest Manifest::PolicyHash() const { return crypto::Sha256::Hash(policy); }

absl::StatusOr<std::vector<uint8_t>> EncodeManifest(const Manifest& m) {
  if (m.policy.size() > kMaxPolicySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy is ", m.policy.size(), " bytes; the limit is ", kMaxPolicySize));
  }
  if (m.recipients.empty() || m.recipients.size() > kMaxRecipients) {
    return absl::InvalidArgumentError(
        absl::StrCat("a capsule needs 1 to ", kMaxRecipients, " recipients"));
  }
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<schema::Manifest>();
  root.setFormatVersion(m.format_version);
  root.setCapsuleId(Bytes(m.capsule_id));
  root.setCreatedAt(m.created_at);
  auto issuer = root.initIssuer();
  issuer.setSignKey(Bytes(m.issuer.sign_key));
  issuer.setBoxKey(Bytes(m.issuer.box_key));
  root.setSuite(static_cast<uint16_t>(m.suite));
  root.setChunkSize(m.chunk_size);
  root.setChunkCount(m.chunk_count);
  root.setPayloadSize(m.payload_size);
  root.setArchiveSize(m.archive_size);
  root.setIndexSize(m.index_size);
  root.setIndexEntries(m.index_entries);
  root.setMerkleRoot(Bytes(m.merkle_root));
  root.setKeyCommitment(Bytes(m.key_commitment));
  root.setPolicy(capnp::Text::Reader(m.policy.data(), m.policy.size()));
  auto list = root.initRecipients(static_cast<unsigned>(m.recipients.size()));
  for (size_t i = 0; i < m.recipients.size(); ++i) {
    const RecipientEntry& r = m.recipients[i];
    auto e = list[static_cast<unsigned>(i)];
    e.setFingerprint(Bytes(r.fingerprint.bytes));
    e.setEphemeral(Bytes(r.wrapped.ephemeral));
    e.setWrappedKey(Bytes(r.wrapped.ciphertext));
  }
  kj::Array<capnp::word> words = capnp::canonicalize(root.asReader());
  auto bytes = words.asBytes();
  if (bytes.size() > kMaxManifestSize) {
    return absl::InvalidArgumentError("manifest too large (policy or recipients)");
  }
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

namespace {

// The fields of a canonical manifest message, checked as they are read (a kj::Exception
// escapes for a malformed message; StrictDecode turns it into an error).
absl::StatusOr<Manifest> ReadManifest(schema::Manifest::Reader root) {
  Manifest m;
  m.format_version = root.getFormatVersion();
  if (m.format_version != kFormatVersion) {
    return absl::DataLossError(absl::StrCat("manifest version ", m.format_version,
                                            " does not match the header"));
  }
  absl::Status s = CopyFixed(root.getCapsuleId(), m.capsule_id, "capsuleId");
  if (!s.ok()) return s;
  m.created_at = root.getCreatedAt();
  if (!root.hasIssuer()) return absl::DataLossError("manifest has no issuer");
  s = CopyFixed(root.getIssuer().getSignKey(), m.issuer.sign_key, "issuer.signKey");
  if (!s.ok()) return s;
  s = CopyFixed(root.getIssuer().getBoxKey(), m.issuer.box_key, "issuer.boxKey");
  if (!s.ok()) return s;
  if (!crypto::IsKnownSuite(root.getSuite())) {
    return absl::DataLossError(absl::StrCat("unknown cipher suite ", root.getSuite()));
  }
  m.suite = static_cast<crypto::Suite>(root.getSuite());
  m.chunk_size = root.getChunkSize();
  m.chunk_count = root.getChunkCount();
  m.payload_size = root.getPayloadSize();
  m.archive_size = root.getArchiveSize();
  m.index_size = root.getIndexSize();
  m.index_entries = root.getIndexEntries();
  if (m.archive_size > m.payload_size || m.payload_size - m.archive_size != m.index_size) {
    return absl::DataLossError("manifest sizes are inconsistent");
  }
  if (m.index_entries > m.index_size) {
    return absl::DataLossError("manifest index entry count is inconsistent");
  }
  s = CopyFixed(root.getMerkleRoot(), m.merkle_root, "merkleRoot");
  if (!s.ok()) return s;
  s = CopyFixed(root.getKeyCommitment(), m.key_commitment, "keyCommitment");
  if (!s.ok()) return s;
  auto policy = root.getPolicy();
  if (policy.size() > kMaxPolicySize) return absl::DataLossError("policy too large");
  m.policy.assign(policy.begin(), policy.size());
  auto recipients = root.getRecipients();
  if (recipients.size() == 0 || recipients.size() > kMaxRecipients) {
    return absl::DataLossError("manifest recipient count out of range");
  }
  m.recipients.reserve(recipients.size());
  for (auto r : recipients) {
    RecipientEntry e;
    s = CopyFixed(r.getFingerprint(), e.fingerprint.bytes, "recipient.fingerprint");
    if (!s.ok()) return s;
    s = CopyFixed(r.getEphemeral(), e.wrapped.ephemeral, "recipient.ephemeral");
    if (!s.ok()) return s;
    auto wk = r.getWrappedKey();
    if (wk.size() != kDataKeySize + kTagSize) {
      return absl::DataLossError("manifest field recipient.wrappedKey has a wrong length");
    }
    e.wrapped.ciphertext.assign(wk.begin(), wk.end());
    for (const RecipientEntry& prior : m.recipients) {
      if (prior.fingerprint == e.fingerprint) {
        return absl::DataLossError("manifest names a recipient twice");
      }
    }
    m.recipients.push_back(std::move(e));
  }
  return m;
}

}  // namespace

absl::StatusOr<Manifest> DecodeManifest(absl::Span<const uint8_t> bytes) {
  // Canonical messages have no far pointers or unreachable data, so each pass reads each word at
  // most once: four times the words bounds the canonical check and the field reads.
  const StrictDecodeLimits limits{kMaxManifestSize, /*traversal_factor=*/4, /*nesting=*/16};
  // Encoding the decoded value must reproduce the input byte for byte: no field this version
  // does not know, no alternative encoding of a value (e.g. an empty policy), no slack.
  return StrictDecode<schema::Manifest>(
      bytes, limits, ReadManifest, EncodeManifest, [](StrictDecodeFailure failure) {
        switch (failure) {
          case StrictDecodeFailure::kBadLength:
            return absl::DataLossError("corrupt manifest (bad length)");
          case StrictDecodeFailure::kNotCanonical:
            return absl::DataLossError("manifest is not canonical");
          case StrictDecodeFailure::kMalformed:
            return absl::DataLossError("corrupt manifest (malformed Cap'n Proto message)");
          case StrictDecodeFailure::kNotReencoded:
            break;
        }
        return absl::DataLossError("manifest is not in canonical form (unknown or extra data)");
      });
}

std::vector<uint8_t> SignatureInput(absl::Span<const uint8_t> header,
                                    absl::Span<const uint8_t> manifest_bytes) {
  const size_t label = kSignatureLabel.size() + 1;
  std::vector<uint8_t> out(label + header.size() + manifest_bytes.size());
  std::memcpy(out.data(), kSignatureLabel.data(), kSignatureLabel.size());
  out[kSignatureLabel.size()] = 0;
  if (!header.empty()) std::memcpy(out.data() + label, header.data(), header.size());
  if (!manifest_bytes.empty()) {
    std::memcpy(out.data() + label + header.size(), manifest_bytes.data(), manifest_bytes.size());
  }
  return out;
}

std::vector<uint8_t> WrapContext(const Manifest& m) {
  std::vector<uint8_t> ctx;
  ctx.push_back(static_cast<uint8_t>(m.format_version >> 8));
  ctx.push_back(static_cast<uint8_t>(m.format_version & 0xff));
  ctx.insert(ctx.end(), m.capsule_id.begin(), m.capsule_id.end());
  const crypto::Sha256Digest ph = m.PolicyHash();
  ctx.insert(ctx.end(), ph.begin(), ph.end());
  // The issuer too: another trusted issuer who re-signs this manifest as their own changes the
  // context, and no recipient entry unwraps.
  ctx.insert(ctx.end(), m.issuer.sign_key.begin(), m.issuer.sign_key.end());
  return ctx;
}

}  // namespace bunker::capsule

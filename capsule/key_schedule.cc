#include "capsule/key_schedule.h"

#include "crypto/hkdf.h"

namespace bunker::capsule {
namespace {

std::vector<uint8_t> Info(std::string_view label, const Manifest& m) {
  std::vector<uint8_t> info(label.begin(), label.end());
  info.push_back(0);
  const uint16_t suite = static_cast<uint16_t>(m.suite);
  const uint8_t params[8] = {
      static_cast<uint8_t>(m.format_version >> 8), static_cast<uint8_t>(m.format_version),
      static_cast<uint8_t>(suite >> 8),            static_cast<uint8_t>(suite),
      static_cast<uint8_t>(m.chunk_size >> 24),    static_cast<uint8_t>(m.chunk_size >> 16),
      static_cast<uint8_t>(m.chunk_size >> 8),     static_cast<uint8_t>(m.chunk_size)};
  info.insert(info.end(), params, params + sizeof params);
  info.insert(info.end(), m.capsule_id.begin(), m.capsule_id.end());
  return info;
}

}  // namespace

absl::StatusOr<PayloadKeys> DerivePayloadKeys(const crypto::SecretBytes& data_key,
                                              const Manifest& m) {
  if (data_key.size() != kDataKeySize) return absl::InvalidArgumentError("bad data key size");
  crypto::SecretBytes payload_key(crypto::kAeadKeySize);
  absl::Status s = crypto::HkdfSha256(data_key.span(), m.capsule_id,
                                      Info(kPayloadKeyLabel, m), payload_key.mutable_span());
  if (!s.ok()) return s;
  PayloadKeys keys;
  s = crypto::HkdfSha256(data_key.span(), m.capsule_id, Info(kCommitmentLabel, m),
                         absl::MakeSpan(keys.commitment));
  if (!s.ok()) return s;
  absl::StatusOr<std::unique_ptr<crypto::Aead>> aead =
      crypto::Aead::Create(m.suite, payload_key.span());
  if (!aead.ok()) return aead.status();
  keys.aead = std::move(*aead);
  return keys;
}

}  // namespace bunker::capsule

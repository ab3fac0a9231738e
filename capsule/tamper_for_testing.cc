#include "capsule/tamper_for_testing.h"

namespace bunker::capsule::testing {

absl::StatusOr<Parts> Split(const std::vector<uint8_t>& c) {
  if (c.size() < kHeaderSize + kSignatureSize + kFooterSize) {
    return absl::InvalidArgumentError("too short to split");
  }
  const uint64_t m = LoadBigEndian64(c.data() + c.size() - kFooterSize);
  if (m > c.size() - kHeaderSize - kSignatureSize - kFooterSize) {
    return absl::InvalidArgumentError("bad manifest length");
  }
  absl::StatusOr<Manifest> manifest = DecodeManifest(
      absl::MakeConstSpan(c.data() + c.size() - kFooterSize - kSignatureSize - m, m));
  if (!manifest.ok()) return manifest.status();
  const Geometry g = manifest->geometry(m);
  if (g.FileSize() != c.size()) return absl::InvalidArgumentError("size mismatch");
  auto slice = [&c](uint64_t from, uint64_t to) {
    return std::vector<uint8_t>(c.begin() + static_cast<std::ptrdiff_t>(from),
                                c.begin() + static_cast<std::ptrdiff_t>(to));
  };
  Parts p;
  p.header = slice(0, kHeaderSize);
  p.chunks = slice(kHeaderSize, g.TableOffset());
  p.table = slice(g.TableOffset(), g.ManifestOffset());
  p.manifest = slice(g.ManifestOffset(), g.SignatureOffset());
  p.signature = slice(g.SignatureOffset(), g.SignatureOffset() + kSignatureSize);
  p.footer = slice(c.size() - kFooterSize, c.size());
  return p;
}

std::vector<uint8_t> Join(const Parts& p) {
  std::vector<uint8_t> out;
  for (const auto* part : {&p.header, &p.chunks, &p.table, &p.manifest, &p.signature, &p.footer}) {
    out.insert(out.end(), part->begin(), part->end());
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> Resign(const std::vector<uint8_t>& capsule,
                                            const crypto::Identity& signer,
                                            const std::function<void(Manifest&)>& mutate) {
  absl::StatusOr<Parts> p = Split(capsule);
  if (!p.ok()) return p.status();
  absl::StatusOr<Manifest> m = DecodeManifest(p->manifest);
  if (!m.ok()) return m.status();
  mutate(*m);
  absl::StatusOr<std::vector<uint8_t>> bytes = EncodeManifest(*m);
  if (!bytes.ok()) return bytes.status();
  p->manifest = *bytes;
  const auto sig = signer.Sign(SignatureInput(p->header, p->manifest));
  p->signature.assign(sig.begin(), sig.end());
  const auto footer = EncodeFooter(p->manifest.size());
  p->footer.assign(footer.begin(), footer.end());
  return Join(*p);
}

}  // namespace bunker::capsule::testing

// libFuzzer target: the header/footer/manifest parser and the whole keyless read path.
// Any input must be rejected cleanly or, if it parses, re-encode to the same manifest bytes.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "capsule/io.h"
#include "capsule/manifest.h"
#include "capsule/reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bunker::capsule;
  // The manifest decoder alone: parse then re-serialize must reproduce the input.
  auto m = DecodeManifest(absl::MakeConstSpan(data, size));
  if (m.ok()) {
    auto again = EncodeManifest(*m);
    if (!again.ok() || *again != std::vector<uint8_t>(data, data + size)) std::abort();
  }
  // The full structural check of a capsule file.
  auto untrusted = CapsuleReader::OpenUntrusted(MemoryFile(std::vector<uint8_t>(data, data + size)));
  if (untrusted.ok()) {
    // Trust whoever signed it, to reach the chunk table and chunk checks too.
    const bunker::crypto::PublicIdentity issuer = (*untrusted)->manifest().issuer;
    auto reader = CapsuleReader::Open(MemoryFile(std::vector<uint8_t>(data, data + size)),
                                      absl::MakeConstSpan(&issuer, 1));
    if (reader.ok()) (void)(*reader)->VerifyChunks(1, nullptr);
  }
  return 0;
}

// SHA-256 through OpenSSL EVP (about 7x libsodium's speed on these machines; see README).
#ifndef BUNKER_CRYPTO_SHA256_H_
#define BUNKER_CRYPTO_SHA256_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/types/span.h"

namespace bunker::crypto {

inline constexpr size_t kSha256Size = 32;
using Sha256Digest = std::array<uint8_t, kSha256Size>;

// Incremental SHA-256. Not thread-safe; cheap to create. Finish() may be called once; after it
// the object must be Reset() before reuse.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void Update(absl::Span<const uint8_t> data);
  void Update(std::string_view data);
  Sha256Digest Finish();
  void Reset();

  // One-shot helpers.
  static Sha256Digest Hash(absl::Span<const uint8_t> data);
  static Sha256Digest Hash(std::string_view data);

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// Lowercase hex of arbitrary bytes (for digests and ids, never for secrets).
std::string ToHex(absl::Span<const uint8_t> bytes);

}  // namespace bunker::crypto

#endif  // BUNKER_CRYPTO_SHA256_H_

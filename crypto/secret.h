// Secret key material and the few helpers that must treat it carefully.
//
// SecretBytes lives in libsodium's guarded heap (sodium_malloc): guard pages, mlock'ed so it is
// never swapped, excluded from core dumps, and wiped when freed. It cannot be copied implicitly
// and has no stream operator, so it is awkward to print by accident.
#ifndef BUNKER_CRYPTO_SECRET_H_
#define BUNKER_CRYPTO_SECRET_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/types/span.h"

namespace bunker::crypto {

// Initializes libsodium once (thread-safe, idempotent). Every function in crypto/ calls it;
// programs may call it early so that a broken RNG is reported before any work starts.
// Aborts the process if libsodium cannot initialize: nothing here is safe without it.
void EnsureInitialized();

class SecretBytes {
 public:
  // An empty secret (size 0).
  SecretBytes() = default;
  // `size` zero bytes in guarded memory. Throws std::bad_alloc when guarded memory is exhausted.
  explicit SecretBytes(size_t size);
  // A copy of `bytes` in guarded memory.
  static SecretBytes CopyOf(absl::Span<const uint8_t> bytes);
  static SecretBytes CopyOf(std::string_view bytes);
  // `size` bytes from the system CSPRNG (randombytes_buf).
  static SecretBytes Random(size_t size);

  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();

  // Explicit deep copy (the only way to duplicate a secret).
  SecretBytes Clone() const;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  absl::Span<const uint8_t> span() const { return {data_, size_}; }
  absl::Span<uint8_t> mutable_span() { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Compares in time that depends only on the lengths. Different lengths compare unequal.
bool ConstantTimeEquals(absl::Span<const uint8_t> a, absl::Span<const uint8_t> b);

// Fills `out` from the system CSPRNG.
void RandomBytes(absl::Span<uint8_t> out);

// Overwrites `bytes` with zeros in a way the compiler cannot elide (sodium_memzero).
void Wipe(absl::Span<uint8_t> bytes);

}  // namespace bunker::crypto

#endif  // BUNKER_CRYPTO_SECRET_H_

#include "crypto/secret.h"

#include <sodium.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace bunker::crypto {

void EnsureInitialized() {
  // A function-local static is initialized exactly once even under concurrent first calls
  // (C++11 "magic statics"); sodium_init() itself is also idempotent.
  static const bool initialized = [] { return sodium_init() >= 0; }();
  if (!initialized) {
    // Without libsodium there is no trustworthy RNG and no guarded heap; carrying on could
    // produce predictable keys, so stop here rather than return an error someone may ignore.
    std::fputs("bunker: libsodium failed to initialize; aborting\n", stderr);
    std::abort();
  }
}

SecretBytes::SecretBytes(size_t size) {
  if (size == 0) return;
  EnsureInitialized();
  void* p = sodium_malloc(size);
  if (p == nullptr) throw std::bad_alloc();
  // sodium_malloc fills new memory with 0xdb to flush out uninitialized reads; the contract
  // here is zero bytes.
  sodium_memzero(p, size);
  data_ = static_cast<uint8_t*>(p);
  size_ = size;
}

SecretBytes SecretBytes::CopyOf(absl::Span<const uint8_t> bytes) {
  SecretBytes s(bytes.size());
  if (!bytes.empty()) std::memcpy(s.data_, bytes.data(), bytes.size());
  return s;
}

SecretBytes SecretBytes::CopyOf(std::string_view bytes) {
  return CopyOf(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

SecretBytes SecretBytes::Random(size_t size) {
  SecretBytes s(size);
  if (size != 0) randombytes_buf(s.data_, size);
  return s;
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    // Swap, so that our old buffer is released (and wiped) by `other`'s destructor rather than
    // lingering; then release it right away to keep the guarded heap small.
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    SecretBytes discard(std::move(other));
  }
  return *this;
}

SecretBytes::~SecretBytes() {
  // sodium_free wipes the whole allocation before unmapping it.
  if (data_ != nullptr) sodium_free(data_);
}

SecretBytes SecretBytes::Clone() const { return CopyOf(span()); }

bool ConstantTimeEquals(absl::Span<const uint8_t> a, absl::Span<const uint8_t> b) {
  // Lengths are not secret (the header promises time depending on them only).
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  EnsureInitialized();
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

void RandomBytes(absl::Span<uint8_t> out) {
  if (out.empty()) return;
  EnsureInitialized();
  randombytes_buf(out.data(), out.size());
}

void Wipe(absl::Span<uint8_t> bytes) {
  if (bytes.empty()) return;
  EnsureInitialized();
  sodium_memzero(bytes.data(), bytes.size());
}

}  // namespace bunker::crypto

#include "crypto/aead.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <climits>
#include <functional>
#include <utility>

#include "crypto/openssl_handles.h"

namespace bunker::crypto {
namespace {

constexpr std::string_view kAes256GcmName = "aes-256-gcm";
constexpr std::string_view kChaCha20Poly1305Name = "chacha20-poly1305";

// EVP_CipherUpdate takes an int length; feed larger inputs in slices. Both suites are stream
// modes, so slicing does not change the output.
constexpr size_t kMaxSlice = size_t{1} << 30;
static_assert(kMaxSlice <= static_cast<size_t>(INT_MAX));

// OpenSSL 3 algorithm names (providers/implementations, "default" provider).
const char* OpenSslName(Suite suite) {
  switch (suite) {
    case Suite::kAes256Gcm:
      return "AES-256-GCM";
    case Suite::kChaCha20Poly1305:
      return "ChaCha20-Poly1305";
  }
  return nullptr;
}

// True when the two byte ranges share memory but do not start at the same address. Exact
// aliasing (in-place) is fine for stream ciphers; a shifted overlap would let the cipher
// overwrite input it has not read yet.
bool PartiallyOverlaps(const uint8_t* a, size_t a_size, const uint8_t* b, size_t b_size) {
  if (a_size == 0 || b_size == 0 || a == b) return false;
  // std::less gives a total order even for pointers into unrelated objects.
  std::less<const uint8_t*> lt;
  return lt(a, b + b_size) && lt(b, a + a_size);
}

// Feeds associated data (out == nullptr tells EVP this is AAD).
bool FeedAad(EVP_CIPHER_CTX* ctx, absl::Span<const uint8_t> aad) {
  while (!aad.empty()) {
    const size_t n = std::min(aad.size(), kMaxSlice);
    int written = 0;
    if (EVP_CipherUpdate(ctx, nullptr, &written, aad.data(), static_cast<int>(n)) != 1) {
      return false;
    }
    aad.remove_prefix(n);
  }
  return true;
}

// Encrypts or decrypts `in` into `out` (same size, may be the same memory).
bool Transform(EVP_CIPHER_CTX* ctx, absl::Span<const uint8_t> in, uint8_t* out) {
  while (!in.empty()) {
    const size_t n = std::min(in.size(), kMaxSlice);
    int written = 0;
    if (EVP_CipherUpdate(ctx, out, &written, in.data(), static_cast<int>(n)) != 1 ||
        written != static_cast<int>(n)) {
      return false;
    }
    in.remove_prefix(n);
    out += n;
  }
  return true;
}

// Both suites are stream modes: the final call emits no bytes; it completes the tag (Seal) or
// compares it (Open).
bool FinalizeStream(EVP_CIPHER_CTX* ctx) {
  uint8_t unused[1];
  int written = 0;
  return EVP_CipherFinal_ex(ctx, unused, &written) == 1 && written == 0;
}

constexpr int kTagLength = static_cast<int>(kAeadTagSize);

}  // namespace

std::string_view SuiteName(Suite suite) {
  switch (suite) {
    case Suite::kAes256Gcm:
      return kAes256GcmName;
    case Suite::kChaCha20Poly1305:
      return kChaCha20Poly1305Name;
  }
  return "unknown";
}

absl::StatusOr<Suite> ParseSuite(std::string_view name) {
  if (name == kAes256GcmName) return Suite::kAes256Gcm;
  if (name == kChaCha20Poly1305Name) return Suite::kChaCha20Poly1305;
  return absl::InvalidArgumentError(
      "unknown AEAD suite; expected \"aes-256-gcm\" or \"chacha20-poly1305\"");
}

bool IsKnownSuite(uint16_t value) {
  return value == static_cast<uint16_t>(Suite::kAes256Gcm) ||
         value == static_cast<uint16_t>(Suite::kChaCha20Poly1305);
}

struct Aead::Impl {
  openssl::EvpCipherPtr cipher;  // fetched once; EVP_CIPHER is immutable and refcounted
  SecretBytes key;
};

Aead::Aead(Suite suite, std::unique_ptr<Impl> impl) : suite_(suite), impl_(std::move(impl)) {}
Aead::~Aead() = default;

absl::StatusOr<std::unique_ptr<Aead>> Aead::Create(Suite suite, absl::Span<const uint8_t> key) {
  const char* name = OpenSslName(suite);
  if (name == nullptr) return absl::InvalidArgumentError("unknown AEAD suite");
  if (key.size() != kAeadKeySize) {
    return absl::InvalidArgumentError("AEAD key must be 32 bytes");
  }
  openssl::ErrorQueueGuard error_guard;
  // Fetching is a locked lookup in OpenSSL's method store; doing it once here keeps Seal/Open
  // free of it.
  openssl::EvpCipherPtr cipher(EVP_CIPHER_fetch(nullptr, name, nullptr));
  if (cipher == nullptr) return absl::InternalError("OpenSSL does not provide the AEAD suite");
  // Both suites are defined with these sizes; a mismatch means a provider we do not understand.
  if (EVP_CIPHER_get_key_length(cipher.get()) != static_cast<int>(kAeadKeySize) ||
      EVP_CIPHER_get_iv_length(cipher.get()) != static_cast<int>(kAeadNonceSize)) {
    return absl::InternalError("OpenSSL AEAD suite has unexpected key or nonce size");
  }
  auto impl = std::make_unique<Impl>();
  impl->cipher = std::move(cipher);
  impl->key = SecretBytes::CopyOf(key);
  return std::unique_ptr<Aead>(new Aead(suite, std::move(impl)));
}

absl::Status Aead::Seal(absl::Span<const uint8_t> nonce, absl::Span<const uint8_t> aad,
                        absl::Span<const uint8_t> plaintext, absl::Span<uint8_t> out) const {
  if (nonce.size() != kAeadNonceSize) {
    return absl::InvalidArgumentError("AEAD nonce must be 12 bytes");
  }
  if (out.size() < kAeadTagSize || out.size() - kAeadTagSize != plaintext.size()) {
    return absl::InvalidArgumentError("AEAD Seal output must be plaintext size + 16 bytes");
  }
  if (PartiallyOverlaps(plaintext.data(), plaintext.size(), out.data(), out.size())) {
    return absl::InvalidArgumentError("AEAD Seal buffers overlap but are not in-place");
  }

  openssl::ErrorQueueGuard error_guard;
  // A context per call: EVP_CIPHER_CTX holds per-message state, so sharing one would make Seal
  // neither const nor thread-safe. Its key schedule is cleansed by EVP_CIPHER_CTX_free.
  openssl::EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  uint8_t* tag = out.data() + plaintext.size();
  const bool ok =
      ctx != nullptr &&
      EVP_CipherInit_ex2(ctx.get(), impl_->cipher.get(), impl_->key.data(), nonce.data(),
                         /*enc=*/1, nullptr) == 1 &&
      FeedAad(ctx.get(), aad) && Transform(ctx.get(), plaintext, out.data()) &&
      FinalizeStream(ctx.get()) &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, kTagLength, tag) == 1;
  if (!ok) {
    // Half-written output must not be mistaken for a valid ciphertext. (In-place, this also
    // destroys the plaintext; only a failure inside OpenSSL gets here.)
    Wipe(out);
    return absl::InternalError("AEAD encryption failed in OpenSSL");
  }
  return absl::OkStatus();
}

absl::Status Aead::Open(absl::Span<const uint8_t> nonce, absl::Span<const uint8_t> aad,
                        absl::Span<const uint8_t> ciphertext, absl::Span<uint8_t> out) const {
  if (nonce.size() != kAeadNonceSize) {
    return absl::InvalidArgumentError("AEAD nonce must be 12 bytes");
  }
  if (ciphertext.size() < kAeadTagSize) {
    return absl::InvalidArgumentError("AEAD ciphertext is shorter than its 16-byte tag");
  }
  const size_t body_size = ciphertext.size() - kAeadTagSize;
  if (out.size() != body_size) {
    return absl::InvalidArgumentError("AEAD Open output must be ciphertext size - 16 bytes");
  }
  if (PartiallyOverlaps(ciphertext.data(), ciphertext.size(), out.data(), out.size())) {
    return absl::InvalidArgumentError("AEAD Open buffers overlap but are not in-place");
  }

  // Copy the tag out of the caller's buffer before any plaintext is written.
  std::array<uint8_t, kAeadTagSize> tag;
  std::copy_n(ciphertext.data() + body_size, kAeadTagSize, tag.begin());

  openssl::ErrorQueueGuard error_guard;
  openssl::EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  const bool ok =
      ctx != nullptr &&
      EVP_CipherInit_ex2(ctx.get(), impl_->cipher.get(), impl_->key.data(), nonce.data(),
                         /*enc=*/0, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, kTagLength, tag.data()) == 1 &&
      FeedAad(ctx.get(), aad) && Transform(ctx.get(), ciphertext.first(body_size), out.data());
  if (!ok) {
    Wipe(out);
    return absl::InternalError("AEAD decryption failed in OpenSSL");
  }
  // EVP decrypts as it goes, so unauthenticated plaintext sits in `out` until the final call
  // compares tags (in constant time, CRYPTO_memcmp). It must not survive a failed comparison.
  if (!FinalizeStream(ctx.get())) {
    Wipe(out);
    return absl::DataLossError("authentication failed");
  }
  return absl::OkStatus();
}

}  // namespace bunker::crypto

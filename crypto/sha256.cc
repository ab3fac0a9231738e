#include "crypto/sha256.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

#include "crypto/openssl_handles.h"

namespace bunker::crypto {
namespace {

// The interface has no error channel: SHA-256 over memory cannot fail except when OpenSSL is
// out of memory or broken. A wrong digest would be worse than a crash, so stop.
[[noreturn]] void DigestFailure(const char* what) {
  std::fprintf(stderr, "bunker: OpenSSL SHA-256 %s failed; aborting\n", what);
  std::abort();
}

// EVP_sha256() is OpenSSL 3's legacy handle: every init with it looks the implementation up in
// the provider store again (EVP_MD_fetch: locks, a hash-table lookup). For the 65-byte Merkle
// node hashes that was over half the cost: a reader checking a 3 GiB capsule's chunk table
// (3,083 leaves) spent about 1 ms there before its first byte (issue 9). Fetched once per
// process instead; held until exit (a process-lifetime object, reachable, never freed).
const EVP_MD* Sha256Md() {
  static const EVP_MD* const md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA2-256", nullptr);
    if (fetched == nullptr) DigestFailure("fetch");
    return fetched;
  }();
  return md;
}

void InitSha256(EVP_MD_CTX* ctx) {
  if (EVP_DigestInit_ex(ctx, Sha256Md(), nullptr) != 1) DigestFailure("init");
}

}  // namespace

struct Sha256::Ctx {
  openssl::EvpMdCtxPtr md;
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md.reset(EVP_MD_CTX_new());
  if (ctx_->md == nullptr) throw std::bad_alloc();
  InitSha256(ctx_->md.get());
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::Update(absl::Span<const uint8_t> data) {
  if (data.empty()) return;
  if (EVP_DigestUpdate(ctx_->md.get(), data.data(), data.size()) != 1) DigestFailure("update");
}

void Sha256::Update(std::string_view data) {
  Update(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

Sha256Digest Sha256::Finish() {
  Sha256Digest digest;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_->md.get(), digest.data(), &len) != 1 || len != digest.size()) {
    DigestFailure("final");
  }
  // Re-arm immediately: a caller who forgets Reset() then hashes from scratch instead of
  // tripping over a finalized EVP context.
  InitSha256(ctx_->md.get());
  return digest;
}

void Sha256::Reset() { InitSha256(ctx_->md.get()); }

Sha256Digest Sha256::Hash(absl::Span<const uint8_t> data) {
  Sha256Digest digest;
  unsigned int len = 0;
  // An empty Span may carry data() == nullptr; never hand OpenSSL a null input pointer.
  static constexpr uint8_t kEmpty = 0;
  const uint8_t* p = data.empty() ? &kEmpty : data.data();
  if (EVP_Digest(p, data.size(), digest.data(), &len, Sha256Md(), nullptr) != 1 ||
      len != digest.size()) {
    DigestFailure("one-shot");
  }
  return digest;
}

Sha256Digest Sha256::Hash(std::string_view data) {
  return Hash(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

std::string ToHex(absl::Span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0f]);
  }
  return out;
}

}  // namespace bunker::crypto

#include "crypto/keys.h"

#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "crypto/hkdf.h"
#include "crypto/openssl_handles.h"
#include "crypto/sha256.h"
#include "crypto/keys_internal.h"
#include "crypto/raw_key_pem.h"
#include "crypto/status_macros.h"

namespace bunker::crypto {
namespace {

static_assert(kEd25519PublicKeySize == crypto_sign_PUBLICKEYBYTES);
static_assert(kEd25519SeedSize == crypto_sign_SEEDBYTES);
static_assert(kEd25519SignatureSize == crypto_sign_BYTES);
static_assert(kX25519KeySize == crypto_scalarmult_BYTES);
static_assert(kX25519KeySize == crypto_scalarmult_SCALARBYTES);
static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == 32);
static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == 16);

// keys.h, "Fingerprint".
constexpr std::string_view kFingerprintLabel = "bunker/v1 fingerprint";
constexpr std::string_view kFingerprintPrefix = "bk1:";
// RFC 4648 section 6 alphabet, lowercased.
constexpr char kBase32Alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
// ceil(128 / 5): 25 full groups plus one character carrying 3 data bits and 2 zero bits.
constexpr size_t kFingerprintChars = 26;

constexpr std::string_view kPrivateLabel = "PRIVATE KEY";
constexpr std::string_view kPublicLabel = "PUBLIC KEY";
constexpr std::string_view kEncryptedPrivateLabel = "ENCRYPTED PRIVATE KEY";

// These functions have no error channel (key generation, encoding known-good keys): the only
// way for them to fail is an out-of-memory or broken crypto library, so stop rather than hand
// back a corrupt key.
[[noreturn]] void KeyLibraryFailure(const char* what) {
  std::fprintf(stderr, "bunker: %s failed; aborting\n", what);
  std::abort();
}

using keys_internal::NonNull;

// absl::string_view is not std::string_view in every Abseil build (Debian's is separate), so
// these stay in std terms.
bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

int Base32Value(char c) {
  if (c >= 'a' && c <= 'z') return c - 'a';
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= '2' && c <= '7') return c - '2' + 26;
  return -1;
}

// ---- PEM layout ---------------------------------------------------------------------------

// True if every character of `line` is of the standard base64 alphabet or '=' (RFC 4648 4).
bool IsBase64Line(std::string_view line) {
  for (const char c : line) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || c == '=';
    if (!ok) return false;
  }
  return true;
}

// OpenSSL's PEM reader skips any text before a "-----BEGIN" line and, when a block does not
// decode, silently moves on to the next one of an acceptable type. So "exactly two blocks of
// this type, nothing else" cannot be left to it: check the layout first, then let OpenSSL
// decode. Any line that merely contains a marker counts, so that nothing OpenSSL might treat as
// a block escapes the count.
//
// Returns the offset just past the first block's END line, so the caller can tell whether
// OpenSSL's first read consumed exactly the first block.
absl::StatusOr<size_t> CheckPemLayout(std::string_view pem, std::string_view want_label,
                                      std::string_view what) {
  const std::string prefix = std::string(what) + " PEM: ";
  auto invalid = [&prefix](std::string_view reason) {
    return absl::InvalidArgumentError(prefix + std::string(reason));
  };
  constexpr std::string_view kDashes = "-----";
  constexpr std::string_view kBegin = "-----BEGIN ";
  constexpr std::string_view kEnd = "-----END ";

  const size_t total = pem.size();
  size_t first_block_end = 0;
  int blocks = 0;
  bool inside = false;
  while (!pem.empty()) {
    const size_t eol = pem.find('\n');
    std::string_view line = pem.substr(0, eol);
    pem.remove_prefix(eol == std::string_view::npos ? pem.size() : eol + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    if (line.find("-----BEGIN") == std::string_view::npos &&
        line.find("-----END") == std::string_view::npos) {
      // Inside a block, one rule instead of OpenSSL's (which takes a leading space or a blank
      // line after BEGIN but not one before END, and PEM headers): only base64 characters,
      // at least one. A reimplementation can then tell exactly which files are keys.
      if (inside && (line.empty() || !IsBase64Line(line))) {
        return invalid(
            "a line inside a block is not base64 (no empty lines, leading spaces or headers)");
      }
      continue;
    }
    const bool begin = StartsWith(line, kBegin);
    const bool end = StartsWith(line, kEnd);
    if ((!begin && !end) || !EndsWith(line, kDashes) ||
        line.size() < (begin ? kBegin : kEnd).size() + kDashes.size()) {
      return invalid("malformed BEGIN/END line");
    }
    std::string_view label = line.substr((begin ? kBegin : kEnd).size());
    label.remove_suffix(kDashes.size());
    if (label != want_label) {
      // Fixed texts only: the label is input and is not echoed.
      if (label == kEncryptedPrivateLabel) {
        return invalid("encrypted private keys are not supported");
      }
      if (want_label == kPrivateLabel && label == kPublicLabel) {
        return invalid("found a PUBLIC KEY block; this looks like a public identity");
      }
      if (want_label == kPublicLabel && label == kPrivateLabel) {
        return invalid("found a PRIVATE KEY block; this looks like a private identity");
      }
      return invalid("found a PEM block of an unexpected type");
    }
    if (begin == inside) return invalid("BEGIN and END lines do not pair up");
    inside = begin;
    if (begin) ++blocks;
    if (!begin && blocks == 1) first_block_end = total - pem.size();
  }
  if (inside) return invalid("last block has no END line");
  if (blocks != 2) {
    return invalid("expected 2 " + std::string(want_label) + " blocks (Ed25519, X25519), found " +
                   std::to_string(blocks));
  }
  return first_block_end;
}

// True if OpenSSL's last read ended within the block that ends at `block_end`. A PEM reader
// that cannot decode a block moves on to the next, so a key may come from a later block than
// the one we asked for; that must count as a failure of the block we asked for.
bool ReadStayedInBlock(BIO* bio, size_t block_end) {
  const long pos = BIO_tell(bio);
  return pos >= 0 && static_cast<size_t>(pos) <= block_end;
}

// Never prompt on a terminal for a passphrase (OpenSSL's default callback would).
int RefusePassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

openssl::BioPtr ReadOnlyBio(std::string_view pem) {
  // Reads straight from the caller's buffer; nothing is copied.
  return openssl::BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

const char* KeyTypeName(int type) { return type == EVP_PKEY_ED25519 ? "Ed25519" : "X25519"; }

// The public key OpenSSL holds for a parsed key.
absl::StatusOr<std::array<uint8_t, 32>> RawPublicKey(EVP_PKEY* pkey) {
  std::array<uint8_t, 32> raw;
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(pkey, raw.data(), &len) != 1 || len != raw.size()) {
    return absl::InvalidArgumentError("PEM block has a public key of the wrong size");
  }
  return raw;
}

struct RawKeyPair {
  SecretBytes private_key;
  std::array<uint8_t, 32> public_key;
};

// Reads the next "PRIVATE KEY" block, which must end by offset `block_end` and hold a key of
// `type`, and returns its raw 32-byte private key with the public key OpenSSL associates with
// it. `ordinal` names the block in errors.
absl::StatusOr<RawKeyPair> ReadRawPrivateKey(BIO* bio, size_t block_end, int type,
                                             const char* ordinal) {
  const std::string where = std::string("private identity PEM: ") + ordinal + " block ";
  openssl::EvpPkeyPtr pkey(PEM_read_bio_PrivateKey(bio, nullptr, RefusePassphrase, nullptr));
  if (pkey == nullptr || !ReadStayedInBlock(bio, block_end)) {
    return absl::InvalidArgumentError(where + "is not a valid PKCS#8 private key");
  }
  if (EVP_PKEY_get_base_id(pkey.get()) != type) {
    return absl::InvalidArgumentError(where + "is not an " + KeyTypeName(type) + " key");
  }
  size_t len = 0;
  if (EVP_PKEY_get_raw_private_key(pkey.get(), nullptr, &len) != 1 || len != 32) {
    return absl::InvalidArgumentError(where + "has a private key of the wrong size");
  }
  RawKeyPair pair{SecretBytes(len), {}};
  if (EVP_PKEY_get_raw_private_key(pkey.get(), pair.private_key.data(), &len) != 1 ||
      len != pair.private_key.size()) {
    return absl::InternalError("OpenSSL could not export a raw private key");
  }
  BUNKER_ASSIGN_OR_RETURN(pair.public_key, RawPublicKey(pkey.get()));
  return pair;
}

// As ReadRawPrivateKey, for a "PUBLIC KEY" block.
absl::StatusOr<std::array<uint8_t, 32>> ReadRawPublicKey(BIO* bio, size_t block_end, int type,
                                                         const char* ordinal) {
  openssl::EvpPkeyPtr pkey(PEM_read_bio_PUBKEY(bio, nullptr, RefusePassphrase, nullptr));
  if (pkey == nullptr || !ReadStayedInBlock(bio, block_end)) {
    return absl::InvalidArgumentError(std::string("public identity PEM: ") + ordinal +
                                      " block is not a valid SubjectPublicKeyInfo");
  }
  if (EVP_PKEY_get_base_id(pkey.get()) != type) {
    return absl::InvalidArgumentError(std::string("public identity PEM: ") + ordinal +
                                      " block is not an " + KeyTypeName(type) + " key");
  }
  return RawPublicKey(pkey.get());
}

// Appends one PEM block for a raw key to `bio`.
void WritePublicPem(BIO* bio, int type, absl::Span<const uint8_t> raw) {
  openssl::EvpPkeyPtr pkey(EVP_PKEY_new_raw_public_key(type, nullptr, raw.data(), raw.size()));
  if (pkey == nullptr || PEM_write_bio_PUBKEY(bio, pkey.get()) != 1) {
    KeyLibraryFailure("OpenSSL public key PEM encoding");
  }
}

void WritePrivatePem(BIO* bio, int type, absl::Span<const uint8_t> raw) {
  // EVP_PKEY_free cleanses the copy of the key OpenSSL makes here.
  openssl::EvpPkeyPtr pkey(EVP_PKEY_new_raw_private_key(type, nullptr, raw.data(), raw.size()));
  // No cipher: the unencrypted PKCS#8 "PRIVATE KEY" form that `openssl pkey` reads as is.
  if (pkey == nullptr ||
      PEM_write_bio_PrivateKey(bio, pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    KeyLibraryFailure("OpenSSL private key PEM encoding");
  }
}

}  // namespace

// ---- Fingerprint ----------------------------------------------------------------------------

std::string Fingerprint::ToString() const {
  std::string out(kFingerprintPrefix);
  out.reserve(kFingerprintPrefix.size() + kFingerprintChars);
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out.push_back(kBase32Alphabet[(acc >> bits) & 0x1f]);
    }
    acc &= (1u << bits) - 1;
  }
  if (bits > 0) out.push_back(kBase32Alphabet[(acc << (5 - bits)) & 0x1f]);
  return out;
}

absl::StatusOr<Fingerprint> Fingerprint::Parse(std::string_view text) {
  constexpr char kShape[] = "fingerprint must be \"bk1:\" followed by 26 base32 characters";
  if (text.size() != kFingerprintPrefix.size() + kFingerprintChars ||
      !absl::EqualsIgnoreCase(
          absl::string_view(text.data(), kFingerprintPrefix.size()),
          absl::string_view(kFingerprintPrefix.data(), kFingerprintPrefix.size()))) {
    return absl::InvalidArgumentError(kShape);
  }
  text.remove_prefix(kFingerprintPrefix.size());
  Fingerprint fp;
  uint32_t acc = 0;
  int bits = 0;
  size_t i = 0;
  for (char c : text) {
    const int v = Base32Value(c);
    if (v < 0) return absl::InvalidArgumentError(kShape);
    acc = (acc << 5) | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      fp.bytes[i++] = static_cast<uint8_t>(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  // 26 * 5 = 130 bits: the last 2 must be zero, otherwise two spellings would name one
  // identity and string comparison of fingerprints would be unsound.
  if (acc != 0) {
    return absl::InvalidArgumentError("fingerprint is not canonically encoded");
  }
  return fp;
}

// ---- PublicIdentity -------------------------------------------------------------------------

Fingerprint PublicIdentity::fingerprint() const {
  Sha256 h;
  h.Update(kFingerprintLabel);
  const uint8_t separator = 0x00;
  h.Update(absl::Span<const uint8_t>(&separator, 1));
  h.Update(sign_key);
  h.Update(box_key);
  const Sha256Digest digest = h.Finish();
  Fingerprint fp;
  std::memcpy(fp.bytes.data(), digest.data(), fp.bytes.size());
  return fp;
}

std::string PublicIdentity::ToPem() const {
  openssl::ErrorQueueGuard error_guard;
  openssl::BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr) throw std::bad_alloc();
  WritePublicPem(bio.get(), EVP_PKEY_ED25519, sign_key);
  WritePublicPem(bio.get(), EVP_PKEY_X25519, box_key);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0 || data == nullptr) KeyLibraryFailure("OpenSSL PEM buffer");
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<PublicIdentity> PublicIdentity::FromPem(std::string_view pem) {
  // The layout keygen writes, without OpenSSL's decoders (crypto/raw_key_pem.h); any other
  // spelling goes to OpenSSL below.
  EnsureInitialized();
  if (std::optional<raw_key_pem::PublicKeys> raw = raw_key_pem::DecodePublic(pem)) {
    PublicIdentity id;
    id.sign_key = raw->ed25519;
    id.box_key = raw->x25519;
    return id;
  }
  if (pem.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("public identity PEM is too large");
  }
  BUNKER_ASSIGN_OR_RETURN(const size_t first_block_end,
                          CheckPemLayout(pem, kPublicLabel, "public identity"));
  openssl::ErrorQueueGuard error_guard;
  openssl::BioPtr bio = ReadOnlyBio(pem);
  if (bio == nullptr) throw std::bad_alloc();
  PublicIdentity id;
  BUNKER_ASSIGN_OR_RETURN(id.sign_key,
                          ReadRawPublicKey(bio.get(), first_block_end, EVP_PKEY_ED25519, "first"));
  BUNKER_ASSIGN_OR_RETURN(id.box_key,
                          ReadRawPublicKey(bio.get(), pem.size(), EVP_PKEY_X25519, "second"));
  return id;
}

// ---- Identity -------------------------------------------------------------------------------

Identity Identity::Generate() {
  const SecretBytes seed = SecretBytes::Random(kEd25519SeedSize);
  const SecretBytes scalar = SecretBytes::Random(kX25519KeySize);
  absl::StatusOr<Identity> id = FromSecrets(seed.span(), scalar.span());
  if (!id.ok()) KeyLibraryFailure("identity generation");
  return *std::move(id);
}

absl::StatusOr<Identity> Identity::FromSecrets(absl::Span<const uint8_t> ed25519_seed,
                                               absl::Span<const uint8_t> x25519_private) {
  if (ed25519_seed.size() != kEd25519SeedSize) {
    return absl::InvalidArgumentError("Ed25519 seed must be 32 bytes");
  }
  if (x25519_private.size() != kX25519KeySize) {
    return absl::InvalidArgumentError("X25519 private key must be 32 bytes");
  }
  EnsureInitialized();
  Identity id;
  id.sign_secret_ = SecretBytes(crypto_sign_SECRETKEYBYTES);
  if (crypto_sign_seed_keypair(id.public_.sign_key.data(), id.sign_secret_.data(),
                               ed25519_seed.data()) != 0) {
    return absl::InternalError("Ed25519 key derivation failed");
  }
  id.box_secret_ = SecretBytes::CopyOf(x25519_private);
  // The public half is always computed here from the scalar, never taken from a file, so a
  // file cannot pair a private key with someone else's public key.
  if (crypto_scalarmult_base(id.public_.box_key.data(), id.box_secret_.data()) != 0) {
    return absl::InvalidArgumentError("X25519 private key is invalid");
  }
  return id;
}

SecretBytes Identity::ToPem() const {
  if (sign_secret_.size() != crypto_sign_SECRETKEYBYTES || box_secret_.size() != kX25519KeySize) {
    KeyLibraryFailure("Identity::ToPem on a moved-from identity");
  }
  openssl::ErrorQueueGuard error_guard;
  // BIO_s_secmem: the buffer comes from OpenSSL's secure heap when one is set up, and is
  // cleansed whenever it grows or is freed either way.
  openssl::BioPtr bio(BIO_new(BIO_s_secmem()));
  if (bio == nullptr) throw std::bad_alloc();
  // libsodium's Ed25519 secret key is seed || public; PKCS#8 stores the seed.
  WritePrivatePem(bio.get(), EVP_PKEY_ED25519, sign_secret_.span().first(kEd25519SeedSize));
  WritePrivatePem(bio.get(), EVP_PKEY_X25519, box_secret_.span());
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0 || data == nullptr) KeyLibraryFailure("OpenSSL PEM buffer");
  return SecretBytes::CopyOf(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(len)));
}

absl::StatusOr<Identity> Identity::FromPem(std::string_view pem) {
  // As PublicIdentity::FromPem. A PKCS#8 v1 block carries no public key, so there is none to
  // compare with the ones FromSecrets derives.
  EnsureInitialized();
  if (std::optional<raw_key_pem::PrivateKeys> raw = raw_key_pem::DecodePrivate(pem)) {
    return FromSecrets(raw->ed25519_seed.span(), raw->x25519_private.span());
  }
  if (pem.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("private identity PEM is too large");
  }
  BUNKER_ASSIGN_OR_RETURN(const size_t first_block_end,
                          CheckPemLayout(pem, kPrivateLabel, "private identity"));
  openssl::ErrorQueueGuard error_guard;
  openssl::BioPtr bio = ReadOnlyBio(pem);
  if (bio == nullptr) throw std::bad_alloc();
  BUNKER_ASSIGN_OR_RETURN(const RawKeyPair sign,
                          ReadRawPrivateKey(bio.get(), first_block_end, EVP_PKEY_ED25519, "first"));
  BUNKER_ASSIGN_OR_RETURN(const RawKeyPair box,
                          ReadRawPrivateKey(bio.get(), pem.size(), EVP_PKEY_X25519, "second"));
  // FromSecrets recomputes both public keys with libsodium from the secrets alone. Whatever
  // public key OpenSSL associated with the blocks (derived, or carried in a PKCS#8 v2 file)
  // must agree, or the file is not what it claims to be.
  BUNKER_ASSIGN_OR_RETURN(Identity id,
                          FromSecrets(sign.private_key.span(), box.private_key.span()));
  if (id.public_.sign_key != sign.public_key || id.public_.box_key != box.public_key) {
    return absl::InvalidArgumentError(
        "private identity PEM: a public key does not match its private key");
  }
  return id;
}

Ed25519Signature Identity::Sign(absl::Span<const uint8_t> message) const {
  if (sign_secret_.size() != crypto_sign_SECRETKEYBYTES) {
    KeyLibraryFailure("Identity::Sign on a moved-from identity");
  }
  Ed25519Signature sig;
  if (crypto_sign_detached(sig.data(), nullptr, NonNull(message), message.size(),
                           sign_secret_.data()) != 0) {
    KeyLibraryFailure("Ed25519 signing");
  }
  return sig;
}

absl::StatusOr<SecretBytes> Identity::Agree(const X25519PublicKey& peer_public) const {
  if (box_secret_.size() != kX25519KeySize) {
    return absl::FailedPreconditionError("identity has no X25519 key (moved from)");
  }
  EnsureInitialized();
  SecretBytes shared(kX25519KeySize);
  // crypto_scalarmult already fails on an all-zero result; check again so the guarantee does not
  // hinge on the libsodium version.
  if (crypto_scalarmult(shared.data(), box_secret_.data(), peer_public.data()) != 0 ||
      sodium_is_zero(shared.data(), shared.size())) {
    return absl::DataLossError("X25519 peer key is low-order (shared secret is zero)");
  }
  return shared;
}

// ---- Free functions -------------------------------------------------------------------------

absl::Status VerifySignature(const Ed25519PublicKey& public_key, absl::Span<const uint8_t> message,
                             absl::Span<const uint8_t> signature) {
  // keys.h promises OK or kDataLoss: a signature of the wrong length simply does not verify.
  if (signature.size() != kEd25519SignatureSize) {
    return absl::DataLossError("signature does not verify (wrong length)");
  }
  EnsureInitialized();
  // libsodium also rejects non-canonical S and small-order public keys and R points.
  if (crypto_sign_verify_detached(signature.data(), NonNull(message), message.size(),
                                  public_key.data()) != 0) {
    return absl::DataLossError("signature does not verify");
  }
  return absl::OkStatus();
}

}  // namespace bunker::crypto


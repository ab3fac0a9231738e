// CapsuleReader: the read side of the format. Structure and signature checks need no key;
// payload access needs a recipient identity.
//
// Order of checks (FORMAT.md "Reading a capsule"): header, footer, manifest (strict canonical
// decode), issuer signature, geometry and exact file size, then trust in the issuer, and only
// then the chunk table against the signed Merkle root. No resource that scales with the capsule
// (the table) is spent before the issuer is trusted. Each chunk's ciphertext is compared with its
// table entry before it is decrypted, so no plaintext is ever released from an unauthenticated
// chunk.
#ifndef BUNKER_CAPSULE_READER_H_
#define BUNKER_CAPSULE_READER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/io.h"
#include "capsule/key_schedule.h"
#include "capsule/manifest.h"
#include "capsule/parallel.h"
#include "crypto/keys.h"

namespace bunker::capsule {

// Called with the bytes processed so far.
using ProgressFn = std::function<void(uint64_t)>;

// The key material released to one recipient. Holding it means the commitment was checked.
class PayloadKey {
 public:
  const crypto::Aead& aead() const { return *keys_.aead; }

 private:
  friend class CapsuleReader;
  PayloadKeys keys_;
};

class PayloadStream;

class CapsuleReader {
 public:
  // Runs every check listed above: structure, signature, trust (kPermissionDenied "issuer
  // bk1:... is not trusted" unless the manifest's issuer is in `trusted`, matched on both keys),
  // and the chunk table. kDataLoss for anything corrupt, truncated or extended;
  // kInvalidArgument for an unsupported version.
  static absl::StatusOr<std::unique_ptr<CapsuleReader>> Open(
      std::unique_ptr<RandomAccessFile> file, absl::Span<const crypto::PublicIdentity> trusted);

  // Structure and signature only, trusting nobody: enough to show a capsule's public facts.
  // The chunk methods below return kFailedPrecondition on a reader opened this way.
  static absl::StatusOr<std::unique_ptr<CapsuleReader>> OpenUntrusted(
      std::unique_ptr<RandomAccessFile> file);

  const Manifest& manifest() const { return manifest_; }
  const Geometry& geometry() const { return geometry_; }
  uint64_t file_size() const { return file_->size(); }
  // The capsule file as opened (for a caller that reads its chunks through a copy of its own,
  // see Stream's `chunks_from`).
  const RandomAccessFile& file() const { return *file_; }

  // Whether the issuer was trusted and the chunk table loaded (Open, not OpenUntrusted).
  bool trusted() const { return table_loaded_; }

  // Hashes every chunk (in parallel, `threads` workers; 0: all cores) against the chunk table. kDataLoss naming the first bad
  // chunk: "chunk 17 of 1024 is corrupt (hash does not match the signed chunk table)".
  // `cancelled`, when given, is asked after each chunk; true ends the check with kCancelled.
  absl::Status VerifyChunks(int threads, const ProgressFn& progress,
                            const std::function<bool()>& cancelled = nullptr) const;

  // Reads raw bytes of the capsule file, unchecked: for a sender forwarding the prelude and
  // chunk ciphertexts as they are (the receiver checks them). kOutOfRange past the end.
  absl::Status ReadRaw(uint64_t offset, absl::Span<uint8_t> out) const {
    return file_->ReadAt(offset, out);
  }

  // Checks chunk `index`'s ciphertext against the signed table (for keyless transfer checks).
  absl::Status CheckChunk(uint64_t index, absl::Span<const uint8_t> ciphertext) const;

  // Finds `identity`'s recipient entry, unwraps the data key and checks the key commitment.
  // kPermissionDenied "capsule is not addressed to bk1:..." when there is no entry for it;
  // kDataLoss when the entry does not unwrap or the commitment does not match.
  absl::StatusOr<std::unique_ptr<PayloadKey>> Unlock(const crypto::Identity& identity) const;

  // A stream of authenticated plaintext for payload bytes [begin, end), decrypting chunks in
  // parallel with bounded read-ahead (`threads` workers; 0: all cores). `key` and this
  // reader must outlive the stream. `chunks_from`, when given (it must outlive the stream too),
  // is where the chunks' ciphertext is read instead of the capsule file, at the same offsets:
  // a local copy of a remote capsule's chunks (site/chunk_spool.h). What it returns is checked
  // against the signed table exactly like the capsule file's bytes, unless it
  // holds_checked_chunks() (io.h): then by the AEAD tag alone.
  absl::StatusOr<std::unique_ptr<PayloadStream>> Stream(
      const PayloadKey& key, uint64_t begin, uint64_t end, int threads,
      ProgressFn progress = nullptr, const RandomAccessFile* chunks_from = nullptr) const;

 private:
  friend class PayloadStream;
  CapsuleReader() = default;
  absl::Status CheckTrusted(absl::Span<const crypto::PublicIdentity> trusted) const;
  absl::Status LoadTable();

  std::unique_ptr<RandomAccessFile> file_;
  Manifest manifest_;
  Geometry geometry_;
  // The verified chunk table: 32 bytes per chunk (1/32768 of the payload at the default chunk
  // size), held so that a file changed after verification cannot swap chunks in.
  std::vector<crypto::Sha256Digest> table_;
  bool table_loaded_ = false;
};

// Yields the plaintext of a payload range piece by piece, each from an authenticated chunk.
class PayloadStream : public ByteSource {
 public:
  ~PayloadStream() override;
  absl::StatusOr<absl::Span<const uint8_t>> Next() override;

 private:
  friend class CapsuleReader;
  struct ChunkResult {
    absl::Status status;
    std::vector<uint8_t> buffer;  // plaintext in the first `size` bytes
    size_t size = 0;
  };
  PayloadStream() = default;
  void Fill();

  const CapsuleReader* reader_ = nullptr;
  const RandomAccessFile* file_ = nullptr;  // where chunks are read
  const PayloadKey* key_ = nullptr;
  uint64_t begin_ = 0, end_ = 0;
  uint64_t next_submit_ = 0, last_chunk_ = 0, next_pop_ = 0;
  uint64_t delivered_ = 0;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<BufferPool> buffers_;
  std::unique_ptr<OrderedPipeline<ChunkResult>> pipeline_;
  std::vector<uint8_t> current_;  // the piece last returned by Next()
  ProgressFn progress_;
  bool failed_ = false;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_READER_H_

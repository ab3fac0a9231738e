// CapsuleWriter: turns a stream of payload bytes into a sealed capsule (FORMAT.md "Layout").
// It knows nothing about archives; capsule/archive_builder.h feeds it a pax stream and index.
//
// Memory is bounded whatever the payload size: at most kMaxInflightBytes (64 MiB) of chunks in
// flight plus a few chunks being filled (buffers are recycled through a pool); the chunk table
// is spooled to an unlinked temporary file, not kept in memory.
//
// Threads: the caller's thread only fills chunks. The workers encrypt and hash them and then
// write them, in chunk order (each waits for its turn), so the output's copy into the page
// cache runs beside the caller's reading instead of after it. `out` is therefore called from
// the workers, one call at a time, between Create() and Finish(), and from the caller's thread
// otherwise.
#ifndef BUNKER_CAPSULE_WRITER_H_
#define BUNKER_CAPSULE_WRITER_H_

#include <cstdint>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/io.h"
#include "capsule/key_schedule.h"
#include "capsule/manifest.h"
#include "capsule/parallel.h"
#include "crypto/keys.h"
#include "crypto/merkle.h"

namespace bunker::capsule {

struct WriterOptions {
  const crypto::Identity* issuer = nullptr;             // signs the manifest; required
  std::vector<crypto::PublicIdentity> recipients;       // 1..kMaxRecipients; duplicates refused
  std::string policy;                                   // stored as given
  crypto::Suite suite = crypto::Suite::kAes256Gcm;
  uint32_t chunk_size = kDefaultChunkSize;
  int threads = 0;  // worker threads; 0: one per core
  int64_t created_at = 0;                               // seconds since the epoch
  // Called from the writer's thread with the total payload bytes encrypted so far.
  std::function<void(uint64_t)> progress;
  // Polled once per chunk; when it returns true, Append and Finish fail with kCancelled.
  std::function<bool()> cancelled;
};

class CapsuleWriter {
 public:
  // Validates the options (kInvalidArgument naming the problem), draws the capsule id and data
  // key, wraps the key to every recipient and writes the header to `out`, which must outlive
  // the writer.
  static absl::StatusOr<std::unique_ptr<CapsuleWriter>> Create(WriterOptions options,
                                                               WritableFile* out);
  ~CapsuleWriter();

  // Appends payload bytes (encrypted in parallel, written in order).
  absl::Status Append(absl::Span<const uint8_t> data);
  // Bytes appended so far.
  uint64_t payload_size() const { return appended_; }
  // Declares that the bytes so far are the archive and what follows is the file index.
  void MarkArchiveEnd() { archive_size_ = appended_; }

  // Flushes the last chunk, writes the chunk table, manifest, signature and footer. The
  // writer must not be used afterwards. Returns the signed manifest.
  absl::StatusOr<Manifest> Finish(uint64_t index_entries);

 private:
  struct ChunkResult {
    absl::Status status;
    std::vector<uint8_t> buffer;  // ciphertext || tag in the first `size` bytes (written)
    size_t size = 0;
  };
  CapsuleWriter(WriterOptions options, WritableFile* out);
  absl::Status SubmitChunk(std::vector<uint8_t> buffer, size_t plain_size, bool last);
  absl::Status DrainOne();
  // Run by the worker that sealed chunk `index`: waits for the chunks before it, then writes
  // `chunk` and its leaf hash, unless `sealed` (how sealing it went) or an earlier chunk
  // failed; then it records the first failure and only passes the turn on.
  absl::Status WriteInOrder(uint64_t index, absl::Status sealed, absl::Span<const uint8_t> chunk,
                            const crypto::Sha256Digest& leaf);

  WriterOptions options_;
  WritableFile* out_;
  Manifest manifest_;
  PayloadKeys keys_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<OrderedPipeline<ChunkResult>> pipeline_;
  std::unique_ptr<BufferPool> buffers_;           // chunk_size + tag bytes each
  std::vector<uint8_t> current_;                  // the chunk being filled...
  size_t current_size_ = 0;                       // ...up to here
  std::optional<std::vector<uint8_t>> pending_;   // a full chunk not yet known to be last
  uint64_t next_index_ = 0;
  uint64_t appended_ = 0;
  uint64_t encrypted_ = 0;
  uint64_t archive_size_ = 0;
  bool failed_ = false;
  // The ordered write (WriteInOrder): guarded by write_mu_.
  std::mutex write_mu_;
  std::condition_variable write_cv_;
  uint64_t write_turn_ = 0;       // the index of the next chunk to write
  absl::Status write_status_;     // the first write failure
  crypto::MerkleTreeBuilder tree_;
  std::FILE* table_ = nullptr;  // unlinked temporary file of leaf hashes
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_WRITER_H_

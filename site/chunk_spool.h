// A release reads what it releases twice: a checking pass (every chunk against the signed table,
// the file against its index digest) and then the writing pass, so that nothing is released from
// a file or archive that is not wholly authentic (site/release_io.h). From a local capsule the
// second pass is served by the page cache; from a remote one (an s3:// object) it would fetch
// everything again. A ChunkSpool keeps the ciphertext of the chunks the first pass read in an
// unnamed private file (O_TMPFILE, 0600; or a name removed at once where the filesystem has no
// O_TMPFILE), and the second pass reads them from there. The spool holds ciphertext only, and
// what the second pass reads from it is checked against the signed chunk table again, like any
// capsule bytes. Decided in spec/STORE.md "Reading" (the release spool).
#ifndef BUNKER_SITE_CHUNK_SPOOL_H_
#define BUNKER_SITE_CHUNK_SPOOL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "capsule/fd.h"
#include "capsule/io.h"
#include "capsule/reader.h"

namespace bunker::site {

class ChunkSpool {
 public:
  // A spool for the chunks holding payload bytes [begin, end) of `reader`'s capsule, in `dir`
  // ("": $TMPDIR, else /tmp). Null (and the second pass reads the capsule again) when there is
  // no point or no room: the capsule file is local (RandomAccessFile::parallelism() is 0), the
  // range is empty, the chunks do not fit (Fits: the spools of this process together take at
  // most half of the room `dir` has, and leave kSpoolReserve free), or no file can be made and
  // sized there. Never an error.
  static std::unique_ptr<ChunkSpool> Create(const capsule::CapsuleReader& reader, uint64_t begin,
                                            uint64_t end, const std::string& dir);
  // The folder a spool of `dir` goes to: `dir`, else $TMPDIR (absolute), else /tmp.
  static std::string FolderFor(const std::string& dir);
  ~ChunkSpool();

  // Free space left on the spool's filesystem after the chunks are in it.
  static constexpr uint64_t kSpoolReserve = uint64_t{64} << 20;

  // Whether a spool of `bytes` may be made where `free_bytes` are free while this process's live
  // spools hold `live_bytes` (already taken from `free_bytes`): all of them together at most
  // half of the room they and the free space make, and kSpoolReserve left free. So a site's
  // releases can never take the room its receives, journals and audit log need.
  static bool Fits(uint64_t free_bytes, uint64_t live_bytes, uint64_t bytes);
  // The bytes this process's live spools hold (for tests).
  static uint64_t live_bytes_for_testing();

  // For the first pass: the capsule file, keeping a copy of every whole chunk of the range that
  // is read through it. A copy that cannot be written (the disk filled after all) ends the
  // spooling, not the read.
  const capsule::RandomAccessFile* recording() const;
  // Called once the first pass through recording() succeeded: it read every chunk of the range
  // and checked each against the signed table (what it checked is what was kept: a chunk is
  // copied as it is read, on the thread that then checks it).
  void FirstPassSucceeded() { first_pass_ok_.store(true); }
  // For the second pass: the spool, when the first pass succeeded and every chunk of the range
  // was kept (its chunks are then opened by their AEAD tag alone, io.h holds_checked_chunks);
  // else the capsule file (two fetches and two checks, as without a spool).
  const capsule::RandomAccessFile* replay() const;
  // Whether every chunk of the range was kept.
  bool complete() const;

  // For tests: the spool's descriptor (to damage it), where chunk `index` is in it, and whether
  // it bypasses the page cache.
  int fd_for_testing() const { return fd_.get(); }
  uint64_t offset_for_testing(uint64_t index) const { return (index - first_chunk_) * slot_; }
  bool direct_for_testing() const { return direct_.load(); }

 private:
  class Recorder;
  class Replayer;
  struct FreeAligned {
    void operator()(uint8_t* p) const;
  };
  using AlignedBuffer = std::unique_ptr<uint8_t[], FreeAligned>;

  ChunkSpool(const capsule::CapsuleReader& reader, capsule::Fd fd, bool direct,
             uint64_t first_chunk, uint64_t last_chunk, uint64_t slot, uint64_t bytes);
  // Keeps `data`, read at capsule offset `offset`, when it is exactly one chunk of the range.
  void Keep(uint64_t offset, absl::Span<const uint8_t> data);
  // Copies bytes [from, from + out.size()) of chunk `index`'s ciphertext out of its slot.
  absl::Status ReadChunk(uint64_t index, uint64_t from, absl::Span<uint8_t> out) const;
  // A buffer of kPiece bytes aligned for O_DIRECT, from the spool's free list (or null: no memory).
  AlignedBuffer TakeBuffer() const;
  void GiveBuffer(AlignedBuffer b) const;
  // Writes or reads a whole block-aligned range of the spool; on EINVAL from O_DIRECT, the spool
  // falls back to the page cache for good and the call is retried.
  bool WriteFully(const uint8_t* data, size_t size, uint64_t at);
  absl::Status ReadFully(uint8_t* data, size_t size, uint64_t at) const;
  void DropDirect() const;

  const capsule::CapsuleReader& reader_;
  capsule::Fd fd_;
  mutable std::atomic<bool> direct_;  // O_DIRECT on fd_
  uint64_t first_chunk_, last_chunk_;
  uint64_t base_;  // capsule offset of the first chunk
  uint64_t slot_;  // bytes per chunk in the spool: its ciphertext rounded up to 4 KiB blocks
  uint64_t bytes_;  // the spool's size, counted in the process's live spools until destroyed
  mutable std::mutex mu_;
  mutable std::vector<AlignedBuffer> free_buffers_;  // under mu_
  std::vector<bool> kept_;  // per chunk of the range
  uint64_t kept_count_ = 0;
  std::atomic<bool> broken_{false};
  std::atomic<bool> first_pass_ok_{false};
  std::unique_ptr<Recorder> recording_;
  std::unique_ptr<Replayer> replay_;
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_CHUNK_SPOOL_H_

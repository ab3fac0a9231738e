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
  // For the second pass: the spool, when every chunk of the range was kept; else the capsule
  // file (two fetches, as without a spool).
  const capsule::RandomAccessFile* replay() const;
  // Whether every chunk of the range was kept.
  bool complete() const;

  // For tests: the spool's descriptor (to damage it).
  int fd_for_testing() const { return fd_.get(); }

 private:
  class Recorder;
  class Replayer;
  ChunkSpool(const capsule::CapsuleReader& reader, capsule::Fd fd, uint64_t first_chunk,
             uint64_t last_chunk, uint64_t bytes);
  // Keeps `data`, read at capsule offset `offset`, when it is exactly one chunk of the range.
  void Keep(uint64_t offset, absl::Span<const uint8_t> data);

  const capsule::CapsuleReader& reader_;
  capsule::Fd fd_;
  uint64_t first_chunk_, last_chunk_;
  uint64_t base_;  // capsule offset of the first chunk: spool offset 0
  uint64_t bytes_;  // the spool's size, counted in the process's live spools until destroyed
  mutable std::mutex mu_;
  std::vector<bool> kept_;  // per chunk of the range
  uint64_t kept_count_ = 0;
  std::atomic<bool> broken_{false};
  std::unique_ptr<Recorder> recording_;
  std::unique_ptr<Replayer> replay_;
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_CHUNK_SPOOL_H_

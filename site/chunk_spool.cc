#include "site/chunk_spool.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace bunker::site {
namespace {

// The bytes held by this process's live spools.
std::mutex g_live_mu;
uint64_t g_live_bytes = 0;

}  // namespace

bool ChunkSpool::Fits(uint64_t free_bytes, uint64_t live_bytes, uint64_t bytes) {
  if (free_bytes < kSpoolReserve || bytes > free_bytes - kSpoolReserve) return false;
  const uint64_t room = (free_bytes - kSpoolReserve) / 2 + live_bytes / 2;
  return live_bytes <= room && bytes <= room - live_bytes;
}

uint64_t ChunkSpool::live_bytes_for_testing() {
  std::lock_guard<std::mutex> lock(g_live_mu);
  return g_live_bytes;
}

// The first pass's view of the capsule: reads pass through, whole chunks of the range are kept.
class ChunkSpool::Recorder : public capsule::RandomAccessFile {
 public:
  explicit Recorder(ChunkSpool* spool) : spool_(spool) {}
  uint64_t size() const override { return spool_->reader_.file().size(); }
  int parallelism() const override { return spool_->reader_.file().parallelism(); }
  void WillRead(uint64_t begin, uint64_t end) const override {
    spool_->reader_.file().WillRead(begin, end);
  }
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    absl::Status s = spool_->reader_.file().ReadAt(offset, out);
    if (s.ok()) spool_->Keep(offset, out);
    return s;
  }

 private:
  ChunkSpool* spool_;
};

// The second pass's view: the range from the spool, anything else from the capsule.
class ChunkSpool::Replayer : public capsule::RandomAccessFile {
 public:
  explicit Replayer(const ChunkSpool* spool) : spool_(spool) {}
  uint64_t size() const override { return spool_->reader_.file().size(); }
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    const capsule::Geometry& g = spool_->reader_.geometry();
    const uint64_t limit = g.ChunkOffset(spool_->last_chunk_) + g.CipherSize(spool_->last_chunk_);
    if (offset < spool_->base_ || offset > limit || out.size() > limit - offset) {
      return spool_->reader_.file().ReadAt(offset, out);
    }
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::pread(spool_->fd_.get(), out.data() + done, out.size() - done,
                                static_cast<off_t>(offset - spool_->base_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return capsule::ErrnoStatus("cannot read the release spool", errno);
      if (n == 0) return absl::OutOfRangeError("the release spool is shorter than its chunks");
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

 private:
  const ChunkSpool* spool_;
};

std::unique_ptr<ChunkSpool> ChunkSpool::Create(const capsule::CapsuleReader& reader,
                                               uint64_t begin, uint64_t end,
                                               const std::string& dir) {
  // A local capsule's second pass comes from the page cache.
  if (reader.file().parallelism() == 0 || begin >= end || !reader.trusted()) return nullptr;
  const capsule::Geometry& g = reader.geometry();
  if (g.chunk_size == 0 || end > g.payload_size) return nullptr;
  const uint64_t first = begin / g.chunk_size;
  const uint64_t last = (end - 1) / g.chunk_size;
  const uint64_t bytes = g.ChunkOffset(last) + g.CipherSize(last) - g.ChunkOffset(first);
  std::string where = dir;
  if (where.empty()) {
    const char* tmp = ::getenv("TMPDIR");
    where = tmp != nullptr && tmp[0] == '/' ? tmp : "/tmp";
  }
  // Unnamed from the start where the filesystem allows (O_EXCL: it can never be linked).
  int fd = ::open(where.c_str(), O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string name = where + "/.bunker-spool-XXXXXX";
    fd = ::mkostemp(name.data(), O_CLOEXEC);  // 0600
    if (fd >= 0 && ::unlink(name.c_str()) != 0) {
      ::close(fd);
      return nullptr;
    }
  }
  if (fd < 0) return nullptr;
  capsule::Fd owned(fd);
  struct statvfs vfs;
  if (::fstatvfs(fd, &vfs) != 0) return nullptr;
  const uint64_t free_bytes = uint64_t{vfs.f_bavail} * uint64_t{vfs.f_frsize};
  {
    // Admitted and counted at once, so that concurrent releases cannot all pass the check.
    std::lock_guard<std::mutex> lock(g_live_mu);
    if (!Fits(free_bytes, g_live_bytes, bytes)) return nullptr;
    g_live_bytes += bytes;
  }
  // From here the spool's destructor gives the bytes back.
  std::unique_ptr<ChunkSpool> spool(new ChunkSpool(reader, std::move(owned), first, last, bytes));
  // The room taken up front, so that a disk filling meanwhile fails here rather than mid-copy
  // (a filesystem without fallocate gets a sparse file, and a later write may still fail).
  if (::fallocate(fd, 0, 0, static_cast<off_t>(bytes)) != 0) {
    if (errno != EOPNOTSUPP || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) return nullptr;
  }
  try {
    spool->kept_.assign(last - first + 1, false);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  return spool;
}

ChunkSpool::ChunkSpool(const capsule::CapsuleReader& reader, capsule::Fd fd, uint64_t first_chunk,
                       uint64_t last_chunk, uint64_t bytes)
    : reader_(reader),
      fd_(std::move(fd)),
      first_chunk_(first_chunk),
      last_chunk_(last_chunk),
      base_(reader.geometry().ChunkOffset(first_chunk)),
      bytes_(bytes),
      recording_(std::make_unique<Recorder>(this)),
      replay_(std::make_unique<Replayer>(this)) {}

ChunkSpool::~ChunkSpool() {
  std::lock_guard<std::mutex> lock(g_live_mu);
  g_live_bytes -= bytes_;
}

void ChunkSpool::Keep(uint64_t offset, absl::Span<const uint8_t> data) {
  if (broken_.load() || offset < base_) return;
  const capsule::Geometry& g = reader_.geometry();
  // Chunks have one ciphertext size but the last: the index from the offset, then an exact match.
  const uint64_t stride = uint64_t{g.chunk_size} + capsule::kTagSize;
  const uint64_t i = first_chunk_ + (offset - base_) / stride;
  if (i > last_chunk_ || g.ChunkOffset(i) != offset || g.CipherSize(i) != data.size()) return;
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd_.get(), data.data() + done, data.size() - done,
                               static_cast<off_t>(offset - base_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      broken_.store(true);
      return;
    }
    done += static_cast<size_t>(n);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!kept_[i - first_chunk_]) {
    kept_[i - first_chunk_] = true;
    ++kept_count_;
  }
}

bool ChunkSpool::complete() const {
  if (broken_.load()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return kept_count_ == kept_.size();
}

const capsule::RandomAccessFile* ChunkSpool::recording() const { return recording_.get(); }

const capsule::RandomAccessFile* ChunkSpool::replay() const {
  return complete() ? static_cast<const capsule::RandomAccessFile*>(replay_.get())
                    : &reader_.file();
}

}  // namespace bunker::site

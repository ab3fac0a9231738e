#include "site/chunk_spool.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "crypto/status_macros.h"

namespace bunker::site {
namespace {

// O_DIRECT's unit: offsets, sizes and buffers in whole blocks (4 KiB covers every common
// logical block size).
constexpr uint64_t kBlock = 4096;
uint64_t RoundUp(uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }
// Spool writes and reads go through aligned buffers of this size (one per thread at work), so a
// spool adds little memory whatever the chunk size.
constexpr size_t kPiece = (size_t{1} << 20) + kBlock;  // a default chunk and its tag

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
  // Served only once complete: every chunk in it passed the signed table on its way in.
  bool holds_checked_chunks() const override { return true; }
  // Its reads wait on the disk (O_DIRECT): more readers than cores keep it busy.
  int parallelism() const override { return 4; }
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    const capsule::Geometry& g = spool_->reader_.geometry();
    const uint64_t limit = g.ChunkOffset(spool_->last_chunk_) + g.CipherSize(spool_->last_chunk_);
    if (offset < spool_->base_ || offset > limit || out.size() > limit - offset) {
      return spool_->reader_.file().ReadAt(offset, out);
    }
    // Chunk by chunk (a chunk read is one piece; nothing else reads the range).
    const uint64_t stride = uint64_t{g.chunk_size} + capsule::kTagSize;
    size_t done = 0;
    while (done < out.size()) {
      const uint64_t at = offset + done;
      const uint64_t i = spool_->first_chunk_ + (at - spool_->base_) / stride;
      const uint64_t from = at - g.ChunkOffset(i);
      const size_t n = static_cast<size_t>(
          std::min<uint64_t>(out.size() - done, g.CipherSize(i) - from));
      BUNKER_RETURN_IF_ERROR(spool_->ReadChunk(i, from, out.subspan(done, n)));
      done += n;
    }
    return absl::OkStatus();
  }

 private:
  const ChunkSpool* spool_;
};

std::string ChunkSpool::FolderFor(const std::string& dir) {
  if (!dir.empty()) return dir;
  const char* tmp = ::getenv("TMPDIR");
  return tmp != nullptr && tmp[0] == '/' ? tmp : "/tmp";
}

std::unique_ptr<ChunkSpool> ChunkSpool::Create(const capsule::CapsuleReader& reader,
                                               uint64_t begin, uint64_t end,
                                               const std::string& dir) {
  // A local capsule's second pass comes from the page cache.
  if (reader.file().parallelism() == 0 || begin >= end || !reader.trusted()) return nullptr;
  const capsule::Geometry& g = reader.geometry();
  if (g.chunk_size == 0 || end > g.payload_size) return nullptr;
  const uint64_t first = begin / g.chunk_size;
  const uint64_t last = (end - 1) / g.chunk_size;
  const uint64_t slot = RoundUp(uint64_t{g.chunk_size} + capsule::kTagSize);
  if (last - first + 1 > UINT64_MAX / slot) return nullptr;
  const uint64_t bytes = (last - first + 1) * slot;
  const std::string where = FolderFor(dir);
  // Unnamed from the start where the filesystem allows (O_EXCL: it can never be linked).
  // Past the page cache where the filesystem allows (tmpfs before Linux 6.6 refuses O_DIRECT).
  bool direct = true;
  int fd = ::open(where.c_str(), O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC | O_DIRECT, 0600);
  if (fd < 0 && errno == EINVAL) {
    direct = false;
    fd = ::open(where.c_str(), O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
  }
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string name = where + "/.bunker-spool-XXXXXX";
    fd = ::mkostemp(name.data(), O_CLOEXEC);  // 0600
    if (fd >= 0 && ::unlink(name.c_str()) != 0) {
      ::close(fd);
      return nullptr;
    }
    direct = fd >= 0 && ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_DIRECT) == 0;
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
  std::unique_ptr<ChunkSpool> spool(
      new ChunkSpool(reader, std::move(owned), direct, first, last, slot, bytes));
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

ChunkSpool::ChunkSpool(const capsule::CapsuleReader& reader, capsule::Fd fd, bool direct,
                       uint64_t first_chunk, uint64_t last_chunk, uint64_t slot, uint64_t bytes)
    : reader_(reader),
      fd_(std::move(fd)),
      direct_(direct),
      first_chunk_(first_chunk),
      last_chunk_(last_chunk),
      base_(reader.geometry().ChunkOffset(first_chunk)),
      slot_(slot),
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
  // Whole blocks, a piece at a time through an aligned buffer (the last block's tail is zeros).
  AlignedBuffer b = TakeBuffer();
  bool written = b != nullptr;
  for (size_t pos = 0; written && pos < data.size(); pos += kPiece) {
    const size_t n = std::min<size_t>(kPiece, data.size() - pos);
    const size_t size = static_cast<size_t>(RoundUp(n));
    std::memcpy(b.get(), data.data() + pos, n);
    std::memset(b.get() + n, 0, size - n);
    written = WriteFully(b.get(), size, (i - first_chunk_) * slot_ + pos);
  }
  if (b != nullptr) GiveBuffer(std::move(b));
  if (!written) {
    broken_.store(true);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!kept_[i - first_chunk_]) {
    kept_[i - first_chunk_] = true;
    ++kept_count_;
  }
}

absl::Status ChunkSpool::ReadChunk(uint64_t index, uint64_t from, absl::Span<uint8_t> out) const {
  const uint64_t slot_at = (index - first_chunk_) * slot_;
  AlignedBuffer b = TakeBuffer();
  if (b == nullptr) return absl::ResourceExhaustedError("out of memory");
  absl::Status s;
  // Aligned pieces covering [from, from + out.size()) of the slot.
  size_t done = 0;
  uint64_t at = from / kBlock * kBlock;
  while (s.ok() && done < out.size()) {
    const uint64_t want_end = from + out.size();
    const size_t size = static_cast<size_t>(std::min<uint64_t>(kPiece, RoundUp(want_end) - at));
    s = ReadFully(b.get(), size, slot_at + at);
    if (!s.ok()) break;
    const uint64_t lo = std::max<uint64_t>(at, from + done);
    const uint64_t hi = std::min<uint64_t>(at + size, want_end);
    std::memcpy(out.data() + done, b.get() + (lo - at), static_cast<size_t>(hi - lo));
    done += static_cast<size_t>(hi - lo);
    at += size;
  }
  GiveBuffer(std::move(b));
  return s;
}

// Mapped on their own (page-aligned, as O_DIRECT needs): never left in a malloc arena of a
// long-running daemon when the spool goes.
void ChunkSpool::FreeAligned::operator()(uint8_t* p) const { ::munmap(p, kPiece); }

ChunkSpool::AlignedBuffer ChunkSpool::TakeBuffer() const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_buffers_.empty()) {
      AlignedBuffer b = std::move(free_buffers_.back());
      free_buffers_.pop_back();
      return b;
    }
  }
  void* p = ::mmap(nullptr, kPiece, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return AlignedBuffer(p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p));
}

void ChunkSpool::GiveBuffer(AlignedBuffer b) const {
  std::lock_guard<std::mutex> lock(mu_);
  free_buffers_.push_back(std::move(b));
}

void ChunkSpool::DropDirect() const {
  const int flags = ::fcntl(fd_.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd_.get(), F_SETFL, flags & ~O_DIRECT);
  direct_.store(false);
}

bool ChunkSpool::WriteFully(const uint8_t* data, size_t size, uint64_t at) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd_.get(), data + done, size - done, static_cast<off_t>(at + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && direct_.load()) {
      DropDirect();
      continue;
    }
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

absl::Status ChunkSpool::ReadFully(uint8_t* data, size_t size, uint64_t at) const {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd_.get(), data + done, size - done, static_cast<off_t>(at + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && direct_.load()) {
      DropDirect();
      continue;
    }
    if (n < 0) return capsule::ErrnoStatus("cannot read the release spool", errno);
    if (n == 0) return absl::OutOfRangeError("the release spool is shorter than its chunks");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

bool ChunkSpool::complete() const {
  if (broken_.load()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return kept_count_ == kept_.size();
}

const capsule::RandomAccessFile* ChunkSpool::recording() const { return recording_.get(); }

const capsule::RandomAccessFile* ChunkSpool::replay() const {
  return first_pass_ok_.load() && complete() ? static_cast<const capsule::RandomAccessFile*>(replay_.get())
                    : &reader_.file();
}

}  // namespace bunker::site

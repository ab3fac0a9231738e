// Internals shared by the audit log's source files (audit_*.cc), not part of its API: the
// readers that frame entries and checkpoints, the scan that checks a log against its
// checkpoints, and snapshots taken under the log's lock. The public contract is audit_log.h;
// the bytes are spec/AUDIT.md.
#ifndef BUNKER_VERIFIER_AUDIT_LOG_INTERNAL_H_
#define BUNKER_VERIFIER_AUDIT_LOG_INTERNAL_H_

#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "capsule/byte_order.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "crypto/merkle.h"
#include "crypto/status_macros.h"
#include "verifier/audit_log.h"

namespace bunker::verifier::audit_internal {

// spec/AUDIT.md "Checkpoints".
constexpr char kCheckpointMagic[] = "bunker audit checkpoint v1";
constexpr size_t kMaxSiteSize = 256;
// Longer than any line a valid checkpoint has ("site " + 256 bytes is the longest).
constexpr size_t kMaxCheckpointLine = 512;
// A whole checkpoint is at most about 550 bytes; a tail this long always holds the last one.
constexpr uint64_t kCheckpointTail = 1024;
// The most an interrupted checkpoint write can leave behind.
constexpr uint64_t kMaxTornCheckpoint = 6 * (kMaxCheckpointLine + 1);
constexpr size_t kReadBuffer = size_t{1} << 16;
// Proofs keep the offset of every 1024th entry so that a leaf is at most 1023 entries away.
constexpr uint64_t kOffsetSampleEvery = 1024;

using capsule::Fd;

// flock(2) held for the object's lifetime. flock locks belong to the open file description,
// so two AuditLogs in one process exclude each other as two processes do.
class FileLock {
 public:
  FileLock(int fd, int operation) {
    int rc;
    while ((rc = ::flock(fd, operation)) != 0 && errno == EINTR) {
    }
    if (rc == 0) {
      fd_ = fd;
    } else {
      status_ = capsule::ErrnoStatus("cannot lock the audit log", errno);
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::flock(fd_, LOCK_UN);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  int fd_ = -1;
  absl::Status status_;
};

// A RandomAccessFile over a descriptor, frozen at `size` bytes: a consistent snapshot while
// another process appends.
class FdView : public capsule::RandomAccessFile {
 public:
  FdView(int fd, uint64_t size) : fd_(fd), size_(size) {}
  uint64_t size() const override { return size_; }
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    if (offset > size_ || out.size() > size_ - offset) {
      return absl::OutOfRangeError("read past the end of the audit log");
    }
    absl::Status s = capsule::PreadAll(fd_, out, offset, "the audit log");
    if (absl::IsOutOfRange(s)) return absl::DataLossError("the audit log shrank while being read");
    return s;
  }

 private:
  int fd_;
  uint64_t size_;
};

// Sequential reads through a buffer, so that small records cost no system call each.
class BufferedReader {
 public:
  explicit BufferedReader(const capsule::RandomAccessFile& file) : file_(file) {}
  uint64_t file_size() const { return file_.size(); }
  // Copies [offset, offset + n) of the file; the caller has checked the bounds.
  absl::Status Read(uint64_t offset, uint8_t* out, size_t n) {
    if (offset < buf_offset_ || offset + n > buf_offset_ + buf_.size()) {
      const uint64_t len = std::min<uint64_t>(std::max(n, kReadBuffer), file_.size() - offset);
      buf_.resize(len);
      buf_offset_ = offset;
      absl::Status s = file_.ReadAt(offset, absl::MakeSpan(buf_));
      if (!s.ok()) {
        buf_.clear();
        return s;
      }
    }
    std::memcpy(out, buf_.data() + (offset - buf_offset_), n);
    return absl::OkStatus();
  }

 private:
  const capsule::RandomAccessFile& file_;
  std::vector<uint8_t> buf_;
  uint64_t buf_offset_ = 0;
};

// Frames `u32 BE length || entry` records (spec/AUDIT.md "Log file").
class EntryReader {
 public:
  EntryReader(const capsule::RandomAccessFile& file, uint64_t offset, uint64_t index)
      : in_(file), offset_(offset), index_(index) {}

  // The next entry's bytes, without the length. false at the end of the file, when it falls
  // exactly between entries.
  absl::StatusOr<bool> Next(std::vector<uint8_t>& bytes) {
    const uint64_t left = in_.file_size() - offset_;
    if (left == 0) return false;
    if (left < 4) return Error("is truncated");
    uint8_t p[4];
    BUNKER_RETURN_IF_ERROR(in_.Read(offset_, p, 4));
    const uint32_t n = capsule::LoadU32Be(p);
    if (n == 0 || n % 8 != 0 || n > kMaxAuditEntrySize) {
      return Error(absl::StrCat("has a bad length (", n, ")"));
    }
    if (left - 4 < n) return Error("is truncated");
    bytes.resize(n);
    BUNKER_RETURN_IF_ERROR(in_.Read(offset_ + 4, bytes.data(), n));
    offset_ += 4 + uint64_t{n};
    ++index_;
    return true;
  }

  void Seek(uint64_t offset, uint64_t index) {
    offset_ = offset;
    index_ = index;
  }
  // The end of the last entry read.
  uint64_t offset() const { return offset_; }
  // The index of the next entry.
  uint64_t index() const { return index_; }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::DataLossError(absl::StrCat("audit log entry ", index_, " ", what));
  }
  BufferedReader in_;
  uint64_t offset_;
  uint64_t index_;
};

// Cuts the checkpoints file into six-line blocks.
class CheckpointReader {
 public:
  enum class Got { kCheckpoint, kEnd, kIncomplete };

  CheckpointReader(const capsule::RandomAccessFile& file, uint64_t offset, uint64_t index)
      : in_(file), offset_(offset), index_(index) {}

  // kCheckpoint with the block's text; kEnd exactly at the end of the file; kIncomplete when
  // the file ends inside a block (an interrupted write).
  absl::StatusOr<Got> Next(std::string& text) {
    text.clear();
    uint64_t pos = offset_;
    const uint64_t size = in_.file_size();
    if (pos == size) return Got::kEnd;
    for (int line = 0; line < 6; ++line) {
      size_t len = 0;
      for (;;) {
        // Checked first: a write cut short (even one that left zeros) is incomplete, not bad.
        if (pos == size) return Got::kIncomplete;
        uint8_t c;
        BUNKER_RETURN_IF_ERROR(in_.Read(pos, &c, 1));
        ++pos;
        if (c == '\n') {
          text.push_back('\n');
          break;
        }
        if (++len <= kMaxCheckpointLine) text.push_back(static_cast<char>(c));
      }
      if (len > kMaxCheckpointLine) {
        return absl::DataLossError(absl::StrCat("checkpoint ", index_, " has an over-long line"));
      }
    }
    offset_ = pos;
    ++index_;
    return Got::kCheckpoint;
  }
  uint64_t offset() const { return offset_; }
  // Checkpoints read so far, counting from the start of the file.
  uint64_t index() const { return index_; }

 private:
  BufferedReader in_;
  uint64_t offset_;
  uint64_t index_;
};

// A site name a checkpoint can carry (spec/AUDIT.md "Checkpoints"): 1 to kMaxSiteSize bytes of
// capsule::IsPlainText text (valid UTF-8; no C0, DEL, C1, bidi or zero-width controls), since
// auditors' tools print it.
bool ValidSite(std::string_view site);

// The bytes of `s`, for hashing and signing.
absl::Span<const uint8_t> Bytes(std::string_view s);

// How far a log has been checked: everything before these offsets matches `latest`.
struct Position {
  uint64_t log_offset = 0;
  uint64_t ck_offset = 0;
  uint64_t checkpoints = 0;
  crypto::MerkleTreeBuilder tree;  // over the entries the checkpoints cover
  std::optional<Checkpoint> latest;
};

struct ScanOptions {
  const crypto::PublicIdentity* key = nullptr;
  // Auditors check every signature; the writer checks only the latest, because each earlier
  // root is chained to it through the tree and checking all would make every open O(n) in
  // signature verifications.
  bool verify_every_signature = false;
  // The writer tolerates (and reports) the tail an interrupted append leaves.
  bool writer = false;
  // The site every checkpoint must name; empty: whatever the first one names.
  std::string site;
  // Record the root of the tree at this size, if the log reaches it.
  std::optional<uint64_t> capture_size;
  // Check that no (issuer, capsuleId)'s running sum of `uses` falls below zero
  // (spec/AUDIT.md "Use counts are in the log", step V1.6). Needs a scan from entry 0: the sums
  // are over the entries this scan reads.
  bool check_uses = false;
};

struct ScanResult {
  bool torn_checkpoint = false;  // the checkpoints file ends inside a block
  bool unsigned_tail = false;    // the log has bytes past the latest checkpoint's entries
  std::optional<crypto::Sha256Digest> captured_root;
};

// Reads checkpoints from pos.ck_offset and entries from pos.log_offset, checking that each
// checkpoint's root is the tree over the entries up to its size, and advances `pos` past every
// checkpoint that holds. Errors name the first entry that no longer matches.
absl::StatusOr<ScanResult> Scan(const capsule::RandomAccessFile& log,
                                const capsule::RandomAccessFile& checkpoints,
                                const ScanOptions& opts, Position& pos);

// A log (and its checkpoints), frozen at sizes taken together under a shared lock, so that a
// concurrent append (entry first, then checkpoint, under the exclusive lock) never shows half
// done.
struct Snapshot {
  Fd log_fd, ck_fd;
  std::unique_ptr<FdView> log, checkpoints;
};

// Opens a regular file read-only.
absl::StatusOr<Fd> OpenForReading(const std::string& path);

// fstat's size, 0 if fstat fails.
uint64_t FileSize(int fd);

// Opens the log (and its checkpoints) and freezes their sizes under a shared lock.
absl::StatusOr<Snapshot> OpenSnapshot(const std::string& log_path, bool with_checkpoints);

}  // namespace bunker::verifier::audit_internal

#endif  // BUNKER_VERIFIER_AUDIT_LOG_INTERNAL_H_

#include "verifier/audit_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "capnp/message.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "crypto/merkle.h"
#include "crypto/status_macros.h"
#include "spec/audit.capnp.h"

namespace bunker::verifier {
namespace {

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
    const uint32_t n = uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
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

// --- Checkpoint text helpers ---------------------------------------------------------------

bool ValidSite(std::string_view site) {
  if (site.empty() || site.size() > kMaxSiteSize) return false;
  for (unsigned char c : site) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// Decimal without sign or leading zeros, so that each number has one spelling.
bool ParseCanonicalDecimal(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20 || (text.size() > 1 && text[0] == '0')) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

// Lowercase hex only, again for one spelling.
bool ParseLowerHex(std::string_view text, absl::Span<uint8_t> out) {
  if (text.size() != 2 * out.size()) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

absl::Span<const uint8_t> Bytes(std::string_view s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string FormatUtc(int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) return absl::StrCat(seconds);
  char buf[64];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return absl::StrCat(seconds);
  }
  return buf;
}

// --- Entry encoding --------------------------------------------------------------------------

capnp::Text::Reader AsText(const std::string& s) { return capnp::Text::Reader(s.data(), s.size()); }

void SetList(capnp::List<capnp::Text>::Builder list, const std::vector<std::string>& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].empty()) list.set(static_cast<unsigned>(i), AsText(items[i]));
  }
}

void GetList(capnp::List<capnp::Text>::Reader list, std::vector<std::string>& out) {
  out.clear();
  out.reserve(list.size());
  for (capnp::Text::Reader t : list) out.emplace_back(t.begin(), t.size());
}

// --- Scanning a log against its checkpoints -------------------------------------------------

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
};

struct ScanResult {
  bool torn_checkpoint = false;  // the checkpoints file ends inside a block
  bool unsigned_tail = false;    // the log has bytes past the latest checkpoint's entries
  std::optional<crypto::Sha256Digest> captured_root;
};

// "audit log entry 3 is" or "audit log entries 3..5 are": the entries [first, end) that a
// checkpoint adds. With one checkpoint per append (the writer's way) it is always one entry.
std::string EntriesAre(uint64_t first, uint64_t end) {
  if (end - first == 1) return absl::StrCat("audit log entry ", first, " is");
  return absl::StrCat("audit log entries ", first, "..", end - 1, " are");
}

// Reads checkpoints from pos.ck_offset and entries from pos.log_offset, checking that each
// checkpoint's root is the tree over the entries up to its size, and advances `pos` past every
// checkpoint that holds. Errors name the first entry that no longer matches.
absl::StatusOr<ScanResult> Scan(const capsule::RandomAccessFile& log,
                                const capsule::RandomAccessFile& checkpoints,
                                const ScanOptions& opts, Position& pos) {
  ScanResult out;
  if (opts.capture_size && *opts.capture_size == pos.tree.size()) {
    out.captured_root = pos.tree.Root();
  }
  EntryReader entries(log, pos.log_offset, pos.tree.size());
  CheckpointReader reader(checkpoints, pos.ck_offset, pos.checkpoints);
  std::string site = opts.site;
  if (site.empty() && pos.latest) site = pos.latest->site;
  std::optional<uint64_t> unverified_from;  // first entry under the newest unverified signature
  std::vector<uint8_t> bytes;
  std::string text;
  for (;;) {
    const uint64_t first = pos.tree.size();
    absl::StatusOr<CheckpointReader::Got> got = reader.Next(text);
    if (!got.ok()) {
      if (got.status().code() != absl::StatusCode::kDataLoss) return got.status();
      return absl::DataLossError(
          absl::StrCat("audit log entry ", first,
                       " is not covered by a valid checkpoint: ", got.status().message()));
    }
    if (*got == CheckpointReader::Got::kEnd) break;
    if (*got == CheckpointReader::Got::kIncomplete) {
      if (opts.writer && checkpoints.size() - pos.ck_offset <= kMaxTornCheckpoint) {
        out.torn_checkpoint = true;
        break;
      }
      return absl::DataLossError(absl::StrCat(
          "audit log entry ", first,
          " is not covered by a signed checkpoint: the checkpoints file ends in an incomplete "
          "checkpoint"));
    }
    absl::StatusOr<Checkpoint> c = Checkpoint::Parse(text);
    if (!c.ok()) {
      return absl::DataLossError(absl::StrCat(
          "audit log entry ", first, " is not covered by a valid checkpoint: checkpoint ",
          reader.index() - 1, " is malformed (", c.status().message(), ")"));
    }
    if (site.empty()) {
      site = c->site;
    } else if (c->site != site) {
      const std::string what = absl::StrCat("audit checkpoint ", reader.index() - 1,
                                            " names site '", c->site, "', not '", site, "'");
      if (opts.writer) return absl::FailedPreconditionError(what);
      return absl::DataLossError(what);
    }
    if (c->size <= first) {
      return absl::DataLossError(absl::StrCat("audit log entry ", first,
                                              " is not covered by a valid checkpoint: checkpoint ",
                                              reader.index() - 1, " has size ", c->size,
                                              ", not more than the ", first, " entries before it"));
    }
    if (opts.verify_every_signature) {
      if (!c->Verify(*opts.key).ok()) {
        return absl::DataLossError(
            absl::StrCat(EntriesAre(first, c->size),
                         " not covered by a valid checkpoint: the checkpoint of size ", c->size,
                         " does not verify under the site key (forged)"));
      }
    } else {
      unverified_from = first;
    }
    while (pos.tree.size() < c->size) {
      BUNKER_ASSIGN_OR_RETURN(const bool more, entries.Next(bytes));
      if (!more) {
        return absl::DataLossError(absl::StrCat("audit log entry ", pos.tree.size(),
                                                " is missing: the signed checkpoint of size ",
                                                c->size, " covers it (log truncated)"));
      }
      absl::Status valid = DecodeAuditEntry(bytes).status();
      if (!valid.ok()) {
        return absl::DataLossError(absl::StrCat("audit log entry ", pos.tree.size(),
                                                " is malformed (", valid.message(), ")"));
      }
      pos.tree.AddLeafHash(crypto::MerkleLeafHash(bytes));
      if (opts.capture_size && *opts.capture_size == pos.tree.size()) {
        out.captured_root = pos.tree.Root();
      }
    }
    if (pos.tree.Root() != c->root) {
      const std::string which =
          c->size - first == 1
              ? absl::StrCat("audit log entry ", first, " does")
              : absl::StrCat("audit log entries ", first, "..", c->size - 1, " do");
      return absl::DataLossError(
          absl::StrCat(which, " not match the signed checkpoint of size ", c->size,
                       " (changed, inserted, deleted or reordered entries)"));
    }
    pos.log_offset = entries.offset();
    pos.ck_offset = reader.offset();
    pos.checkpoints = reader.index();
    pos.latest = std::move(*c);
  }

  if (log.size() > pos.log_offset) {
    EntryReader probe(log, pos.log_offset, pos.tree.size());
    absl::StatusOr<bool> one = probe.Next(bytes);
    if (opts.writer) {
      // One interrupted append leaves at most one entry, perhaps partial, past its checkpoint.
      // More than that did not come from a crash of this code.
      const uint64_t tail = log.size() - pos.log_offset;
      if (tail > 4 + kMaxAuditEntrySize || (one.ok() && *one && probe.offset() != log.size())) {
        return absl::DataLossError(absl::StrCat(
            "audit log entries from ", pos.tree.size(),
            " are not covered by a signed checkpoint (more than an interrupted append leaves)"));
      }
      out.unsigned_tail = true;
    } else {
      if (!one.ok()) return one.status();
      return absl::DataLossError(absl::StrCat(
          "audit log entry ", pos.tree.size(),
          " is not covered by a signed checkpoint (added without the site's key, or an "
          "interrupted append)"));
    }
  }

  if (unverified_from && !pos.latest->Verify(*opts.key).ok()) {
    return absl::DataLossError(
        absl::StrCat(EntriesAre(*unverified_from, pos.latest->size),
                     " not covered by a valid checkpoint: the latest checkpoint (size ",
                     pos.latest->size, ") does not verify under the site key (forged)"));
  }
  return out;
}

// A log (and its checkpoints), frozen at sizes taken together under a shared lock, so that a
// concurrent append (entry first, then checkpoint, under the exclusive lock) never shows half
// done.
struct Snapshot {
  Fd log_fd, ck_fd;
  std::unique_ptr<FdView> log, checkpoints;
};

absl::StatusOr<Fd> OpenForReading(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return capsule::ErrnoStatus(absl::StrCat("cannot open ", path), errno);
  Fd out(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return capsule::ErrnoStatus(absl::StrCat("cannot stat ", path), errno);
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, " is not a file"));
  return out;
}

uint64_t FileSize(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

absl::StatusOr<Snapshot> OpenSnapshot(const std::string& log_path, bool with_checkpoints) {
  Snapshot s;
  BUNKER_ASSIGN_OR_RETURN(s.log_fd, OpenForReading(log_path));
  if (with_checkpoints) {
    BUNKER_ASSIGN_OR_RETURN(s.ck_fd, OpenForReading(AuditCheckpointsPath(log_path)));
  }
  {
    // Best effort: a copy on a file system without locks is still worth reading.
    FileLock lock(s.log_fd.get(), LOCK_SH);
    s.log = std::make_unique<FdView>(s.log_fd.get(), FileSize(s.log_fd.get()));
    if (with_checkpoints) {
      s.checkpoints = std::make_unique<FdView>(s.ck_fd.get(), FileSize(s.ck_fd.get()));
    }
  }
  return s;
}

absl::Status WriteAllAt(int fd, absl::Span<const uint8_t> data, uint64_t offset) {
  return capsule::PwriteAll(fd, data, offset, "the audit log");
}

absl::Status Sync(int fd) {
  if (::fsync(fd) != 0) return capsule::ErrnoStatus("cannot sync the audit log", errno);
  return absl::OkStatus();
}

absl::Status Truncate(int fd, uint64_t size) {
  int rc;
  while ((rc = ::ftruncate(fd, static_cast<off_t>(size))) != 0 && errno == EINTR) {
  }
  if (rc != 0) return capsule::ErrnoStatus("cannot cut the audit log's unsigned tail", errno);
  return Sync(fd);
}

absl::Status SyncDir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return capsule::ErrnoStatus(absl::StrCat("cannot open ", dir), errno);
  return Sync(fd.get());
}

// Opens `path` read-write; *created tells whether this call created it.
absl::StatusOr<Fd> OpenOrCreate(const std::string& path, bool create, bool* created) {
  *created = false;
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT && create) {
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_CREAT | O_EXCL, 0640);
    if (fd >= 0) {
      *created = true;
    } else if (errno == EEXIST) {  // another process won the race
      fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    }
  }
  if (fd < 0) return capsule::ErrnoStatus(absl::StrCat("cannot open ", path), errno);
  Fd out(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return capsule::ErrnoStatus(absl::StrCat("cannot stat ", path), errno);
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, " is not a file"));
  return out;
}

// Whether `path` exists with more than zero bytes (false when absent).
absl::StatusOr<bool> NonEmpty(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return capsule::ErrnoStatus(absl::StrCat("cannot stat ", path), errno);
  }
  return st.st_size > 0;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// --- Export helpers ------------------------------------------------------------------------

// Appends `s` as UTF-8, replacing each byte that does not start a valid sequence with U+FFFD.
// `emit` gets each valid code point's bytes.
template <typename Emit>
void ForEachCodePoint(std::string_view s, Emit emit) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) ok = false;
      cp = cp << 6 | (d & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
               (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))) {
      ok = false;
    }
    if (ok) {
      emit(cp, s.substr(i, len));
      i += len;
    } else {
      emit(0xFFFD, kReplacement);
      ++i;
    }
  }
}

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  ForEachCodePoint(s, [&out](uint32_t cp, std::string_view bytes) {
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        // C0, DEL and C1 controls escaped, so that no line can drive a terminal.
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) {
          absl::StrAppendFormat(&out, "\\u%04x", cp);
        } else {
          out.append(bytes.data(), bytes.size());
        }
    }
  });
  out += '"';
}

void AppendJsonList(std::string& out, const std::vector<std::string>& items) {
  out += '[';
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    AppendJsonString(out, items[i]);
  }
  out += ']';
}

std::string JsonList(const std::vector<std::string>& items) {
  std::string out;
  AppendJsonList(out, items);
  return out;
}

// A quoted RFC 4180 cell. A cell a spreadsheet would evaluate (=, +, -, @, tab, CR first) is
// prefixed with an apostrophe: requesters choose the purpose text, and auditors open exports
// in spreadsheets.
void AppendCsvCell(std::string& out, std::string_view s) {
  std::string clean;
  ForEachCodePoint(
      s, [&clean](uint32_t, std::string_view bytes) { clean.append(bytes.data(), bytes.size()); });
  out += '"';
  if (!clean.empty() && std::string_view("=+-@\t\r").find(clean[0]) != std::string_view::npos) {
    out += '\'';
  }
  for (char c : clean) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

}  // namespace

// --- Entries -------------------------------------------------------------------------------

std::vector<uint8_t> EncodeAuditEntry(const AuditRecord& r) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<schema::AuditEntry>();
  root.setTime(r.time);
  // spec/AUDIT.md "Entries": an empty text or list is a null pointer, so it has one encoding.
  if (!r.event.empty()) root.setEvent(AsText(r.event));
  if (!r.decision.empty()) root.setDecision(AsText(r.decision));
  if (!r.capsule_id.empty()) root.setCapsuleId(AsText(r.capsule_id));
  if (!r.issuer.empty()) root.setIssuer(AsText(r.issuer));
  if (!r.site.empty()) root.setSite(AsText(r.site));
  if (!r.requester.empty()) root.setRequester(AsText(r.requester));
  if (!r.purpose.empty()) root.setPurpose(AsText(r.purpose));
  if (!r.paths.empty()) SetList(root.initPaths(static_cast<unsigned>(r.paths.size())), r.paths);
  if (!r.rules.empty()) SetList(root.initRules(static_cast<unsigned>(r.rules.size())), r.rules);
  if (!r.reasons.empty()) {
    SetList(root.initReasons(static_cast<unsigned>(r.reasons.size())), r.reasons);
  }
  root.setUses(r.uses);
  root.setLocalUid(r.uid ? int64_t{*r.uid} : -1);
  root.setLocalPid(r.pid ? int64_t{*r.pid} : -1);
  kj::Array<capnp::word> words = capnp::canonicalize(root.asReader());
  auto bytes = words.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

absl::StatusOr<AuditRecord> DecodeAuditEntry(absl::Span<const uint8_t> bytes) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0 ||
      bytes.size() > kMaxAuditEntrySize) {
    return absl::DataLossError("audit entry has a bad length");
  }
  // Word-aligned copy: the caller's buffer carries no alignment guarantee.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  kj::ArrayPtr<const capnp::word> segments[1] = {words.asPtr()};
  capnp::ReaderOptions options;
  // The limit is cumulative per reader. A canonical message has no far pointers or unreachable
  // words, so the canonical check and the field reads each read a word at most once; 4x plus
  // slack bounds the work to a few passes over the bytes, as in capsule/manifest.cc.
  options.traversalLimitInWords = 4 * words.size() + 64;
  options.nestingLimit = 8;
  AuditRecord r;
  try {
    capnp::SegmentArrayMessageReader reader(kj::arrayPtr(segments, 1), options);
    if (!reader.isCanonical()) return absl::DataLossError("audit entry is not canonical");
    auto root = reader.getRoot<schema::AuditEntry>();
    r.time = root.getTime();
    auto text = [](capnp::Text::Reader t) { return std::string(t.begin(), t.size()); };
    r.event = text(root.getEvent());
    r.decision = text(root.getDecision());
    r.capsule_id = text(root.getCapsuleId());
    r.issuer = text(root.getIssuer());
    r.site = text(root.getSite());
    r.requester = text(root.getRequester());
    r.purpose = text(root.getPurpose());
    GetList(root.getPaths(), r.paths);
    GetList(root.getRules(), r.rules);
    GetList(root.getReasons(), r.reasons);
    r.uses = root.getUses();
    const int64_t uid = root.getLocalUid(), pid = root.getLocalPid();
    if (uid < -1 || uid > int64_t{UINT32_MAX} || pid < -1 || pid > int64_t{INT32_MAX}) {
      return absl::DataLossError("audit entry has an impossible local uid or pid");
    }
    if (uid >= 0) r.uid = static_cast<uint32_t>(uid);
    if (pid >= 0) r.pid = static_cast<int32_t>(pid);
  } catch (const kj::Exception&) {
    // Cap'n Proto's message names internals only.
    return absl::DataLossError("audit entry is not a valid AuditEntry message");
  }
  // Re-encoding must give the input back: no unknown fields, no empty-but-present values.
  const std::vector<uint8_t> again = EncodeAuditEntry(r);
  if (again.size() != bytes.size() || std::memcmp(again.data(), bytes.data(), bytes.size()) != 0) {
    return absl::DataLossError("audit entry is not in canonical form (unknown or extra data)");
  }
  return r;
}

// --- Checkpoints ---------------------------------------------------------------------------

std::string Checkpoint::SignedText() const {
  return absl::StrCat(kCheckpointMagic, "\nsite ", site, "\nsize ", size, "\nroot ",
                      crypto::ToHex(root), "\ntime ", time, "\n");
}

std::string Checkpoint::Encode() const {
  return absl::StrCat(SignedText(), "sig ", crypto::ToHex(signature), "\n");
}

absl::StatusOr<Checkpoint> Checkpoint::Parse(std::string_view text) {
  if (text.size() > 6 * (kMaxCheckpointLine + 1)) {
    return absl::InvalidArgumentError("checkpoint is too long");
  }
  if (text.empty() || text.back() != '\n') {
    return absl::InvalidArgumentError("checkpoint does not end with a newline");
  }
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  if (lines.size() != 6) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint has ", lines.size(), " lines, not 6"));
  }
  auto field = [&lines](size_t i, std::string_view key, std::string_view* value) {
    if (lines[i].size() <= key.size() || lines[i].substr(0, key.size()) != key) return false;
    *value = lines[i].substr(key.size());
    return true;
  };
  if (lines[0] != kCheckpointMagic) {
    return absl::InvalidArgumentError("not a bunker audit checkpoint v1");
  }
  Checkpoint c;
  std::string_view v;
  if (!field(1, "site ", &v) || !ValidSite(v)) {
    return absl::InvalidArgumentError("checkpoint line 2 is not 'site NAME'");
  }
  c.site = std::string(v);
  if (!field(2, "size ", &v) || !ParseCanonicalDecimal(v, &c.size)) {
    return absl::InvalidArgumentError("checkpoint line 3 is not 'size DECIMAL'");
  }
  if (!field(3, "root ", &v) || !ParseLowerHex(v, absl::MakeSpan(c.root))) {
    return absl::InvalidArgumentError(
        "checkpoint line 4 is not 'root' and 64 lowercase hex digits");
  }
  uint64_t t = 0;
  if (!field(4, "time ", &v) || !ParseCanonicalDecimal(v, &t) ||
      t > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError("checkpoint line 5 is not 'time DECIMAL'");
  }
  c.time = static_cast<int64_t>(t);
  if (!field(5, "sig ", &v) || !ParseLowerHex(v, absl::MakeSpan(c.signature))) {
    return absl::InvalidArgumentError(
        "checkpoint line 6 is not 'sig' and 128 lowercase hex digits");
  }
  return c;
}

absl::Status Checkpoint::Verify(const crypto::PublicIdentity& key) const {
  const std::string text = SignedText();
  if (!crypto::VerifySignature(key.sign_key, Bytes(text), signature).ok()) {
    return absl::DataLossError("audit checkpoint signature does not verify under the site key");
  }
  return absl::OkStatus();
}

// --- The writer ----------------------------------------------------------------------------

struct AuditLog::State {
  std::string dir;
  const crypto::Identity* signer = nullptr;
  std::string site;
  Fd log_fd, ck_fd;
  Position pos;
  // False after a failed append could not be undone; the next Open repairs the files.
  bool usable = true;
  UnsignedTail tail = UnsignedTail::kCut;

  // Under the lock: catches up with what other processes appended since `pos`, checks it, and
  // cuts off the tail of an interrupted append. With `last_signed`, first checks the log
  // against it (before anything is cut).
  // TODO(perf): Open starts from an empty Position, so every decision re-reads and re-hashes
  // the whole log. A frontier cached beside the last signed checkpoint would make it O(1).
  absl::Status Refresh(const std::optional<Checkpoint>& last_signed) {
    const uint64_t log_size = FileSize(log_fd.get()), ck_size = FileSize(ck_fd.get());
    if (log_size < pos.log_offset || ck_size < pos.ck_offset) {
      return absl::DataLossError("audit log was rolled back while open (files shrank)");
    }
    FdView log(log_fd.get(), log_size), checkpoints(ck_fd.get(), ck_size);
    ScanOptions opts;
    opts.key = &signer->public_identity();
    opts.writer = true;
    opts.site = site;
    if (last_signed) opts.capture_size = last_signed->size;
    Position next = pos;
    absl::StatusOr<ScanResult> scan = Scan(log, checkpoints, opts, next);
    if (!scan.ok()) {
      if (scan.status().code() != absl::StatusCode::kDataLoss) return scan.status();
      return absl::DataLossError(
          absl::StrCat("audit log was tampered with: ", scan.status().message()));
    }
    if (last_signed) {
      if (!last_signed->Verify(signer->public_identity()).ok() || last_signed->site != site) {
        return absl::DataLossError(
            "the checkpoint this site last signed does not verify under its key");
      }
      if (last_signed->size > next.tree.size()) {
        return absl::DataLossError(
            absl::StrCat("audit log was rolled back: it has ", next.tree.size(),
                         " signed entries, but this site already signed a checkpoint of size ",
                         last_signed->size));
      }
      if (!scan->captured_root || *scan->captured_root != last_signed->root) {
        return absl::DataLossError(
            absl::StrCat("audit log was tampered with: its first ", last_signed->size,
                         " entries do not match the checkpoint this site last signed"));
      }
    }
    if ((scan->unsigned_tail || scan->torn_checkpoint) && tail == UnsignedTail::kRefuse) {
      return absl::DataLossError(
          "audit log was tampered with: it ends in an entry that no checkpoint signs, and no "
          "append was under way (spec/AUDIT.md \"Crash recovery\")");
    }
    // Never acknowledged, so never released anything: spec/AUDIT.md "Crash recovery".
    if (scan->unsigned_tail) BUNKER_RETURN_IF_ERROR(Truncate(log_fd.get(), next.log_offset));
    if (scan->torn_checkpoint) BUNKER_RETURN_IF_ERROR(Truncate(ck_fd.get(), next.ck_offset));
    pos = std::move(next);
    return absl::OkStatus();
  }

  // Best effort after a failed append: back to the last acknowledged state.
  void Undo() {
    if (!Truncate(log_fd.get(), pos.log_offset).ok() ||
        !Truncate(ck_fd.get(), pos.ck_offset).ok()) {
      usable = false;
    }
  }
};

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(
    const std::string& state_dir, const crypto::Identity* signer, std::string site,
    const std::optional<Checkpoint>& last_signed, UnsignedTail tail) {
  if (signer == nullptr) return absl::InvalidArgumentError("the audit log needs a signing key");
  if (!ValidSite(site)) {
    return absl::InvalidArgumentError(
        "site name must be 1-256 bytes without control characters (it goes into checkpoints)");
  }
  if (::mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return capsule::ErrnoStatus(absl::StrCat("cannot create ", state_dir), errno);
  }
  const std::string log_path = absl::StrCat(state_dir, "/audit.log");
  const std::string ck_path = AuditCheckpointsPath(log_path);
  // Creating one file beside a non-empty other would turn deletion into a fresh start.
  BUNKER_ASSIGN_OR_RETURN(const bool log_has_data, NonEmpty(log_path));
  BUNKER_ASSIGN_OR_RETURN(const bool ck_has_data, NonEmpty(ck_path));
  if (log_has_data && !Exists(ck_path)) {
    return absl::DataLossError("audit log was tampered with: audit.checkpoints is missing");
  }
  if (ck_has_data && !Exists(log_path)) {
    return absl::DataLossError("audit log was tampered with: audit.log is missing");
  }

  auto state = std::make_unique<State>();
  state->dir = state_dir;
  state->signer = signer;
  state->site = std::move(site);
  state->tail = tail;
  bool created_log = false, created_ck = false;
  BUNKER_ASSIGN_OR_RETURN(state->log_fd, OpenOrCreate(log_path, true, &created_log));
  BUNKER_ASSIGN_OR_RETURN(state->ck_fd, OpenOrCreate(ck_path, true, &created_ck));
  if (created_log || created_ck) BUNKER_RETURN_IF_ERROR(SyncDir(state_dir));
  {
    FileLock lock(state->log_fd.get(), LOCK_EX);
    BUNKER_RETURN_IF_ERROR(lock.status());
    BUNKER_RETURN_IF_ERROR(state->Refresh(last_signed));
  }
  std::unique_ptr<AuditLog> log(new AuditLog());
  log->state_ = std::move(state);
  return log;
}

absl::StatusOr<Checkpoint> AuditLog::Append(const AuditRecord& record, int64_t now) {
  State& st = *state_;
  if (!st.usable) {
    return absl::FailedPreconditionError("audit log is unusable after a failed append; reopen it");
  }
  const std::vector<uint8_t> bytes = EncodeAuditEntry(record);
  if (bytes.size() > kMaxAuditEntrySize) {
    return absl::InvalidArgumentError(absl::StrCat("audit record is too large (", bytes.size(),
                                                   " bytes encoded, at most ", kMaxAuditEntrySize,
                                                   ")"));
  }
  FileLock lock(st.log_fd.get(), LOCK_EX);
  BUNKER_RETURN_IF_ERROR(lock.status());
  BUNKER_RETURN_IF_ERROR(st.Refresh(std::nullopt));

  std::vector<uint8_t> framed(4 + bytes.size());
  const uint32_t n = static_cast<uint32_t>(bytes.size());
  framed[0] = static_cast<uint8_t>(n >> 24);
  framed[1] = static_cast<uint8_t>(n >> 16);
  framed[2] = static_cast<uint8_t>(n >> 8);
  framed[3] = static_cast<uint8_t>(n);
  std::memcpy(framed.data() + 4, bytes.data(), bytes.size());
  // The entry is durable before a checkpoint can name it; see spec/AUDIT.md "Writing".
  absl::Status s = WriteAllAt(st.log_fd.get(), framed, st.pos.log_offset);
  if (s.ok()) s = Sync(st.log_fd.get());
  if (!s.ok()) {
    st.Undo();
    return s;
  }

  Position next = st.pos;
  next.tree.AddLeafHash(crypto::MerkleLeafHash(bytes));
  Checkpoint c;
  c.site = st.site;
  c.size = next.tree.size();
  c.root = next.tree.Root();
  c.time = now;
  const std::string signed_text = c.SignedText();
  c.signature = st.signer->Sign(Bytes(signed_text));
  const std::string text = c.Encode();
  s = WriteAllAt(st.ck_fd.get(), Bytes(text), st.pos.ck_offset);
  if (s.ok()) s = Sync(st.ck_fd.get());
  if (!s.ok()) {
    st.Undo();
    return s;
  }
  next.log_offset += framed.size();
  next.ck_offset += text.size();
  ++next.checkpoints;
  next.latest = c;
  st.pos = std::move(next);
  return c;
}

uint64_t AuditLog::size() const { return state_->pos.tree.size(); }

const std::optional<Checkpoint>& AuditLog::latest() const { return state_->pos.latest; }

AuditLog::~AuditLog() = default;

// --- The reader side -----------------------------------------------------------------------

std::string AuditCheckpointsPath(const std::string& log_path) {
  std::string base = log_path;
  if (absl::EndsWith(base, ".log")) base.resize(base.size() - 4);
  return base + ".checkpoints";
}

absl::StatusOr<Checkpoint> ReadLatestCheckpoint(const std::string& log_path) {
  BUNKER_ASSIGN_OR_RETURN(Fd fd, OpenForReading(AuditCheckpointsPath(log_path)));
  const uint64_t size = FileSize(fd.get());
  if (size == 0) return absl::NotFoundError("the audit log has no checkpoint yet");
  const uint64_t len = std::min(size, kCheckpointTail);
  std::string tail(len, '\0');
  FdView view(fd.get(), size);
  BUNKER_RETURN_IF_ERROR(view.ReadAt(
      size - len, absl::MakeSpan(reinterpret_cast<uint8_t*>(tail.data()), tail.size())));
  if (tail.back() != '\n') {
    return absl::DataLossError("the checkpoints file ends in an incomplete checkpoint");
  }
  // Lines cannot contain newlines and only a checkpoint's first line starts with the magic.
  const std::string marker = absl::StrCat("\n", kCheckpointMagic, "\n");
  size_t start = tail.rfind(marker);
  if (start != std::string::npos) {
    ++start;
  } else if (len == size && tail.compare(0, marker.size() - 1, marker.substr(1)) == 0) {
    start = 0;
  } else {
    return absl::DataLossError("the checkpoints file does not end in a checkpoint");
  }
  absl::StatusOr<Checkpoint> c = Checkpoint::Parse(std::string_view(tail).substr(start));
  if (!c.ok()) {
    return absl::DataLossError(
        absl::StrCat("the latest audit checkpoint is malformed (", c.status().message(), ")"));
  }
  return c;
}

absl::StatusOr<AuditVerifyResult> VerifyAuditLog(const std::string& log_path,
                                                 const crypto::PublicIdentity& site_key,
                                                 const std::optional<Checkpoint>& trusted) {
  if (trusted && !trusted->Verify(site_key).ok()) {
    return absl::DataLossError("the trusted checkpoint does not verify under the site key");
  }
  BUNKER_ASSIGN_OR_RETURN(Snapshot snap, OpenSnapshot(log_path, /*with_checkpoints=*/true));
  ScanOptions opts;
  opts.key = &site_key;
  opts.verify_every_signature = true;
  if (trusted) opts.capture_size = trusted->size;
  Position pos;
  BUNKER_ASSIGN_OR_RETURN(const ScanResult scan, Scan(*snap.log, *snap.checkpoints, opts, pos));
  const uint64_t n = pos.tree.size();
  if (trusted) {
    if (pos.latest && pos.latest->site != trusted->site) {
      return absl::InvalidArgumentError(absl::StrCat("the trusted checkpoint is for site '",
                                                     trusted->site, "', the log for '",
                                                     pos.latest->site, "'"));
    }
    if (trusted->size > n) {
      return absl::DataLossError(absl::StrCat(
          "audit log entry ", n, " is missing: the trusted checkpoint covers ", trusted->size,
          " entries, the log only ", n, " (truncated, or replaced by an older copy)"));
    }
    if (!scan.captured_root || *scan.captured_root != trusted->root) {
      return absl::DataLossError(
          absl::StrCat("audit log does not match the trusted checkpoint of size ", trusted->size,
                       ": the site signed two different histories (forked log)"));
    }
  }
  AuditVerifyResult out;
  out.entries = n;
  if (pos.latest) {
    out.checkpoint = *pos.latest;
  } else {
    out.checkpoint.root = pos.tree.Root();
  }
  return out;
}

absl::Status ForEachAuditRecord(const std::string& log_path,
                                const std::function<bool(uint64_t, const AuditRecord&)>& fn) {
  BUNKER_ASSIGN_OR_RETURN(Snapshot snap, OpenSnapshot(log_path, /*with_checkpoints=*/false));
  EntryReader entries(*snap.log, 0, 0);
  std::vector<uint8_t> bytes;
  for (;;) {
    const uint64_t index = entries.index();
    BUNKER_ASSIGN_OR_RETURN(const bool more, entries.Next(bytes));
    if (!more) return absl::OkStatus();
    absl::StatusOr<AuditRecord> r = DecodeAuditEntry(bytes);
    if (!r.ok()) {
      return absl::DataLossError(
          absl::StrCat("audit log entry ", index, " is malformed (", r.status().message(), ")"));
    }
    if (!fn(index, *r)) return absl::OkStatus();
  }
}

bool AuditFilter::Matches(const AuditRecord& r) const {
  if (!capsule_id.empty() && !absl::EqualsIgnoreCase(capsule_id, r.capsule_id)) return false;
  if (!requester.empty()) {
    absl::StatusOr<crypto::Fingerprint> want = crypto::Fingerprint::Parse(requester);
    absl::StatusOr<crypto::Fingerprint> got = crypto::Fingerprint::Parse(r.requester);
    if (want.ok() && got.ok()) {
      if (*want != *got) return false;
    } else if (requester != r.requester) {
      return false;
    }
  }
  if (!decision.empty() && decision != r.decision) return false;
  if (since && r.time < *since) return false;
  if (until && r.time > *until) return false;
  return true;
}

std::string AuditRecordToJson(uint64_t index, const AuditRecord& r) {
  std::string out = absl::StrCat("{\"index\": ", index, ", \"time\": ", r.time,
                                 ", \"time_utc\": \"", FormatUtc(r.time), "\"");
  const std::pair<const char*, const std::string*> texts[] = {
      {"event", &r.event},    {"decision", &r.decision}, {"capsule_id", &r.capsule_id},
      {"issuer", &r.issuer},  {"site", &r.site},         {"requester", &r.requester},
      {"purpose", &r.purpose}};
  for (const auto& [key, value] : texts) {
    absl::StrAppend(&out, ", \"", key, "\": ");
    AppendJsonString(out, *value);
  }
  const std::pair<const char*, const std::vector<std::string>*> lists[] = {
      {"paths", &r.paths}, {"rules", &r.rules}, {"reasons", &r.reasons}};
  for (const auto& [key, value] : lists) {
    absl::StrAppend(&out, ", \"", key, "\": ");
    AppendJsonList(out, *value);
  }
  absl::StrAppend(&out, ", \"uses\": ", r.uses, ", \"uid\": ",
                  r.uid ? absl::StrCat(*r.uid) : "null", ", \"pid\": ",
                  r.pid ? absl::StrCat(*r.pid) : "null", "}");
  return out;
}

std::string AuditCsvHeader() {
  return "index,time,time_utc,event,decision,capsule_id,issuer,site,requester,purpose,paths,"
         "rules,reasons,uses,uid,pid";
}

std::string AuditRecordToCsv(uint64_t index, const AuditRecord& r) {
  std::string out = absl::StrCat(index, ",", r.time, ",", FormatUtc(r.time));
  for (const std::string* v :
       {&r.event, &r.decision, &r.capsule_id, &r.issuer, &r.site, &r.requester, &r.purpose}) {
    out += ',';
    AppendCsvCell(out, *v);
  }
  for (const std::vector<std::string>* v : {&r.paths, &r.rules, &r.reasons}) {
    out += ',';
    AppendCsvCell(out, JsonList(*v));
  }
  // Numbers, unquoted like the first cells; an absent uid or pid is an empty cell.
  absl::StrAppend(&out, ",", r.uses, ",", r.uid ? absl::StrCat(*r.uid) : "", ",",
                  r.pid ? absl::StrCat(*r.pid) : "");
  return out;
}

// --- Proofs --------------------------------------------------------------------------------

namespace {

// The first `size` entries of a log, hashed in one pass that also keeps every 1024th offset;
// leaves are then fetched again from the file, in O(size / 1024) memory instead of 32 bytes
// per entry.
class LeafSource {
 public:
  static absl::StatusOr<std::unique_ptr<LeafSource>> Open(const std::string& log_path,
                                                          uint64_t size,
                                                          std::optional<uint64_t> capture) {
    BUNKER_ASSIGN_OR_RETURN(Snapshot snap, OpenSnapshot(log_path, /*with_checkpoints=*/false));
    std::unique_ptr<LeafSource> s(new LeafSource(std::move(snap)));
    crypto::MerkleTreeBuilder tree;
    if (capture && *capture == 0) s->captured_ = tree.Root();
    std::vector<uint8_t> bytes;
    while (tree.size() < size) {
      if (tree.size() % kOffsetSampleEvery == 0) s->samples_.push_back(s->cursor_.offset());
      BUNKER_ASSIGN_OR_RETURN(const bool more, s->cursor_.Next(bytes));
      if (!more) {
        return absl::InvalidArgumentError(
            absl::StrCat("the audit log has only ", tree.size(), " entries, fewer than ", size));
      }
      tree.AddLeafHash(crypto::MerkleLeafHash(bytes));
      if (capture && *capture == tree.size()) s->captured_ = tree.Root();
    }
    s->root_ = tree.Root();
    return s;
  }

  // A crypto::LeafHashFetcher: sequential reads are free, a jump re-reads at most 1023 entries.
  absl::StatusOr<crypto::Sha256Digest> Leaf(uint64_t i) {
    if (i / kOffsetSampleEvery >= samples_.size()) {
      return absl::InvalidArgumentError("leaf index out of range");
    }
    if (cursor_.index() > i || i - cursor_.index() >= kOffsetSampleEvery) {
      const uint64_t base = i / kOffsetSampleEvery;
      cursor_.Seek(samples_[base], base * kOffsetSampleEvery);
    }
    std::vector<uint8_t>& bytes = scratch_;
    while (cursor_.index() <= i) {
      BUNKER_ASSIGN_OR_RETURN(const bool more, cursor_.Next(bytes));
      if (!more) return absl::DataLossError("the audit log shrank while proving");
    }
    return crypto::MerkleLeafHash(bytes);
  }

  crypto::LeafHashFetcher Fetcher() {
    return [this](uint64_t i) { return Leaf(i); };
  }
  const crypto::Sha256Digest& root() const { return root_; }
  const std::optional<crypto::Sha256Digest>& captured() const { return captured_; }

 private:
  explicit LeafSource(Snapshot snap) : snap_(std::move(snap)), cursor_(*snap_.log, 0, 0) {}
  Snapshot snap_;
  EntryReader cursor_;
  std::vector<uint64_t> samples_;
  std::vector<uint8_t> scratch_;
  crypto::Sha256Digest root_{};
  std::optional<crypto::Sha256Digest> captured_;
};

}  // namespace

absl::StatusOr<InclusionProof> ProveInclusion(const std::string& log_path, uint64_t index,
                                              uint64_t size) {
  if (index >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry ", index, " is not in a tree of ", size, " entries"));
  }
  BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<LeafSource> leaves,
                          LeafSource::Open(log_path, size, std::nullopt));
  InclusionProof p;
  p.index = index;
  p.size = size;
  p.root = leaves->root();
  BUNKER_ASSIGN_OR_RETURN(p.leaf, leaves->Leaf(index));
  BUNKER_ASSIGN_OR_RETURN(p.path, crypto::InclusionProof(index, size, leaves->Fetcher()));
  // The two passes must have read the same bytes; an auditor will check this anyway.
  if (!crypto::VerifyInclusion(index, size, p.leaf, p.path, p.root)) {
    return absl::DataLossError("the audit log changed while the proof was built");
  }
  return p;
}

absl::StatusOr<ConsistencyProof> ProveConsistency(const std::string& log_path, uint64_t old_size,
                                                  uint64_t new_size) {
  if (old_size > new_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("old size ", old_size, " is larger than new size ", new_size));
  }
  BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<LeafSource> leaves,
                          LeafSource::Open(log_path, new_size, old_size));
  ConsistencyProof p;
  p.old_size = old_size;
  p.new_size = new_size;
  p.old_root = *leaves->captured();
  p.new_root = leaves->root();
  BUNKER_ASSIGN_OR_RETURN(p.path, crypto::ConsistencyProof(old_size, new_size, leaves->Fetcher()));
  if (!crypto::VerifyConsistency(old_size, new_size, p.old_root, p.new_root, p.path)) {
    return absl::DataLossError("the audit log changed while the proof was built");
  }
  return p;
}

}  // namespace bunker::verifier

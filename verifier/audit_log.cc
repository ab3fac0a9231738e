#include "verifier/audit_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "capsule/byte_order.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "crypto/merkle.h"
#include "crypto/status_macros.h"
#include "verifier/audit_log_internal.h"

namespace bunker::verifier {
namespace {

using audit_internal::Bytes;
using audit_internal::FdView;
using audit_internal::FileLock;
using audit_internal::FileSize;
using audit_internal::Position;
using audit_internal::Scan;
using audit_internal::ScanOptions;
using audit_internal::ScanResult;
using audit_internal::ValidSite;
using capsule::Fd;

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

}  // namespace

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
        "site name must be 1-256 bytes of UTF-8 without control, bidi or zero-width characters "
        "(it goes into checkpoints)");
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
  if (created_log || created_ck) BUNKER_RETURN_IF_ERROR(capsule::SyncDirectory(state_dir));
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
  capsule::StoreU32Be(n, framed.data());
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

}  // namespace bunker::verifier

// Checking a log against its checkpoints (spec/AUDIT.md "Verification"), shared by the writer's
// recovery and the auditor's verification.
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <utility>

#include "verifier/audit_log_internal.h"

#include "crypto/status_hint.h"

namespace bunker::verifier::audit_internal {
namespace {

// "audit log entry 3 is" or "audit log entries 3..5 are": the entries [first, end) that a
// checkpoint adds. With one checkpoint per append (the writer's way) it is always one entry.
std::string EntriesAre(uint64_t first, uint64_t end) {
  if (end - first == 1) return absl::StrCat("audit log entry ", first, " is");
  return absl::StrCat("audit log entries ", first, "..", end - 1, " are");
}

}  // namespace

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
  std::optional<uint64_t> negative_uses;    // first entry whose running sum of uses is < 0
  // Running sums of `uses` per (issuer, capsuleId), only for entries with uses != 0. Int8
  // steps cannot overflow an int64 in any log that fits a disk.
  std::map<std::pair<std::string, std::string>, int64_t> uses;
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
      absl::StatusOr<AuditRecord> r = DecodeAuditEntry(bytes);
      if (!r.ok()) {
        return absl::DataLossError(absl::StrCat("audit log entry ", pos.tree.size(),
                                                " is malformed (", r.status().message(), ")"));
      }
      if (opts.check_uses && r->uses != 0 && !negative_uses) {
        int64_t& sum = uses[{r->issuer, r->capsule_id}];
        sum += r->uses;
        if (sum < 0) negative_uses = pos.tree.size();
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
    // After the root and signature checks: an entry that was tampered with is named as such,
    // not as a refund.
    if (negative_uses) {
      if (!opts.verify_every_signature && !c->Verify(*opts.key).ok()) {
        return absl::DataLossError(
            absl::StrCat(EntriesAre(first, c->size),
                         " not covered by a valid checkpoint: the checkpoint of size ", c->size,
                         " does not verify under the site key (forged)"));
      }
      return absl::DataLossError(absl::StrCat(
          "audit log entry ", *negative_uses,
          " refunds a use that was never counted (the sum of uses for its issuer and capsule "
          "falls below zero)"));
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

namespace {

// A site's log is its user's alone (its state folder 0700): who may read it, for a hint. Empty
// when the folder is this process's own (the daemon itself: a file in it that it cannot read
// is another matter, and "run this as ..." would mislead) or cannot be told.
std::string OwnerOfFolderOf(const std::string& path, bool* mine) {
  *mine = false;
  const size_t slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "."
                             : slash == 0               ? "/"
                                                        : path.substr(0, slash);
  struct stat st;
  if (::stat(folder.c_str(), &st) != 0) return "";
  if (st.st_uid == ::geteuid()) {
    *mine = true;
    return "";
  }
  struct passwd pw, *found = nullptr;
  char buf[4096];
  if (::getpwuid_r(st.st_uid, &pw, buf, sizeof buf, &found) != 0 || found == nullptr) return "";
  return found->pw_name;
}

}  // namespace

absl::StatusOr<Fd> OpenForReading(const std::string& path) {
  // O_NONBLOCK: a FIFO must not hang the open before the regular-file check below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    absl::Status s = capsule::ErrnoStatus(absl::StrCat("cannot open ", path), err);
    if (err != EACCES) return s;
    bool mine = false;
    const std::string owner = OwnerOfFolderOf(path, &mine);
    if (mine) return s;
    if (owner.empty()) {
      return WithHint(s, "a site's audit log is its user's alone: run this as root or as that user");
    }
    return WithHint(s, absl::StrCat("a site's audit log is its user's alone: run this as root or as ",
                                    owner, " (sudo -u ", owner, " capsule audit ...)"));
  }
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

}  // namespace bunker::verifier::audit_internal

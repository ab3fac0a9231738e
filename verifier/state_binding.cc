#include "verifier/state_binding.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "capsule/fd.h"
#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "crypto/status_macros.h"
#include "verifier/use_counter.h"

namespace bunker::verifier {
namespace {

// The one message for every way the database and the log disagree (spec/POLICY.md "Use
// counting"): the CLI maps kDataLoss to exit status 4.
absl::Status Mismatch(const std::string& what) {
  return absl::DataLossError(absl::StrCat(
      "the site's state database does not match its audit log (", what,
      "): refusing to decide; see spec/POLICY.md \"Use counting\" before repairing anything"));
}

// Adds `r.uses` to its capsule's count. kDataLoss if the count would fall below zero or
// overflow: no history the verifier writes does that.
absl::Status AddUses(std::map<std::string, uint64_t>& counts, const AuditRecord& r,
                     uint64_t index) {
  if (r.uses == 0) return absl::OkStatus();
  uint64_t& n = counts[UseCountKey(r.issuer, r.capsule_id)];
  if (r.uses < 0 && n < static_cast<uint64_t>(-int64_t{r.uses})) {
    return absl::DataLossError(absl::StrCat("audit log entry ", index,
                                            " refunds a use that was never counted"));
  }
  if (r.uses > 0 && n > UINT64_MAX - static_cast<uint64_t>(r.uses)) {
    return absl::DataLossError(absl::StrCat("audit log entry ", index, " overflows a use count"));
  }
  n = r.uses < 0 ? n - static_cast<uint64_t>(-int64_t{r.uses}) : n + static_cast<uint64_t>(r.uses);
  return absl::OkStatus();
}

struct LogCounts {
  std::map<std::string, uint64_t> counts;
  uint64_t entries = 0;
  std::vector<uint8_t> last;  // the canonical bytes of the last entry counted
};

// Counts the first `limit` entries (all when nullopt) without reading past them, so that an
// append in progress beyond `limit` is never touched.
absl::StatusOr<LogCounts> CountLog(const std::string& log_path, std::optional<uint64_t> limit) {
  LogCounts out;
  if (limit && *limit == 0) return out;
  absl::Status counted;
  absl::Status read = ForEachAuditRecord(log_path, [&](uint64_t index, const AuditRecord& r) {
    counted = AddUses(out.counts, r, index);
    if (!counted.ok()) return false;
    out.entries = index + 1;
    if (limit && out.entries == *limit) {
      out.last = EncodeAuditEntry(r);
      return false;
    }
    return true;
  });
  BUNKER_RETURN_IF_ERROR(read);
  BUNKER_RETURN_IF_ERROR(counted);
  if (limit && out.entries != *limit) {
    return absl::DataLossError(absl::StrCat("audit log entry ", out.entries, " is missing"));
  }
  return out;
}

}  // namespace

std::string UseCountKey(std::string_view issuer, std::string_view capsule_id) {
  return absl::StrCat(std::string(issuer), "/", std::string(capsule_id));
}

absl::StatusOr<std::map<std::string, uint64_t>> RebuildUseCounts(const std::string& log_path) {
  BUNKER_ASSIGN_OR_RETURN(LogCounts c, CountLog(log_path, std::nullopt));
  return std::move(c.counts);
}

absl::StatusOr<uint64_t> SignedUseCount(const std::string& log_path, const std::string& key) {
  absl::StatusOr<Checkpoint> latest = ReadLatestCheckpoint(log_path);
  if (absl::IsNotFound(latest.status())) return uint64_t{0};
  BUNKER_RETURN_IF_ERROR(latest.status());
  BUNKER_ASSIGN_OR_RETURN(LogCounts c, CountLog(log_path, latest->size));
  const auto it = c.counts.find(key);
  return it == c.counts.end() ? 0 : it->second;
}

// An exclusive flock on `state.lock` for the SiteState's lifetime: it spans the two database
// transactions and the log append of a write, which no single lock of either covers.
struct SiteState::Lock {
  capsule::Fd fd;  // closing the descriptor releases the flock
};

std::optional<Checkpoint> CheckpointMark::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mark_;
}

void CheckpointMark::Raise(const Checkpoint& checkpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!mark_ || checkpoint.size > mark_->size) mark_ = checkpoint;
}

SiteState::SiteState() = default;
SiteState::~SiteState() = default;

absl::StatusOr<std::unique_ptr<SiteState>> SiteState::Open(
    const std::string& state_dir, const std::string& site, const crypto::Identity& identity,
    int64_t now, FailPoint fail, std::shared_ptr<CheckpointMark> mark) {
  if (::mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return capsule::ErrnoStatus(absl::StrCat("cannot create ", state_dir), errno);
  }
  std::unique_ptr<SiteState> st(new SiteState());
  st->state_dir_ = state_dir;
  st->fail_ = std::move(fail);
  st->mark_ = std::move(mark);
  st->lock_ = std::make_unique<Lock>();
  const std::string lock_path = state_dir + "/state.lock";
  st->lock_->fd.Reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!st->lock_->fd.valid()) {
    return capsule::ErrnoStatus(absl::StrCat("cannot open ", lock_path), errno);
  }
  int rc;
  while ((rc = ::flock(st->lock_->fd.get(), LOCK_EX)) != 0 && errno == EINTR) {
  }
  if (rc != 0) return capsule::ErrnoStatus("cannot lock the site's state folder", errno);

  BUNKER_ASSIGN_OR_RETURN(st->db_, UseCounter::Open(state_dir));
  BUNKER_ASSIGN_OR_RETURN(const std::optional<std::string> last_text, st->db_->LastCheckpoint());
  std::optional<Checkpoint> last;
  if (last_text) {
    absl::StatusOr<Checkpoint> cp = Checkpoint::Parse(*last_text);
    if (!cp.ok()) return Mismatch("its last audit checkpoint is corrupt");
    last = *cp;
  }
  BUNKER_ASSIGN_OR_RETURN(const auto pending, st->db_->Pending());
  // What this process remembers is newer than what the database does only when the folder was
  // put back to an older state under it: then the log is checked against the remembered
  // checkpoint (it must reach its size and reproduce its root), and the database against the log
  // by Check. (Both are signed by the site's key, so at one size they cannot disagree.)
  const std::optional<Checkpoint> remembered = st->mark_ ? st->mark_->Get() : std::nullopt;
  const bool against_mark = remembered && (!last || remembered->size > last->size);
  // Only an entry the database holds as pending may be cut from the log's unsigned tail: it is
  // appended again right after. Any other unsigned entry is a decision someone tried to erase.
  absl::StatusOr<std::unique_ptr<AuditLog>> log =
      AuditLog::Open(state_dir, &identity, site, against_mark ? remembered : last,
                     pending ? AuditLog::UnsignedTail::kCut : AuditLog::UnsignedTail::kRefuse);
  if (!log.ok()) {
    if (against_mark && absl::IsDataLoss(log.status())) {
      return absl::DataLossError(absl::StrCat(
          "refusing to decide: the site's audit log does not contain the checkpoint of size ",
          remembered->size, " this daemon signed: the state was rolled back (",
          log.status().message(), ")"));
    }
    return absl::Status(log.status().code(),
                        absl::StrCat("refusing to decide: ", log.status().message()));
  }
  st->log_ = std::move(*log);
  BUNKER_RETURN_IF_ERROR(st->Check(now));
  if (st->mark_ && st->log_->latest()) st->mark_->Raise(*st->log_->latest());
  return st;
}

absl::Status SiteState::Check(int64_t now) {
  BUNKER_ASSIGN_OR_RETURN(const std::optional<std::string> last_text, db_->LastCheckpoint());
  const uint64_t known = last_text ? Checkpoint::Parse(*last_text)->size : 0;  // parsed in Open
  BUNKER_ASSIGN_OR_RETURN(const auto pending, db_->Pending());
  const uint64_t logged = log_->size();
  if (pending && pending->log_size != known + 1) {
    return Mismatch(absl::StrCat("its pending entry is for a log of ", pending->log_size,
                                 " entries, its checkpoint for ", known));
  }
  const bool pending_in_log = pending && logged == known + 1;
  if (logged != known && !pending_in_log) {
    return Mismatch(absl::StrCat("the log has ", logged, " signed entries, the database knows ",
                                 known, pending ? " and one pending" : "",
                                 known == 0 && !pending ? ": was it deleted?" : ""));
  }
  BUNKER_ASSIGN_OR_RETURN(LogCounts log_counts,
                          CountLog(state_dir_ + "/audit.log", logged));
  std::optional<AuditRecord> to_append;
  if (pending_in_log && log_counts.last != pending->entry) {
    return Mismatch(absl::StrCat("audit log entry ", logged - 1,
                                 " is not the entry the database holds as pending"));
  }
  if (pending && !pending_in_log) {
    absl::StatusOr<AuditRecord> r = DecodeAuditEntry(pending->entry);
    if (!r.ok()) return Mismatch("its pending entry is corrupt");
    absl::Status s = AddUses(log_counts.counts, *r, logged);
    if (!s.ok()) return Mismatch(std::string(s.message()));
    to_append = std::move(*r);
  }
  // TODO(security): a site whose state.db holds counts from before entries carried `uses`
  // fails here after the upgrade; it needs a one-time, operator-run carry-over that logs those
  // counts as signed entries.
  BUNKER_ASSIGN_OR_RETURN(const auto db_counts, db_->Counts());
  std::set<std::string> keys;
  for (const auto& [k, n] : db_counts) keys.insert(k);
  for (const auto& [k, n] : log_counts.counts) keys.insert(k);
  for (const std::string& k : keys) {
    const auto d = db_counts.find(k);
    const auto l = log_counts.counts.find(k);
    const uint64_t in_db = d == db_counts.end() ? 0 : d->second;
    const uint64_t in_log = l == log_counts.counts.end() ? 0 : l->second;
    if (in_db != in_log) {
      return Mismatch(absl::StrCat("capsule ", k, " has ", in_db, " uses in the database and ",
                                   in_log, " in the log"));
    }
  }
  counts_ = std::move(log_counts.counts);
  if (to_append) {
    // Crash recovery: the decision was committed, so it goes on record. Its use (if any) is
    // already in the counts: recovery never gives a use back.
    absl::StatusOr<Checkpoint> cp = log_->Append(*to_append, now);
    if (!cp.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "cannot complete the audit entry an interrupted decision left pending: ",
          cp.status().message()));
    }
    return Finish(*cp);
  }
  if (pending_in_log) return Finish(*log_->latest());
  return absl::OkStatus();
}

absl::Status SiteState::Finish(const Checkpoint& checkpoint) {
  BUNKER_RETURN_IF_ERROR(db_->Begin());
  absl::Status s = db_->SetLastCheckpoint(checkpoint.Encode());
  if (s.ok()) s = db_->ClearPending();
  if (!s.ok()) {
    db_->Rollback();
    return s;
  }
  return db_->Commit();
}

uint64_t SiteState::UseCount(const std::string& key) const {
  const auto it = counts_.find(key);
  return it == counts_.end() ? 0 : it->second;
}

absl::StatusOr<Checkpoint> SiteState::Record(const AuditRecord& record, int64_t now) {
  if (broken_) {
    return absl::FailedPreconditionError("an earlier write was interrupted; reopen the state");
  }
  const std::string key = UseCountKey(record.issuer, record.capsule_id);
  std::map<std::string, uint64_t> next = counts_;
  if (!AddUses(next, record, log_->size()).ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("capsule ", key, " has no counted use to refund"));
  }
  UseCounter::PendingEntry pending;
  pending.entry = EncodeAuditEntry(record);
  pending.log_size = log_->size() + 1;
  if (pending.entry.size() > kMaxAuditEntrySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit record is too large (", pending.entry.size(), " bytes encoded)"));
  }
  // (1) Write-ahead: the decision and its counts, durable before the log sees it.
  BUNKER_RETURN_IF_ERROR(db_->Begin());
  absl::Status s = db_->SetPending(pending);
  if (s.ok() && record.uses != 0) s = db_->SetCount(key, next[key]);
  if (!s.ok()) {
    db_->Rollback();
    return s;
  }
  BUNKER_RETURN_IF_ERROR(db_->Commit());
  broken_ = true;  // until (3) is done
  if (fail_) BUNKER_RETURN_IF_ERROR(fail_("pending-committed"));
  // (2) The log.
  BUNKER_ASSIGN_OR_RETURN(const Checkpoint cp, log_->Append(record, now));
  counts_ = std::move(next);
  if (mark_) mark_->Raise(cp);
  if (fail_) BUNKER_RETURN_IF_ERROR(fail_("appended"));
  // (3) Done. If this fails the record stands (it is in the log); the next Open finishes it.
  if (Finish(cp).ok()) broken_ = false;
  return cp;
}

}  // namespace bunker::verifier

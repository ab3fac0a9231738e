// The site's state folder as one unit: its audit log (verifier/audit_log.h) and its state
// database (verifier/use_counter.h), bound to each other exactly (spec/POLICY.md "Use
// counting", spec/AUDIT.md "Crash recovery").
//
// What a caller may rely on, once SiteState::Open has returned:
//   - no other Bunker process writes to the state folder until the SiteState is destroyed
//     (an exclusive flock on `state.lock`);
//   - the database's last checkpoint is the log's latest signed checkpoint (same size, same
//     root), no entry is pending, and the database's use count of every capsule equals the sum
//     of `uses` over the capsule's log entries (RebuildUseCounts);
//   - an entry that was decided and committed to the database but not appended to the log (a
//     crash between the two) has been appended: a decision, once made, is on record.
// Anything else is kDataLoss ("the site's state database does not match its audit log ...")
// and the site must not decide until an operator has looked: the database was edited, deleted
// or rolled back, or the log was.
//
// Write order (write-ahead), in Record: (1) one database transaction stores the entry as
// pending with the counts it makes, (2) the entry is appended to the log and its checkpoint
// signed, (3) a second transaction stores that checkpoint and clears the pending entry. So the
// database is never behind the log; it is ahead by exactly the pending entry between (1) and
// (2), which Open completes. A crash after (2) leaves the pending entry in the log already;
// Open checks that it is and finishes (3).
#ifndef BUNKER_VERIFIER_STATE_BINDING_H_
#define BUNKER_VERIFIER_STATE_BINDING_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/keys.h"
#include "verifier/audit_log.h"

namespace bunker::verifier {

// The key that use counts are kept under: issuer fingerprint, "/", capsule id. Ids are the
// issuer's to choose, so another trusted issuer reusing an id cannot spend this capsule's
// budget.
std::string UseCountKey(std::string_view issuer, std::string_view capsule_id);

// The use count of every capsule that has an entry with `uses` != 0 in the log at `log_path`:
// the sum of `uses` over its entries, keyed by UseCountKey(issuer, capsuleId). Streams the log
// (O(distinct capsules) memory) and checks no signature (VerifyAuditLog does). kDataLoss if an
// entry is malformed or a capsule's running sum falls below zero; kNotFound if there is no log.
absl::StatusOr<std::map<std::string, uint64_t>> RebuildUseCounts(const std::string& log_path);

// The use count of `key` over the entries that the log's latest checkpoint covers (0 when
// the log has none), for a dry run: reads nothing past them, so an append under way elsewhere
// is not read half-written. Takes no lock and writes nothing. Errors as RebuildUseCounts.
absl::StatusOr<uint64_t> SignedUseCount(const std::string& log_path, const std::string& key);

class UseCounter;

// The newest checkpoint a long-running process (the site's daemon) signed or found in its state
// folder: what the folder must still contain at the next SiteState::Open. The folder remembers
// its own history only in itself, so a copy of the whole folder put back under the running
// daemon (both files older, consistent with each other) is caught only by what the process
// remembers (spec/POLICY.md "Use counting"). One per state folder, shared by everything in the
// process that opens it; a new process starts with none. Thread-safe.
class CheckpointMark {
 public:
  // The remembered checkpoint; nullopt before any.
  std::optional<Checkpoint> Get() const;
  // Remembers `checkpoint` if it is larger than the one remembered (same size: the first one).
  void Raise(const Checkpoint& checkpoint);

 private:
  mutable std::mutex mu_;
  std::optional<Checkpoint> mark_;
};

class SiteState {
 public:
  // Test hook: called at the named points of a write ("pending-committed": after step (1);
  // "appended": after step (2)). A non-OK status stops the write there, as a crash would, and
  // is returned. Production code passes none.
  using FailPoint = std::function<absl::Status(std::string_view point)>;

  // Locks the state folder `state_dir`, opens the database and the log of site `site` signed
  // by `identity` (which must outlive the SiteState), checks them against each other and
  // completes a pending entry, signing its checkpoint at time `now`. kDataLoss as above;
  // kUnavailable when a file or the database cannot be used.
  // With `mark` (may be null): the log must also reach the mark's size and reproduce its root
  // there, else kDataLoss "the site's audit log does not contain the checkpoint of size N this
  // daemon signed: the state was rolled back"; the checkpoint the state is left at, and every
  // one Record signs, raises the mark.
  static absl::StatusOr<std::unique_ptr<SiteState>> Open(
      const std::string& state_dir, const std::string& site, const crypto::Identity& identity,
      int64_t now, FailPoint fail = nullptr, std::shared_ptr<CheckpointMark> mark = nullptr);
  ~SiteState();

  // The use count of UseCountKey(issuer, capsule_id), as the log has it.
  uint64_t UseCount(const std::string& key) const;

  // Writes `record` as described above and returns the checkpoint that covers it. On success
  // the record is in the log and its `uses` in the counts. On an error before step (2) ends,
  // nothing may be released; the entry may still be pending, and the next Open appends it
  // (a decision, once committed, stands). kFailedPrecondition if `uses` would take the count
  // below zero; kInvalidArgument if `record` is too large for the log.
  absl::StatusOr<Checkpoint> Record(const AuditRecord& record, int64_t now);

 private:
  SiteState();
  absl::Status Check(int64_t now);
  absl::Status Finish(const Checkpoint& checkpoint);
  struct Lock;
  std::unique_ptr<Lock> lock_;
  std::unique_ptr<UseCounter> db_;
  std::unique_ptr<AuditLog> log_;
  std::string state_dir_;
  std::map<std::string, uint64_t> counts_;
  FailPoint fail_;
  std::shared_ptr<CheckpointMark> mark_;
  // Set when a write stopped between its steps: this object no longer knows the state.
  bool broken_ = false;
};

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_STATE_BINDING_H_

// The site's state database (spec/POLICY.md "Use counting"): an SQLite database in the site's
// state folder that keeps, bound to the audit log (verifier/state_binding.h):
//   - the use count of each capsule (for maxOpens), which must equal the sum of the `uses` of
//     its audit log entries;
//   - the last audit checkpoint this site signed, so that replacing the log folder with an
//     older copy is noticed;
//   - at most one pending entry: an entry decided and committed here, that the log may not have
//     yet (write-ahead; spec/AUDIT.md "Crash recovery").
// This class only stores; the checks that bind it to the log are SiteState's. Not thread-safe.
#ifndef BUNKER_VERIFIER_USE_COUNTER_H_
#define BUNKER_VERIFIER_USE_COUNTER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bunker::verifier {

class UseCounter {
 public:
  // Opens (creating if absent) `state_dir`/state.db. kUnavailable if it cannot.
  static absl::StatusOr<std::unique_ptr<UseCounter>> Open(const std::string& state_dir);
  ~UseCounter();

  // An exclusive transaction (BEGIN IMMEDIATE: a concurrent writer waits, up to 30 s). Every
  // write below belongs to the open transaction, if any; Commit makes them durable together
  // (synchronous=FULL), Rollback drops them. kUnavailable when the database fails.
  absl::Status Begin();
  absl::Status Commit();
  void Rollback();

  // The count kept for `key` (0 if none), and every key's count.
  absl::StatusOr<uint64_t> Count(const std::string& key);
  absl::StatusOr<std::map<std::string, uint64_t>> Counts();
  absl::Status SetCount(const std::string& key, uint64_t count);

  // The last audit checkpoint this site signed (its text).
  absl::StatusOr<std::optional<std::string>> LastCheckpoint();
  absl::Status SetLastCheckpoint(const std::string& text);

  // The entry decided but perhaps not yet in the log: its canonical bytes and the number of
  // entries the log has once it is appended.
  struct PendingEntry {
    std::vector<uint8_t> entry;
    uint64_t log_size = 0;
  };
  absl::StatusOr<std::optional<PendingEntry>> Pending();
  absl::Status SetPending(const PendingEntry& pending);
  absl::Status ClearPending();

 private:
  UseCounter() = default;
  struct Db;
  std::unique_ptr<Db> db_;
};

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_USE_COUNTER_H_

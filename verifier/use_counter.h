// The per-site use counter behind `maxOpens` (spec/POLICY.md "Use counting"): an SQLite database
// in the site's state folder, updated in a transaction so that two opens racing for the last
// allowed use cannot both win.
#ifndef BUNKER_VERIFIER_USE_COUNTER_H_
#define BUNKER_VERIFIER_USE_COUNTER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace bunker::verifier {

class UseCounter {
 public:
  // Opens (creating if absent) `state_dir`/state.db. kUnavailable if it cannot.
  static absl::StatusOr<std::unique_ptr<UseCounter>> Open(const std::string& state_dir);
  ~UseCounter();

  // Runs `decide` with the releases counted so far for `capsule_id`, inside one exclusive
  // transaction (BEGIN IMMEDIATE, so a concurrent process waits). When `decide` returns true the
  // count is incremented before the transaction commits. Returns what `decide` returned, or an
  // error (kUnavailable) if the database fails, in which case nothing was counted.
  absl::StatusOr<bool> Decide(const std::string& capsule_id,
                              const std::function<bool(uint64_t opens_so_far)>& decide);

  // The releases counted for `capsule_id` (0 if none).
  absl::StatusOr<uint64_t> Count(const std::string& capsule_id);

  // The last audit checkpoint this site signed (its text), kept here as well as beside the log
  // so that replacing the log folder with an older copy is noticed.
  absl::StatusOr<std::optional<std::string>> LastCheckpoint();
  absl::Status SetLastCheckpoint(const std::string& text);

 private:
  UseCounter() = default;
  struct Db;
  std::unique_ptr<Db> db_;
};

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_USE_COUNTER_H_

#include "verifier/use_counter.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace bunker::verifier {

struct UseCounter::Db {
  sqlite3* handle = nullptr;
  ~Db() {
    if (handle != nullptr) sqlite3_close_v2(handle);
  }
};

namespace {

absl::Status DbError(sqlite3* db, const char* what) {
  return absl::UnavailableError(absl::StrCat("state database: ", what, ": ", sqlite3_errmsg(db)));
}

absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : "unknown error";
    sqlite3_free(err);
    return absl::UnavailableError(absl::StrCat("state database: ", msg));
  }
  return absl::OkStatus();
}

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

}  // namespace

UseCounter::~UseCounter() = default;

absl::StatusOr<std::unique_ptr<UseCounter>> UseCounter::Open(const std::string& state_dir) {
  ::mkdir(state_dir.c_str(), 0700);
  std::unique_ptr<UseCounter> c(new UseCounter());
  c->db_ = std::make_unique<Db>();
  const std::string path = state_dir + "/state.db";
  if (sqlite3_open_v2(path.c_str(), &c->db_->handle,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat("cannot open state database ", path));
  }
  sqlite3* db = c->db_->handle;
  // A racing process waits for the write lock instead of failing at once.
  sqlite3_busy_timeout(db, 30000);
  // Several processes may create the database at once. Switching a new database to WAL takes
  // a lock that SQLite does not always wait for (no busy handler), so retry that step briefly.
  absl::Status s;
  for (int attempt = 0; attempt < 200; ++attempt) {
    s = Exec(db,
             "PRAGMA journal_mode=WAL;"
             "PRAGMA synchronous=FULL;"
             "CREATE TABLE IF NOT EXISTS uses ("
             "  capsule TEXT PRIMARY KEY, count INTEGER NOT NULL);"
             "CREATE TABLE IF NOT EXISTS meta ("
             "  key TEXT PRIMARY KEY, value TEXT NOT NULL);"
             "CREATE TABLE IF NOT EXISTS pending ("
             "  slot INTEGER PRIMARY KEY CHECK (slot = 0), entry BLOB NOT NULL,"
             "  log_size INTEGER NOT NULL);");
    const int code = sqlite3_errcode(db);
    if (s.ok() || (code != SQLITE_BUSY && code != SQLITE_LOCKED)) break;
    ::usleep(10000);
  }
  if (!s.ok()) return s;
  return c;
}

absl::StatusOr<uint64_t> UseCounter::Count(const std::string& key) {
  sqlite3* db = db_->handle;
  Stmt q;
  if (sqlite3_prepare_v2(db, "SELECT count FROM uses WHERE capsule = ?", -1, &q.s, nullptr) !=
      SQLITE_OK) {
    return DbError(db, "prepare");
  }
  sqlite3_bind_text(q.s, 1, key.c_str(), -1, SQLITE_TRANSIENT);
  const int rc = sqlite3_step(q.s);
  if (rc == SQLITE_ROW) return static_cast<uint64_t>(sqlite3_column_int64(q.s, 0));
  if (rc == SQLITE_DONE) return uint64_t{0};
  return DbError(db, "read");
}

absl::Status UseCounter::Begin() {
  // IMMEDIATE takes the write lock now, so what is read inside and what is written are one
  // atomic step with respect to every other process.
  return Exec(db_->handle, "BEGIN IMMEDIATE");
}

absl::Status UseCounter::Commit() {
  absl::Status s = Exec(db_->handle, "COMMIT");
  if (!s.ok()) Rollback();
  return s;
}

void UseCounter::Rollback() {
  if (sqlite3_get_autocommit(db_->handle) == 0) (void)Exec(db_->handle, "ROLLBACK");
}

absl::StatusOr<std::map<std::string, uint64_t>> UseCounter::Counts() {
  sqlite3* db = db_->handle;
  Stmt q;
  if (sqlite3_prepare_v2(db, "SELECT capsule, count FROM uses", -1, &q.s, nullptr) != SQLITE_OK) {
    return DbError(db, "prepare");
  }
  std::map<std::string, uint64_t> out;
  int rc;
  while ((rc = sqlite3_step(q.s)) == SQLITE_ROW) {
    const unsigned char* key = sqlite3_column_text(q.s, 0);
    const int64_t n = sqlite3_column_int64(q.s, 1);
    // A negative count cannot come from this code; report it as the mismatch it is.
    out[key != nullptr ? reinterpret_cast<const char*>(key) : ""] =
        n < 0 ? UINT64_MAX : static_cast<uint64_t>(n);
  }
  if (rc != SQLITE_DONE) return DbError(db, "read");
  return out;
}

absl::Status UseCounter::SetCount(const std::string& key, uint64_t count) {
  sqlite3* db = db_->handle;
  Stmt up;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO uses(capsule, count) VALUES(?, ?) "
                         "ON CONFLICT(capsule) DO UPDATE SET count = excluded.count",
                         -1, &up.s, nullptr) != SQLITE_OK) {
    return DbError(db, "prepare");
  }
  sqlite3_bind_text(up.s, 1, key.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(up.s, 2, static_cast<int64_t>(count));
  if (sqlite3_step(up.s) != SQLITE_DONE) return DbError(db, "update");
  return absl::OkStatus();
}

absl::StatusOr<std::optional<UseCounter::PendingEntry>> UseCounter::Pending() {
  sqlite3* db = db_->handle;
  Stmt q;
  if (sqlite3_prepare_v2(db, "SELECT entry, log_size FROM pending WHERE slot = 0", -1, &q.s,
                         nullptr) != SQLITE_OK) {
    return DbError(db, "prepare");
  }
  const int rc = sqlite3_step(q.s);
  if (rc == SQLITE_DONE) return std::optional<PendingEntry>();
  if (rc != SQLITE_ROW) return DbError(db, "read");
  PendingEntry p;
  const auto* bytes = static_cast<const uint8_t*>(sqlite3_column_blob(q.s, 0));
  p.entry.assign(bytes, bytes + sqlite3_column_bytes(q.s, 0));
  const int64_t size = sqlite3_column_int64(q.s, 1);
  p.log_size = size < 0 ? 0 : static_cast<uint64_t>(size);
  return std::optional<PendingEntry>(std::move(p));
}

absl::Status UseCounter::SetPending(const PendingEntry& pending) {
  sqlite3* db = db_->handle;
  Stmt up;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO pending(slot, entry, log_size) VALUES(0, ?, ?) "
                         "ON CONFLICT(slot) DO UPDATE SET entry = excluded.entry, "
                         "log_size = excluded.log_size",
                         -1, &up.s, nullptr) != SQLITE_OK) {
    return DbError(db, "prepare");
  }
  sqlite3_bind_blob(up.s, 1, pending.entry.data(), static_cast<int>(pending.entry.size()),
                    SQLITE_TRANSIENT);
  sqlite3_bind_int64(up.s, 2, static_cast<int64_t>(pending.log_size));
  if (sqlite3_step(up.s) != SQLITE_DONE) return DbError(db, "update");
  return absl::OkStatus();
}

absl::Status UseCounter::ClearPending() { return Exec(db_->handle, "DELETE FROM pending"); }

absl::StatusOr<std::optional<std::string>> UseCounter::LastCheckpoint() {
  sqlite3* db = db_->handle;
  Stmt q;
  if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'audit.checkpoint'", -1, &q.s,
                         nullptr) != SQLITE_OK) {
    return DbError(db, "prepare");
  }
  const int rc = sqlite3_step(q.s);
  if (rc == SQLITE_ROW) {
    return std::optional<std::string>(
        reinterpret_cast<const char*>(sqlite3_column_text(q.s, 0)));
  }
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return DbError(db, "read");
}

absl::Status UseCounter::SetLastCheckpoint(const std::string& text) {
  sqlite3* db = db_->handle;
  Stmt up;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO meta(key, value) VALUES('audit.checkpoint', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         -1, &up.s, nullptr) != SQLITE_OK) {
    return DbError(db, "prepare");
  }
  sqlite3_bind_text(up.s, 1, text.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(up.s) != SQLITE_DONE) return DbError(db, "update");
  return absl::OkStatus();
}

}  // namespace bunker::verifier

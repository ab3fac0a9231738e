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
             "  key TEXT PRIMARY KEY, value TEXT NOT NULL);");
    const int code = sqlite3_errcode(db);
    if (s.ok() || (code != SQLITE_BUSY && code != SQLITE_LOCKED)) break;
    ::usleep(10000);
  }
  if (!s.ok()) return s;
  return c;
}

absl::StatusOr<uint64_t> UseCounter::Count(const std::string& capsule_id) {
  sqlite3* db = db_->handle;
  Stmt q;
  if (sqlite3_prepare_v2(db, "SELECT count FROM uses WHERE capsule = ?", -1, &q.s, nullptr) !=
      SQLITE_OK) {
    return DbError(db, "prepare");
  }
  sqlite3_bind_text(q.s, 1, capsule_id.c_str(), -1, SQLITE_TRANSIENT);
  const int rc = sqlite3_step(q.s);
  if (rc == SQLITE_ROW) return static_cast<uint64_t>(sqlite3_column_int64(q.s, 0));
  if (rc == SQLITE_DONE) return uint64_t{0};
  return DbError(db, "read");
}

absl::StatusOr<bool> UseCounter::Decide(const std::string& capsule_id,
                                        const std::function<bool(uint64_t)>& decide) {
  sqlite3* db = db_->handle;
  // IMMEDIATE takes the write lock now, so the read below and the increment are one atomic step
  // with respect to every other process: two opens cannot both see the last remaining use.
  absl::Status s = Exec(db, "BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  absl::StatusOr<uint64_t> count = Count(capsule_id);
  if (!count.ok()) {
    (void)Exec(db, "ROLLBACK");
    return count.status();
  }
  const bool counted = decide(*count);
  if (counted) {
    Stmt up;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO uses(capsule, count) VALUES(?, 1) "
                           "ON CONFLICT(capsule) DO UPDATE SET count = count + 1",
                           -1, &up.s, nullptr) != SQLITE_OK) {
      s = DbError(db, "prepare");
    } else {
      sqlite3_bind_text(up.s, 1, capsule_id.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(up.s) != SQLITE_DONE) s = DbError(db, "update");
    }
    if (!s.ok()) {
      (void)Exec(db, "ROLLBACK");
      return s;
    }
  }
  s = Exec(db, "COMMIT");
  if (!s.ok()) {
    (void)Exec(db, "ROLLBACK");
    return s;
  }
  return counted;
}

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

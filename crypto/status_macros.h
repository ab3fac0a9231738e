// Project-local status propagation helpers, until Abseil ships its own.
#ifndef BUNKER_CRYPTO_STATUS_MACROS_H_
#define BUNKER_CRYPTO_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define BUNKER_RETURN_IF_ERROR(expr)                \
  do {                                              \
    ::absl::Status bunker_status_ = (expr);         \
    if (!bunker_status_.ok()) return bunker_status_; \
  } while (0)

#define BUNKER_STATUS_CONCAT_INNER_(a, b) a##b
#define BUNKER_STATUS_CONCAT_(a, b) BUNKER_STATUS_CONCAT_INNER_(a, b)

// `BUNKER_ASSIGN_OR_RETURN(auto x, Foo());` declares/assigns from an absl::StatusOr, or returns
// its status from the enclosing function.
#define BUNKER_ASSIGN_OR_RETURN(lhs, expr) \
  BUNKER_ASSIGN_OR_RETURN_IMPL_(BUNKER_STATUS_CONCAT_(bunker_statusor_, __LINE__), lhs, expr)
#define BUNKER_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()

#endif  // BUNKER_CRYPTO_STATUS_MACROS_H_

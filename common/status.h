// Status helpers shared by every module. Debian's abseil (20220623) ships no
// status macros, so the two the code base needs are defined here once.
// Everything in this header is thread-compatible and free of global state.
#ifndef DISTILL_COMMON_STATUS_H_
#define DISTILL_COMMON_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DISTILL_STATUS_CONCAT_INNER_(a, b) a##b
#define DISTILL_STATUS_CONCAT_(a, b) DISTILL_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` yields a non-OK status.
#define DISTILL_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status distill_status_ = (expr);           \
    if (!distill_status_.ok()) return distill_status_; \
  } while (0)

// `DISTILL_ASSIGN_OR_RETURN(auto x, MakeX());` binds the value of an OK
// StatusOr, or returns its status from the enclosing function.
#define DISTILL_ASSIGN_OR_RETURN(lhs, expr) \
  DISTILL_ASSIGN_OR_RETURN_IMPL_(           \
      DISTILL_STATUS_CONCAT_(distill_statusor_, __LINE__), lhs, expr)
#define DISTILL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

namespace distill {

// Prefixes a status message with context, keeping its code.
inline absl::Status Annotate(const absl::Status& status,
                             absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " +
                                         std::string(status.message()));
}

}  // namespace distill

#endif  // DISTILL_COMMON_STATUS_H_

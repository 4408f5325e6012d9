// Status propagation macros. Debian's Abseil (20220623) has no RETURN_IF_ERROR or
// ASSIGN_OR_RETURN, so Tandem defines its own, once, here.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TANDEM_CONCAT_INNER_(a, b) a##b
#define TANDEM_CONCAT_(a, b) TANDEM_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define TANDEM_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status tandem_status_ = (expr);          \
    if (!tandem_status_.ok()) return tandem_status_; \
  } while (0)

// `TANDEM_ASSIGN_OR_RETURN(auto x, Foo());` declares x from an OK StatusOr or returns its status.
// `lhs` is a declaration and `statusor` a generated name: neither can be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define TANDEM_ASSIGN_OR_RETURN(lhs, expr) \
  TANDEM_ASSIGN_OR_RETURN_IMPL_(TANDEM_CONCAT_(tandem_statusor_, __LINE__), lhs, expr)
#define TANDEM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
// NOLINTEND(bugprone-macro-parentheses)

// Returns InvalidArgument with a formatted message when `cond` is false.
#define TANDEM_CHECK_ARG(cond, ...)                                              \
  do {                                                                           \
    if (!(cond)) return ::absl::InvalidArgumentError(absl::StrCat(__VA_ARGS__)); \
  } while (0)

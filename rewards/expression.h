// A small, safe arithmetic expression evaluator for the synthetic tasks' verifiers (countdown,
// arithmetic). It never calls a general-purpose eval: the grammar is integers, + - * /, unary
// sign and parentheses, evaluated in exact rational arithmetic with overflow checks, and bounded in
// length and nesting so a hostile response cannot make it slow or blow the stack.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tandem::rewards {

inline constexpr size_t kMaxExpressionLength = 1024;  // bytes
inline constexpr int kMaxExpressionDepth = 64;        // nested parentheses / unary signs

// An exact rational num/den, den > 0, reduced.
struct Rational {
  int64_t num = 0;
  int64_t den = 1;
  bool operator==(const Rational& o) const { return num == o.num && den == o.den; }
};

struct EvaluatedExpression {
  Rational value;
  std::vector<int64_t> numbers;  // every integer literal, in the order written
};

// Grammar (whitespace allowed between tokens; '×' and 'x' mean '*', '÷' means '/'):
//   expr   := term (('+' | '-') term)*
//   term   := factor (('*' | '/') factor)*
//   factor := ('+' | '-') factor | integer | '(' expr ')'
// Errors: InvalidArgument for syntax, division by zero, overflow, or limits exceeded.
absl::StatusOr<EvaluatedExpression> EvaluateExpression(absl::string_view text);

}  // namespace tandem::rewards

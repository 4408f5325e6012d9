// Recursive-descent evaluator for rewards/expression.h. Every arithmetic step goes through the
// checked helpers below, so overflow is an error rather than undefined behaviour.
#include "rewards/expression.h"

#include <numeric>

#include "absl/strings/str_cat.h"

namespace tandem::rewards {
namespace {

absl::Status Overflow() { return absl::InvalidArgumentError("expression: integer overflow"); }

absl::StatusOr<Rational> Make(int64_t num, int64_t den) {
  if (den == 0) return absl::InvalidArgumentError("expression: division by zero");
  if (num == INT64_MIN || den == INT64_MIN) return Overflow();  // std::gcd and negation need |x|
  if (den < 0) {
    num = -num;
    den = -den;
  }
  const int64_t g = std::gcd(num, den);
  return Rational{num / g, den / g};
}

absl::StatusOr<Rational> Combine(const Rational& a, const Rational& b, char op) {
  int64_t x, y, num, den;
  bool over = false;
  switch (op) {
    case '+':
    case '-':
      over |= __builtin_mul_overflow(a.num, b.den, &x);
      over |= __builtin_mul_overflow(b.num, a.den, &y);
      over |= op == '+' ? __builtin_add_overflow(x, y, &num) : __builtin_sub_overflow(x, y, &num);
      over |= __builtin_mul_overflow(a.den, b.den, &den);
      break;
    case '*':
      over |= __builtin_mul_overflow(a.num, b.num, &num);
      over |= __builtin_mul_overflow(a.den, b.den, &den);
      break;
    default:  // '/'
      over |= __builtin_mul_overflow(a.num, b.den, &num);
      over |= __builtin_mul_overflow(a.den, b.num, &den);
      break;
  }
  if (over) return Overflow();
  return Make(num, den);
}

class Parser {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  absl::StatusOr<EvaluatedExpression> Run() {
    auto value = Expr(0);
    if (!value.ok()) return value.status();
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected character");
    return EvaluatedExpression{*value, std::move(numbers_)};
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("expression: ", what, " at offset ", pos_, " of \"", text_, "\""));
  }

  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  // Reads an operator from `ops` (ASCII, plus the UTF-8 signs × and ÷); 0 when none is next.
  char PeekOperator(absl::string_view ops, size_t* width) {
    SkipSpace();
    if (pos_ >= text_.size()) return 0;
    *width = 1;
    char c = text_[pos_];
    if (c == 'x') c = '*';
    if (text_.substr(pos_, 2) == "\xc3\x97") c = '*', *width = 2;  // U+00D7 ×
    if (text_.substr(pos_, 2) == "\xc3\xb7") c = '/', *width = 2;  // U+00F7 ÷
    return ops.find(c) != absl::string_view::npos ? c : 0;
  }

  absl::StatusOr<Rational> Expr(int depth) { return Chain("+-", depth); }

  // A left-associative chain of terms (ops "+-") or factors (ops "*/").
  absl::StatusOr<Rational> Chain(absl::string_view ops, int depth) {
    const bool sums = ops == "+-";
    auto acc = sums ? Chain("*/", depth) : Factor(depth);
    size_t width = 0;
    while (acc.ok()) {
      const char op = PeekOperator(ops, &width);
      if (op == 0) break;
      pos_ += width;
      auto rhs = sums ? Chain("*/", depth) : Factor(depth);
      if (!rhs.ok()) return rhs;
      acc = Combine(*acc, *rhs, op);
    }
    return acc;
  }

  absl::StatusOr<Rational> Factor(int depth) {
    if (depth > kMaxExpressionDepth) return Error("nesting too deep");
    SkipSpace();
    if (pos_ >= text_.size()) return Error("expected a number");
    const char c = text_[pos_];
    if (c == '+' || c == '-') {
      ++pos_;
      auto inner = Factor(depth + 1);
      if (!inner.ok() || c == '+') return inner;
      if (inner->num == INT64_MIN) return Overflow();
      return Rational{-inner->num, inner->den};
    }
    if (c == '(') {
      ++pos_;
      auto inner = Expr(depth + 1);
      if (!inner.ok()) return inner;
      SkipSpace();
      if (pos_ >= text_.size() || text_[pos_] != ')') return Error("expected ')'");
      ++pos_;
      return inner;
    }
    if (c < '0' || c > '9') return Error("expected a number");
    int64_t value = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      if (__builtin_mul_overflow(value, 10, &value) ||
          __builtin_add_overflow(value, text_[pos_] - '0', &value)) {
        return Overflow();
      }
      ++pos_;
    }
    numbers_.push_back(value);
    return Rational{value, 1};
  }

  absl::string_view text_;
  size_t pos_ = 0;
  std::vector<int64_t> numbers_;
};

}  // namespace

absl::StatusOr<EvaluatedExpression> EvaluateExpression(absl::string_view text) {
  if (text.size() > kMaxExpressionLength) {
    return absl::InvalidArgumentError(absl::StrCat("expression: longer than ", kMaxExpressionLength,
                                                   " bytes (", text.size(), ")"));
  }
  return Parser(text).Run();
}

}  // namespace tandem::rewards

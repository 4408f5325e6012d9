// Arithmetic and countdown generators: every draw comes from SplitMix64 keyed by (seed, row).
#include "trainer/synthetic_tasks.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/core/status_macros.h"
#include "nlohmann/json.hpp"
#include "trainer/splitmix.h"

namespace tandem::trainer {
namespace {

// Uniform with exactly `digits` digits (a leading zero only for one digit).
int64_t Operand(SplitMix64& rng, int digits) {
  int64_t lo = 1;
  for (int i = 1; i < digits; ++i) lo *= 10;
  if (digits == 1) return static_cast<int64_t>(rng.Below(10));
  return lo + static_cast<int64_t>(rng.Below(static_cast<uint64_t>(9 * lo)));
}

int64_t Apply(char op, int64_t a, int64_t b) {
  switch (op) {
    case '+':
      return a + b;
    case '-':
      return a - b;
    default:
      return a * b;
  }
}

}  // namespace

absl::StatusOr<std::vector<RlPrompt>> GenerateArithmetic(int64_t count,
                                                         const ArithmeticTaskOptions& options) {
  TANDEM_CHECK_ARG(count >= 0, "count: expected >= 0, got ", count);
  TANDEM_CHECK_ARG(1 <= options.min_digits && options.min_digits <= options.max_digits &&
                       options.max_digits <= 9,
                   "digits: expected 1 <= min_digits <= max_digits <= 9, got [", options.min_digits,
                   ", ", options.max_digits, "]");
  TANDEM_CHECK_ARG(
      !options.operators.empty() && options.operators.find_first_not_of("+-*") == std::string::npos,
      "operators: expected a non-empty subset of \"+-*\", got \"", options.operators, "\"");
  const uint64_t span =
      static_cast<uint64_t>(options.max_digits) - static_cast<uint64_t>(options.min_digits) + 1;
  std::vector<RlPrompt> rows;
  rows.reserve(count);
  for (int64_t i = 0; i < count; ++i) {
    SplitMix64 rng(SplitMix64::Mix(options.seed, static_cast<uint64_t>(i)));
    const char op = options.operators[rng.Below(options.operators.size())];
    int64_t a = Operand(rng, options.min_digits + static_cast<int>(rng.Below(span)));
    int64_t b = Operand(rng, options.min_digits + static_cast<int>(rng.Below(span)));
    if (op == '-' && a < b) std::swap(a, b);
    rows.push_back({absl::StrCat(a, std::string(1, op), b, "="), absl::StrCat(Apply(op, a, b)),
                    "arithmetic", ""});
  }
  return rows;
}

absl::StatusOr<std::vector<RlPrompt>> GenerateCountdown(int64_t count,
                                                        const CountdownTaskOptions& options) {
  TANDEM_CHECK_ARG(count >= 0, "count: expected >= 0, got ", count);
  TANDEM_CHECK_ARG(options.numbers >= 2 && options.numbers <= 6,
                   "numbers: expected in [2, 6], got ", options.numbers);
  TANDEM_CHECK_ARG(options.max_number >= 1 && options.max_number <= 99,
                   "max_number: expected in [1, 99], got ", options.max_number);
  std::vector<RlPrompt> rows;
  rows.reserve(count);
  for (int64_t i = 0; i < count; ++i) {
    SplitMix64 rng(SplitMix64::Mix(options.seed, static_cast<uint64_t>(i)));
    std::vector<int64_t> numbers(options.numbers);
    for (int64_t& n : numbers) n = 1 + static_cast<int64_t>(rng.Below(options.max_number));
    int64_t target = 0;
    do {  // a random order and operators; a positive value always turns up (all '+')
      std::vector<int64_t> order = numbers;
      for (size_t k = order.size() - 1; k > 0; --k) std::swap(order[k], order[rng.Below(k + 1)]);
      target = order[0];
      for (size_t k = 1; k < order.size(); ++k) {
        target = Apply("+-*"[rng.Below(3)], target, order[k]);
      }
    } while (target <= 0);
    const nlohmann::json gt = {{"target", target}, {"numbers", numbers}};
    rows.push_back(
        {absl::StrCat(absl::StrJoin(numbers, ","), ":", target, "="), gt.dump(), "countdown", ""});
  }
  return rows;
}

}  // namespace tandem::trainer

// Generators of verifiable synthetic RL tasks with difficulty levels: arithmetic ("123+45=", the
// answer checked by the `arithmetic` reward) and countdown ("3,5,7:22=", reach the target with the
// given numbers; the `countdown` reward). Row i depends only on (seed, i), so any prefix of a
// generated set is the smaller set and a held-out set can start where the training set ends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/rl_data.h"

namespace tandem::trainer {

struct ArithmeticTaskOptions {
  uint64_t seed = 0;
  int min_digits = 1;  // digits of each operand, uniform in [min_digits, max_digits]
  int max_digits = 3;  // REQUIRES: 1 <= min_digits <= max_digits <= 9
  // Operators drawn uniformly per row from these characters: '+', '-' (the larger operand first,
  // so results are never negative) and '*'.
  std::string operators = "+";
};

// Alphabet of every arithmetic prompt: digits, "+-*" and '='.
inline constexpr char kArithmeticAlphabet[] = "0123456789+-*=";

// Rows {prompt "a+b=", ground_truth "c", data_source "arithmetic"}.
absl::StatusOr<std::vector<RlPrompt>> GenerateArithmetic(int64_t count,
                                                         const ArithmeticTaskOptions& options);

struct CountdownTaskOptions {
  uint64_t seed = 0;
  int numbers = 3;     // how many numbers are given (difficulty), in [2, 6]
  int max_number = 9;  // each number uniform in [1, max_number], max_number in [1, 99]
};

// Alphabet of countdown prompts and answers: digits, "+-*()", ',', ':' and '='.
inline constexpr char kCountdownAlphabet[] = "0123456789+-*(),:=";

// Rows {prompt "3,5,7:22=", ground_truth {"target": 22, "numbers": [3, 5, 7]}, data_source
// "countdown"}. The target is the value of a random left-to-right expression over all the numbers
// in a random order (+, -, *), redrawn until it is positive, so every row has a solution.
absl::StatusOr<std::vector<RlPrompt>> GenerateCountdown(int64_t count,
                                                        const CountdownTaskOptions& options);

}  // namespace tandem::trainer

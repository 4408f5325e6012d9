// A synthetic SFT/RL task: multi-digit addition "a+b=" → "c", seeded and reproducible. Sample i
// depends only on (seed, i), so any prefix of a generated set is the smaller set. Difficulty is
// the number of digits of each operand.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::trainer {

struct AdditionTaskOptions {
  uint64_t seed = 0;
  int min_digits = 1;  // digits of each operand, drawn uniformly in [min_digits, max_digits]
  int max_digits = 3;  // REQUIRES: 1 <= min_digits <= max_digits <= 18
  // Write the sum least-significant digit first (easier for small models: each digit depends
  // only on digits already produced). Prompts are unchanged.
  bool reverse_answer = false;
};

struct PromptResponse {
  std::string prompt;    // "123+45="
  std::string response;  // "168" ("861" when reversed)
};

// Alphabet of every string the task produces: "0123456789+=".
inline constexpr char kAdditionAlphabet[] = "0123456789+=";

absl::StatusOr<std::vector<PromptResponse>> GenerateAdditionTask(
    int64_t count, const AdditionTaskOptions& options);

// Writes one {"prompt": ..., "response": ...} JSON object per line.
absl::Status WriteJsonl(const std::string& path, const std::vector<PromptResponse>& rows);

}  // namespace tandem::trainer

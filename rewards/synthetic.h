// Verifiers for the synthetic RL tasks: arithmetic ("123+45=" -> 168) and countdown (reach a target
// with the given numbers). Both use the safe evaluator in rewards/expression.h, never an eval.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rewards/reward.h"

namespace tandem::rewards {

// arithmetic: the answer (last \boxed{} or last number after any </think>) must equal the integer
// ground_truth. With an empty ground_truth the expression before the prompt's last '=' is evaluated
// instead ("...123+45=" -> 168). Options: reverse_digits (false): the response writes the answer
// least-significant digit first, as the trainer's addition task can.
absl::StatusOr<std::unique_ptr<RewardFunction>> MakeArithmeticReward(absl::string_view config_json);

// countdown: ground_truth is {"target": T, "numbers": [..]} (TinyZero's layout), or T with the
// numbers in extra_json's "numbers". The answer is the last <answer>...</answer>, else the last
// \boxed{}, else the last line after any </think>; a trailing "= T" is ignored. Score 1 when it
// evaluates exactly to T using each given number at most once (exactly once with use_all);
// format_score (0.1) when it parses but misses; 0 otherwise.
absl::StatusOr<std::unique_ptr<RewardFunction>> MakeCountdownReward(absl::string_view config_json);

// The countdown answer text extracted from a response, as described above; nullopt when empty.
std::optional<std::string> ExtractCountdownExpression(absl::string_view response);

}  // namespace tandem::rewards

// Built-in rewards and the registry that makes them by name. Built-ins run in-process: they are our
// own bounded code (no unbounded loops, parsers with length and depth limits), so they need none of
// the worker-process isolation that plugins get. Every built-in is thread-safe.
//
//   name            score                                            config keys (defaults)
//   exact_match     1 if response == ground_truth, else 0            normalize_whitespace (true),
//                                                                    ignore_case (false),
//                                                                    strip_think (true)
//   math_answer     1 if the extracted answer equals ground_truth     tolerance (1e-6),
//   format_score (0),
//                   (numeric equivalence), format_score if an         boxed_only (false)
//                   answer was found but is wrong, else 0
//   format          1 if <think>...</think> then an answer, else 0   open ("<think>"), close
//   ("</think>"),
//                                                                    answer_tag ("": any text)
//   arithmetic      1 if the answer is the integer result            reverse_digits (false)
//   countdown       1 if the expression hits the target using the    format_score (0.1), use_all
//   (false)
//                   given numbers each at most once
//   length_penalty  0 up to max_length - buffer, then linearly to    max_length (required), buffer
//                   -1 at max_length, -1 beyond                      (max_length / 4), unit
//                   ("bytes")
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rewards/reward.h"

namespace tandem::rewards {

// Makes the built-in reward `name` from a JSON object of options ("" or "{}" for defaults).
// Errors: NotFound for an unknown name (the message lists the known ones); InvalidArgument for bad
// JSON, an unknown option or a value of the wrong type, naming the option.
absl::StatusOr<std::unique_ptr<RewardFunction>> MakeBuiltinReward(absl::string_view name,
                                                                  absl::string_view config_json);

// Names accepted by MakeBuiltinReward, sorted.
std::vector<std::string> BuiltinRewardNames();

}  // namespace tandem::rewards

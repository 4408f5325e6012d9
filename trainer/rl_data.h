// RL prompt datasets: rows with verl's fields (prompt or messages, ground_truth, data_source,
// extra), read from JSONL or made by the synthetic generators (trainer/synthetic_tasks.h), and the
// held-out split used for evaluation.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem::trainer {

// One RL prompt: what the policy sees and what the reward needs to verify the answer.
struct RlPrompt {
  std::string prompt;        // text fed to the tokenizer (after BOS)
  std::string ground_truth;  // reference answer for the reward; may be empty
  std::string data_source;   // picks the reward when reward.function is "auto"
  std::string extra_json;    // a JSON object with any other fields ("" = {})
};

// Parses one row. Accepted fields (verl's layout and a flat one):
//   prompt:        a string, or a list of {"role", "content"} messages (contents joined in order:
//                  the character-level task models have no chat template)
//   messages:      a list of messages, as above (when `prompt` is absent)
//   ground_truth:  a string, a number or an object (objects are kept as compact JSON);
//                  otherwise reward_model.ground_truth (verl)
//   data_source:   a string (default "")
//   extra / extra_info: an object, kept as compact JSON
// Errors are InvalidArgument "<where>: field '<name>': <what was expected>".
absl::StatusOr<RlPrompt> ParseRlPrompt(const nlohmann::json& row, const std::string& where);

// Reads one row per non-blank line of `path` with ParseRlPrompt (`where` = "path:line").
absl::StatusOr<std::vector<RlPrompt>> ReadRlJsonl(const std::string& path);

// Writes rows as JSONL in the flat layout ParseRlPrompt reads back.
absl::Status WriteRlJsonl(const std::string& path, const std::vector<RlPrompt>& rows);

// A generator of rows by index: rows(count) returns rows 0..count-1, row i depending on i alone.
using RlRowGenerator = std::function<absl::StatusOr<std::vector<RlPrompt>>(int64_t count)>;

// `count` rows of the generator from index `first_index` on whose prompt differs from every
// training row [0, first_index) and from each other. FailedPrecondition when the task is too small
// to have that many.
absl::StatusOr<std::vector<RlPrompt>> HeldOutRows(const RlRowGenerator& generator,
                                                  int64_t first_index, int64_t count);

}  // namespace tandem::trainer

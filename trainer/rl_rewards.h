// Reward dispatch of the GRPO loop: the response tokens are decoded to text and scored by the
// reward that reward.function names, or ("auto") by the built-in named by the row's data_source
// (arithmetic, countdown, math_answer, ...). A reward that fails on a sample is recorded as an
// error and scores 0; it never fails the step.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"
#include "rewards/reward.h"
#include "trainer/rl_config.h"
#include "trainer/rl_data.h"

namespace tandem::trainer {

struct ScoredResponse {
  double score = 0;
  bool correct = false;  // the reward's "correct" metric when it reports one, else score >= 1
  bool error = false;    // the reward failed on this sample (score 0)
  std::string error_message;
};

class RlRewarder {
 public:
  // `reverse_digits`: arithmetic answers are written least-significant digit first (passed to
  // the built-in arithmetic reward under "auto" unless reward.options sets it).
  static absl::StatusOr<RlRewarder> Create(const RlRunConfig::Reward& config, bool reverse_digits);

  // Scores responses[i] (token ids; special tokens are dropped when decoding) against rows[i].
  // Fails only for a configuration error (unknown reward, bad options).
  absl::StatusOr<std::vector<ScoredResponse>> Score(
      std::span<const RlPrompt* const> rows, const std::vector<std::vector<int32_t>>& responses,
      const model::Tokenizer& tokenizer);

 private:
  RlRewarder(RlRunConfig::Reward config, bool reverse_digits)
      : config_(std::move(config)), reverse_digits_(reverse_digits) {}
  absl::StatusOr<rewards::RewardFunction*> For(const std::string& data_source);

  RlRunConfig::Reward config_;
  bool reverse_digits_ = false;
  std::map<std::string, std::shared_ptr<rewards::RewardFunction>> functions_;  // by name
};

}  // namespace tandem::trainer

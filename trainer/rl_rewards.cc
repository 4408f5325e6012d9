// RlRewarder: built-in rewards made on first use, one per name, batched per reward function.
#include "trainer/rl_rewards.h"

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "nlohmann/json.hpp"
#include "rewards/builtins.h"

namespace tandem::trainer {

absl::StatusOr<RlRewarder> RlRewarder::Create(const RlRunConfig::Reward& config,
                                              bool reverse_digits) {
  RlRewarder r(config, reverse_digits);
  if (config.function != "auto") {  // fail at startup on a bad name or options
    absl::Status s = r.For("").status();
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("reward.function: ", s.message()));
  }
  return r;
}

absl::StatusOr<rewards::RewardFunction*> RlRewarder::For(const std::string& data_source) {
  const std::string name = config_.function == "auto" ? data_source : config_.function;
  if (name.empty()) {
    return absl::InvalidArgumentError(
        "reward.function is \"auto\" but a row has no data_source to name its reward");
  }
  auto it = functions_.find(name);
  if (it != functions_.end()) return it->second.get();
  std::string options = config_.options;
  if (name == "arithmetic" && reverse_digits_) {
    nlohmann::json j =
        options.empty() ? nlohmann::json::object() : nlohmann::json::parse(options, nullptr, false);
    if (j.is_object() && !j.contains("reverse_digits")) {
      j["reverse_digits"] = true;
      options = j.dump();
    }
  }
  absl::StatusOr<std::unique_ptr<rewards::RewardFunction>> made =
      rewards::MakeBuiltinReward(name, options);
  if (!made.ok()) {
    return absl::Status(made.status().code(),
                        absl::StrCat("reward '", name, "': ", made.status().message()));
  }
  auto& slot = functions_[name];
  slot = std::shared_ptr<rewards::RewardFunction>(*std::move(made));
  return slot.get();
}

absl::StatusOr<std::vector<ScoredResponse>> RlRewarder::Score(
    std::span<const RlPrompt* const> rows, const std::vector<std::vector<int32_t>>& responses,
    const model::Tokenizer& tokenizer) {
  // Group the samples by reward function so each function scores one batch.
  std::map<rewards::RewardFunction*, std::vector<size_t>> by_function;
  for (size_t i = 0; i < rows.size(); ++i) {
    TANDEM_ASSIGN_OR_RETURN(rewards::RewardFunction * f, For(rows[i]->data_source));
    by_function[f].push_back(i);
  }
  std::vector<ScoredResponse> out(rows.size());
  for (auto& [f, indices] : by_function) {
    std::vector<rewards::RewardInput> inputs;
    for (size_t i : indices) {
      absl::StatusOr<std::string> text = tokenizer.Decode(responses[i]);
      inputs.push_back({rows[i]->prompt, text.ok() ? *text : std::string(), rows[i]->ground_truth,
                        rows[i]->data_source, rows[i]->extra_json});
    }
    std::vector<rewards::RewardOutcome> scored = f->ScoreBatch(inputs);
    for (size_t k = 0; k < indices.size(); ++k) {
      ScoredResponse& s = out[indices[k]];
      if (!scored[k].ok()) {
        s.error = true;
        s.error_message = std::string(scored[k].status().message());
        continue;
      }
      s.score = scored[k]->score;
      const auto c = scored[k]->metrics.find("correct");
      s.correct = c != scored[k]->metrics.end() ? c->second >= 1.0 : s.score >= 1.0;
    }
  }
  return out;
}

}  // namespace tandem::trainer

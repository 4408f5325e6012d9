// RlRolloutDriver: requests per GRPO group, trajectories out, staleness-bounded.
#include "trainer/rl_rollouts.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "trainer/splitmix.h"

namespace tandem::trainer {
namespace {

// Re-requests of one group before the run gives up (the workers cannot keep up with the bound).
constexpr int64_t kMaxReissues = 8;

}  // namespace

RlRolloutDriver::RlRolloutDriver(RolloutPool& pool, const RlRunConfig& config,
                                 const model::Tokenizer& tokenizer, std::span<const RlPrompt> rows,
                                 int64_t max_staleness)
    : pool_(pool),
      config_(config),
      tokenizer_(tokenizer),
      rows_(rows),
      max_staleness_(max_staleness) {}

absl::StatusOr<std::vector<int32_t>> RlRolloutDriver::PromptTokens(const RlPrompt& row) const {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_.Encode(row.prompt);
  if (!ids.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt \"", row.prompt, "\": ", ids.status().message()));
  }
  if (tokenizer_.bos_id() >= 0) ids->insert(ids->begin(), tokenizer_.bos_id());
  return ids;
}

absl::Status RlRolloutDriver::SubmitGroup(int64_t step, int64_t group, StepRequests& s) {
  const int64_t k = s.reissues[group];
  RolloutRequest r;
  r.id =
      k == 0 ? absl::StrCat("s", step, "-g", group) : absl::StrCat("s", step, "-g", group, "-r", k);
  TANDEM_ASSIGN_OR_RETURN(r.request.prompt, PromptTokens(rows_[s.rows[group]]));
  rollout::SamplingOptions& o = r.request.sampling;
  o.n = config_.grpo.samples_per_prompt;
  o.temperature = static_cast<float>(config_.grpo.temperature);
  o.max_new_tokens = config_.grpo.max_new_tokens;
  if (tokenizer_.eos_id() >= 0) o.stop_token_ids = {tokenizer_.eos_id()};
  o.seed = SplitMix64::Mix(
      SplitMix64::Mix(static_cast<uint64_t>(config_.trainer.seed), static_cast<uint64_t>(step)),
      static_cast<uint64_t>(group * (kMaxReissues + 1) + k));
  s.ids[group] = r.id;
  return pool_.Submit(std::move(r));
}

absl::Status RlRolloutDriver::Submit(int64_t step, const std::vector<int64_t>& rows) {
  StepRequests& s = steps_[step];
  s.submitted = std::chrono::steady_clock::now();
  s.rows = rows;
  s.ids.assign(rows.size(), "");
  s.reissues.assign(rows.size(), 0);
  for (size_t g = 0; g < rows.size(); ++g) {
    TANDEM_RETURN_IF_ERROR(SubmitGroup(step, static_cast<int64_t>(g), s));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Trajectory>> RlRolloutDriver::Collect(int64_t step,
                                                                 int64_t trainer_version,
                                                                 CollectStats& stats) {
  auto it = steps_.find(step);
  if (it == steps_.end()) return absl::NotFoundError(absl::StrCat("step ", step, " not submitted"));
  StepRequests& s = it->second;
  const int64_t groups = static_cast<int64_t>(s.rows.size());
  std::vector<std::optional<RolloutResult>> kept(groups);
  for (;;) {
    std::vector<std::string> wanted;
    std::vector<int64_t> wanted_groups;
    for (int64_t g = 0; g < groups; ++g) {
      if (!kept[g].has_value()) wanted.push_back(s.ids[g]), wanted_groups.push_back(g);
    }
    if (wanted.empty()) break;
    const auto start = std::chrono::steady_clock::now();
    TANDEM_ASSIGN_OR_RETURN(std::vector<RolloutResult> results, pool_.Wait(wanted));
    stats.wait_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (size_t i = 0; i < results.size(); ++i) {
      const int64_t g = wanted_groups[i];
      int64_t oldest = trainer_version;
      for (const rollout::SampleResult& smp : results[i].samples) {
        for (int64_t v : smp.weight_versions) oldest = std::min(oldest, v);
      }
      if (trainer_version - oldest <= max_staleness_) {
        kept[g] = std::move(results[i]);
        continue;
      }
      ++stats.stale_dropped;
      if (++s.reissues[g] > kMaxReissues) {
        return absl::DeadlineExceededError(
            absl::StrCat("group ", g, " of step ", step, " was stale ", kMaxReissues,
                         " times (rollout.max_staleness ", max_staleness_, ")"));
      }
      TANDEM_RETURN_IF_ERROR(SubmitGroup(step, g, s));
    }
  }
  stats.latency_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - s.submitted).count();
  std::vector<Trajectory> out;
  for (int64_t g = 0; g < groups; ++g) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptTokens(rows_[s.rows[g]]));
    int64_t oldest = trainer_version;
    for (rollout::SampleResult& smp : kept[g]->samples) {
      Trajectory t;
      t.request_id = kept[g]->id;
      t.sample_index = smp.sample_index;
      t.group = g;
      t.prompt = prompt;
      t.response = std::move(smp.tokens);
      t.logprobs = std::move(smp.logprobs);
      t.versions = std::move(smp.weight_versions);
      t.finish_reason = rollout::FinishReasonName(smp.finish_reason);
      stats.generated_tokens += static_cast<int64_t>(t.response.size());
      for (int64_t v : t.versions) {
        stats.staleness_sum += static_cast<double>(trainer_version - v);
        oldest = std::min(oldest, v);
      }
      out.push_back(std::move(t));
    }
    stats.staleness_max = std::max(stats.staleness_max, trainer_version - oldest);
  }
  steps_.erase(it);
  return out;
}

}  // namespace tandem::trainer

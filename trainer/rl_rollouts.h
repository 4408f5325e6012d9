// The rollout side of a GRPO step: the step's prompts become requests on the RolloutPool (one per
// prompt, n samples: a GRPO group), finished groups become Trajectories, and a group whose tokens
// are older than the staleness bound is dropped and requested again (counted).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"
#include "trainer/rl_config.h"
#include "trainer/rl_data.h"
#include "trainer/rl_step.h"
#include "trainer/rollout_pool.h"

namespace tandem::trainer {

struct CollectStats {
  int64_t stale_dropped = 0;     // groups dropped for staleness and re-requested
  int64_t generated_tokens = 0;  // response tokens of the returned trajectories
  int64_t staleness_max = 0;     // trainer version − oldest token version, over the groups kept
  double staleness_sum = 0;      // Σ over response tokens of (trainer version − token version)
  double wait_seconds = 0;       // blocked in RolloutPool::Wait
  double latency_seconds = 0;    // from the step's submission until its last group came back
};

class RlRolloutDriver {
 public:
  // `rows` (the training set) must outlive the driver. max_staleness: the largest accepted
  // trainer version − token version (0 in sync mode).
  RlRolloutDriver(RolloutPool& pool, const RlRunConfig& config, const model::Tokenizer& tokenizer,
                  std::span<const RlPrompt> rows, int64_t max_staleness);

  // Submits one request per row, ids "s<step>-g<j>", seeds from (trainer.seed, step, j).
  absl::Status Submit(int64_t step, const std::vector<int64_t>& rows);
  bool Submitted(int64_t step) const { return steps_.count(step) > 0; }
  // The step's rows (data indices), in group order. REQUIRES: Submitted(step).
  const std::vector<int64_t>& Rows(int64_t step) const { return steps_.at(step).rows; }

  // Waits for every group of `step` (re-requesting stale ones, ids "s<step>-g<j>-r<k>") and
  // returns the trajectories sorted by group, then sample index. The step is then forgotten.
  absl::StatusOr<std::vector<Trajectory>> Collect(int64_t step, int64_t trainer_version,
                                                  CollectStats& stats);

  // The prompt tokens the engine gets for a row: BOS + Encode(prompt).
  absl::StatusOr<std::vector<int32_t>> PromptTokens(const RlPrompt& row) const;

 private:
  struct StepRequests {
    std::vector<int64_t> rows;
    std::vector<std::string> ids;   // current request id per group
    std::vector<int64_t> reissues;  // re-requests per group
    std::chrono::steady_clock::time_point submitted;
  };
  absl::Status SubmitGroup(int64_t step, int64_t group, StepRequests& s);

  RolloutPool& pool_;
  const RlRunConfig& config_;
  const model::Tokenizer& tokenizer_;
  std::span<const RlPrompt> rows_;
  int64_t max_staleness_;
  std::map<int64_t, StepRequests> steps_;
};

}  // namespace tandem::trainer

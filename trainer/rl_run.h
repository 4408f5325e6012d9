// Internal to the GRPO loop (rl_loop.cc, rl_setup.cc): the state a run carries from step to step
// and the setup functions. Not an API.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/hybrid_model.h"
#include "trainer/data.h"
#include "trainer/rl_config.h"
#include "trainer/rl_data.h"
#include "trainer/rl_loop.h"
#include "trainer/rl_rewards.h"
#include "trainer/rl_rollouts.h"
#include "trainer/rollout_pool.h"
#include "trainer/run_common.h"

namespace tandem::trainer {

// TrainerState::step counts the GRPO steps completed = the weight version the trainer holds.
struct RlRun : TrainerState {
  const RlRunConfig* config = nullptr;
  RlLoopOptions options;
  std::vector<RlPrompt> train_rows;             // the training prompts
  std::vector<RlPrompt> eval_rows;              // held-out prompts (rank 0)
  std::map<int64_t, DataCursor> cursor_before;  // step → loader cursor before its rows were drawn
  std::optional<RlRewarder> rewarder;           // rank 0
  std::unique_ptr<RolloutPool> pool;            // rank 0
  std::unique_ptr<RlRolloutDriver> driver;      // rank 0
  bool resumed = false;
  bool warm_started = false;
  bool rank0() const { return collective->Rank() == 0; }
  void Phase(const std::string& name) const {
    if (options.on_phase && rank0()) options.on_phase(name);
  }
};

// Collective, context, tokenizer, model (model.init), optimizer, data, rewards.
absl::StatusOr<std::unique_ptr<RlRun>> SetUpRl(const RlRunConfig& config,
                                               const RlLoopOptions& options);
// checkpoint.resume: the latest RL checkpoint, if any; otherwise the SFT warm start (if
// warm_start.steps > 0), whose own checkpoints make it resumable too.
absl::Status ResumeOrWarmStart(RlRun& run);
// Rank 0: the rollout workers (options.make_workers or rollout.backend) at the current weights
// and version, the pool and the driver.
absl::Status StartWorkers(RlRun& run);

// The workers rollout.backend describes: "inprocess" engines, "local" spawned server processes,
// or "remote" addresses. cuda_device >= 0: the in-process engines run on that GPU (the trainer's),
// so their log-probs are the GPU trainer's bits.
absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> MakeConfiguredWorkers(
    const RlRunConfig& config, const model::ModelConfig& model_config,
    const model::ModelWeights& weights, int64_t version, int cuda_device = -1);
// With --device cuda the rollouts must come from engines on the GPU: rollout.backend "inprocess"
// (the gRPC workers run on the CPU, whose log-probs are not the GPU trainer's bits).
absl::Status CheckRolloutDevice(const RlRunConfig& config, const RlLoopOptions& options);

}  // namespace tandem::trainer

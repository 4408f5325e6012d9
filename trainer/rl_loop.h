// The GRPO loop behind `tandem train` (DESIGN.md §2, §7): optional SFT warm start, then per step
//   prompts → n samples on the rollout workers → rewards → group advantages → train step
//   (log-prob contract check, PPO-clip on rollout log-probs) → publish weights v+1 → metrics,
// with held-out greedy accuracy every K steps, checkpoints and resume. Sync mode waits for all of a
// step's samples before training; async mode keeps max_staleness steps of prompts generating on
// the workers while the trainer trains, and drops (and re-requests) groups older than the bound.
//
// Data parallel over a Collective: rank 0 drives the rollout workers and the rewards and
// broadcasts each step's trajectories; every rank trains its shard and all hold the same weights.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/weights.h"
#include "trainer/collectives.h"
#include "trainer/rl_config.h"
#include "trainer/rl_metrics.h"
#include "trainer/rollout_pool.h"

namespace tandem::trainer {

// Makes the rollout workers, all starting from `weights` as `version`.
using RolloutWorkerFactory =
    std::function<absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>>(
        const model::ModelConfig& config, const model::ModelWeights& weights, int64_t version)>;

struct RlLoopOptions {
  Collective* collective = nullptr;  // null = one process
  // kCUDA: the trainer on this rank's GPU (as `tandem sft --device cuda`) and the in-process
  // rollout engines on the same GPU.
  Device device = Device::kCPU;
  // > 0: stop after this many steps of this invocation (checkpointing there), as a preempted job.
  int64_t max_steps_this_run = 0;
  bool write_metrics = true;  // rank 0: metrics.jsonl and TensorBoard
  // Called on rank 0 after each step (and at step 0, the evaluation before RL).
  std::function<void(const RlStepMetrics&)> on_step;
  // Replaces rollout.backend (tests: fake or instrumented workers).
  RolloutWorkerFactory make_workers;
  // Called on rank 0 right after a step's requests were submitted (tests kill a worker here).
  std::function<void(int64_t step)> after_submit;
  // Called with a short phase name while setting up ("warm start", "workers", ...).
  std::function<void(const std::string&)> on_phase;
};

struct RlResult {
  int64_t start_step = 0;
  int64_t final_step = 0;
  bool warm_started = false;                    // this invocation ran the SFT warm start
  std::optional<double> initial_eval_accuracy;  // before the first RL step of this invocation
  std::optional<double> final_eval_accuracy;
  std::vector<RlStepMetrics> steps;  // this invocation's steps, in order
  int64_t trajectories_trained = 0;  // Σ over steps of the samples trained on
  RolloutPoolStats pool;             // rank 0
  std::string last_checkpoint;
  std::string metrics_path;
};

// Runs (or resumes) the run. A collective call when options.collective has several ranks.
absl::StatusOr<RlResult> RunRl(const RlRunConfig& config, const RlLoopOptions& options = {});

}  // namespace tandem::trainer

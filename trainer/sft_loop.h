// The SFT training loop behind `tandem sft`: run config → model → data → for each step (shard,
// pack, forward/backward, all-reduce, AdamW, expert bias) → metrics → held-out eval → checkpoint,
// resuming from the latest checkpoint. Data parallel over a Collective (one process per rank);
// every rank runs the same loop on its shard and holds the same weight bits after every step.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/tensor.h"
#include "model/weights.h"
#include "trainer/collectives.h"
#include "trainer/run_config.h"

namespace tandem::trainer {

// Held-out evaluation (addition task only: synthetic data, no train_path).
struct SftEvalOptions {
  int64_t every_steps = 50;  // evaluate after every this many steps and after the last; 0 = only
                             // after the last; < 0 = never
  int64_t examples = 200;    // held-out problems, split over the ranks
};

// What one optimizer step did. Every rank sees the same values.
struct SftStepMetrics {
  int64_t step = 0;           // optimizer steps completed, this one included (1-based)
  int64_t total_steps = 0;    // trainer.total_steps
  double loss = 0;            // token-mean SFT loss of the global batch, nats per trained token
  double lr = 0;              // learning rate of this update
  double grad_norm = 0;       // global L2 gradient norm before clipping
  bool skipped = false;       // non-finite gradient norm: the optimizer did not update
  int64_t tokens = 0;         // packed positions forwarded and backpropagated, all ranks
  int64_t target_tokens = 0;  // trained positions, all ranks
  double step_seconds = 0;    // wall time of the step (eval and checkpoint excluded)
  std::optional<double> eval_exact_match;  // fraction in [0, 1] when evaluated after this step
};

struct SftLoopOptions {
  // The data-parallel group; null = a single process (MakeLocalCollective).
  Collective* collective = nullptr;
  // Where the model trains: the CPU, or the GPU (fp32 master, gradients and AdamW on the GPU,
  // bf16 compute weights cast from the master; checkpoints from a host copy); several ranks: one
  // GPU each, gradients through the NCCL collective (run_common.h's SetUpTrainer).
  Device device = Device::kCPU;
  SftEvalOptions eval;
  // > 0: stop after this many steps of this invocation (a checkpoint is written at the stop), as a
  // preempted job would; the schedule still runs to trainer.total_steps on resume.
  int64_t max_steps_this_run = 0;
  // Rank 0 appends one JSON line per logged step to <trainer.output_dir>/metrics.jsonl.
  bool write_metrics = true;
  // Called on every rank after each step (and its eval, if any); e.g. the CLI's progress line.
  std::function<void(const SftStepMetrics&)> on_step;
};

struct SftResult {
  int64_t start_step = 0;  // steps already done when this invocation started (resume point)
  int64_t final_step = 0;  // steps done when it returned
  std::vector<SftStepMetrics> steps;  // this invocation's steps, in order
  std::optional<double> final_exact_match;
  std::string last_checkpoint;  // directory of the newest checkpoint written, "" if none
  model::ModelWeights weights;  // the final weights (owned copies)
};

// Runs (or resumes) the run described by `config`. A collective call when options.collective has
// more than one rank: every rank calls it with the same config.
//   checkpoints: <checkpoint.dir or output_dir/checkpoints>/step-<N>, written by rank 0 every
//     checkpoint.every_steps steps and at the end (or at max_steps_this_run); checkpoint.resume
//     picks the start ("auto": the latest). Resuming gives the same bits as not stopping.
//   metrics.jsonl: {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s",
//     "eval_exact_match"?} every trainer.log_every steps, after an eval, and at the last step;
//     loss is the mean over the steps since the previous line, tokens_per_s over the same steps.
absl::StatusOr<SftResult> RunSft(const SftRunConfig& config, const SftLoopOptions& options = {});

}  // namespace tandem::trainer

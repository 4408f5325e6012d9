// Per-step metrics of a GRPO run: one JSON line per step in <output_dir>/metrics.jsonl
// (metrics_file.h) and the same scalars in a TensorBoard event file under
// <output_dir>/tensorboard. Field meanings are in docs/rl.md ("Metrics").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "trainer/metrics_file.h"
#include "trainer/rl_step.h"
#include "trainer/tensorboard.h"

namespace tandem::trainer {

struct RlStepMetrics {
  int64_t step = 0;  // GRPO steps completed, this one included (1-based; 0 = before RL)
  int64_t total_steps = 0;
  int64_t version = 0;                     // weight version published after the step (= step)
  int64_t prompts = 0;                     // groups trained on
  int64_t trajectories = 0;                // samples trained on (prompts × n)
  double reward_mean = 0, reward_std = 0;  // over the step's samples
  int64_t reward_errors = 0;               // samples whose reward failed (scored 0)
  double train_accuracy = 0;               // fraction of samples judged correct
  double response_length = 0;              // mean generated tokens per sample
  LogprobMismatch mismatch;                // must be exactly 0 on compared tokens
  double entropy = 0, clip_fraction = 0, approx_kl = 0, mean_ratio = 0, pg_loss = 0, loss = 0;
  double grad_norm = 0, lr = 0;
  int64_t rollout_tokens = 0;  // generated tokens of the step's samples
  int64_t train_tokens = 0;    // packed positions forwarded and backpropagated
  double rollout_s = 0;        // the step's requests: submission to the last group back
  double rollout_wait_s = 0;   // of which the trainer spent waiting (async mode overlaps)
  double reward_s = 0, train_s = 0, weight_sync_s = 0, eval_s = 0, step_s = 0;
  double staleness_mean = 0;  // trainer version − token version, mean over trained tokens
  int64_t staleness_max = 0;
  int64_t stale_dropped = 0;  // groups dropped for exceeding rollout.max_staleness (re-requested)
  int64_t retries = 0, duplicate_samples = 0, failed_attempts = 0;  // pool counters, cumulative
  int64_t live_workers = 0;
  std::optional<double> eval_accuracy;  // held-out greedy accuracy when evaluated
  double elapsed_s = 0;                 // wall seconds since the run started (this invocation)
};

// Step 0 (the evaluation before RL) has only step, elapsed_s and eval_accuracy.
nlohmann::json RlMetricsToJson(const RlStepMetrics& m);
// (tag, value) pairs for TensorBoard, e.g. "reward/mean", "mismatch/max_abs".
std::vector<std::pair<std::string, float>> RlMetricsScalars(const RlStepMetrics& m);

class RlMetricsLog {
 public:
  // Opens <dir>/metrics.jsonl (keeping the lines of steps <= start_step when resuming, dropping
  // the rest) and, when `tensorboard`, an event file in <dir>/tensorboard. Disabled: no-ops.
  static absl::StatusOr<RlMetricsLog> Open(const std::string& dir, int64_t start_step,
                                           bool tensorboard, bool enabled);
  absl::Status Add(const RlStepMetrics& m);
  const std::string& path() const { return file_.path(); }

 private:
  explicit RlMetricsLog(MetricsFile file) : file_(std::move(file)) {}

  MetricsFile file_;
  std::optional<TensorBoardWriter> tensorboard_;
};

}  // namespace tandem::trainer

// metrics.jsonl of an SFT run (metrics_file.h): one JSON object per logged step, with the loss and
// throughput averaged over the steps since the previous line.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "trainer/metrics_file.h"
#include "trainer/sft_loop.h"

namespace tandem::trainer {

class MetricsLog {
 public:
  // <dir>/metrics.jsonl when `enabled` (else every call is a no-op). start_step 0 starts a new
  // file; a resumed run (start_step > 0) keeps the lines with step <= start_step and drops later
  // ones, which a run killed after its last checkpoint left behind.
  static absl::StatusOr<MetricsLog> Open(const std::string& dir, int64_t start_step,
                                         int64_t log_every, bool enabled);

  // Adds a step to the current window; writes the window's line when step % log_every == 0, when
  // the step was evaluated, or when `force`. Line fields: step, loss (mean over the window), lr,
  // grad_norm (this step's), tokens (this step's, all ranks), tokens_per_s (window tokens / window
  // step seconds), elapsed_s (wall seconds since Open, eval and
  // checkpoints included), eval_exact_match.
  absl::Status Add(const SftStepMetrics& m, bool force);

  static nlohmann::json Line(const SftStepMetrics& m, double mean_loss, double tokens_per_s,
                             double elapsed_s);
  const std::string& path() const { return file_.path(); }

 private:
  MetricsLog(MetricsFile file, int64_t log_every)
      : file_(std::move(file)), log_every_(log_every), start_(std::chrono::steady_clock::now()) {}

  MetricsFile file_;
  int64_t log_every_ = 1;
  double window_loss_ = 0;
  int64_t window_steps_ = 0;
  int64_t window_tokens_ = 0;
  double window_seconds_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tandem::trainer

// AdamW over a whole ModelWeights (fp32 master weights, fp32 m and v per parameter), with the
// global gradient-norm clip, the learning-rate schedule, and the aux-loss-free MoE expert-bias
// update of MODEL.md §3b. Parameters are always walked in ModelWeights::ForEachParameter order, so
// the grad norm (an fp64 sum) has one fixed summation order on every rank and every run.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/weights.h"

namespace tandem::trainer {

enum class LrScheduleKind { kConstant, kCosine };

// For the update with 0-based index s (s = optimizer steps already taken), W = warmup_steps,
// S = total_steps:
//   s < W:           lr·(s + 1)/W                       (linear warmup; reaches lr at s = W − 1)
//   constant, s ≥ W: lr
//   cosine,   s ≥ W: min_lr + (lr − min_lr)·½(1 + cos(π·p)),  p = min(1, (s − W)/max(1, S − W))
// so the cosine schedule gives lr at s = W and min_lr from s = S on.
struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::kCosine;
  double lr = 1e-3;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
};
absl::Status ValidateLrSchedule(const LrSchedule& schedule);
double LearningRate(const LrSchedule& schedule, int64_t step);

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;      // decoupled (AdamW); see DecaysWeight for what it applies to
  bool decay_embeddings = false;  // also decay model.word_embeddings.weight
  double max_grad_norm = 1.0;     // clip the global L2 norm to this; 0 = no clipping
};

// Weight decay applies to matrices only: never to norm weights (1-D), expert_bias, nor (unless
// decay_embeddings) the input embedding. lm_head is a matrix and decays.
bool DecaysWeight(const std::string& name, const Tensor& t, bool decay_embeddings);
// expert_bias is set by UpdateExpertBias, never by gradients: AdamW and the grad norm skip it.
bool IsGradientTrained(const std::string& name);

// sqrt(Σ g²) over every gradient-trained tensor, fp64, ForEachParameter order, each tensor's sum
// in index order (kernels::SumOfSquares).
double GlobalGradNorm(const model::ModelWeights& grads);

// AdamW state: the first and second moments, shaped like the weights, and the count of updates.
struct OptimizerState {
  int64_t step = 0;  // updates applied so far
  model::ModelWeights m;
  model::ModelWeights v;
};

struct StepStats {
  double grad_norm = 0;   // before clipping
  double clip_scale = 1;  // the factor the gradients were multiplied by (1 = not clipped)
  double lr = 0;
  bool skipped = false;  // a non-finite grad norm: nothing was updated and step not advanced
};

class AdamW {
 public:
  // REQUIRES: valid options and schedule (else Create fails naming the field).
  static absl::StatusOr<AdamW> Create(const model::ModelConfig& config, const AdamWOptions& options,
                                      const LrSchedule& schedule);

  // One update: norm = GlobalGradNorm(grads); if norm > max_grad_norm the grads are scaled IN
  // PLACE by max_grad_norm / (norm + 1e-6); then AdamW with lr = LearningRate(schedule, step) on
  // every gradient-trained tensor. `grads` must be the all-reduced gradients of the whole batch.
  // REQUIRES: weights and grads of the config's shapes, on ctx's device together with the moments
  // (on the GPU: the fp32 master; the norm's sums of squares are then reduced on the device in a
  // fixed order, kernels::SumOfSquaresOnDevice, and clip and AdamW run on the GPU with the CPU's
  // arithmetic).
  absl::StatusOr<StepStats> Step(const Context& ctx, model::ModelWeights& weights,
                                 model::ModelWeights& grads);

  OptimizerState& state() { return state_; }
  const OptimizerState& state() const { return state_; }
  const AdamWOptions& options() const { return options_; }
  const LrSchedule& schedule() const { return schedule_; }

 private:
  AdamW(const model::ModelConfig& config, const AdamWOptions& options, const LrSchedule& schedule);
  AdamWOptions options_;
  LrSchedule schedule_;
  OptimizerState state_;
};

// Aux-loss-free balancing, once per optimizer step: with load[e] the number of tokens routed to
// expert e (summed over the data-parallel ranks by the caller),
//   bias[e] += sign(mean(load) − load[e])·rate,  then bias −= mean(bias)   (fp64 means).
// Under-loaded experts gain bias and so get selected more.
// REQUIRES: bias f32 [E], load.size() == E.
absl::Status UpdateExpertBias(Tensor& bias, std::span<const int64_t> load, double rate);
// The same for every MoE layer: load[layer] holds that layer's E counts (ignored, may be empty,
// for dense layers).
absl::Status UpdateExpertBiases(const model::ModelConfig& config, model::ModelWeights& weights,
                                const std::vector<std::vector<int64_t>>& load, double rate);

}  // namespace tandem::trainer

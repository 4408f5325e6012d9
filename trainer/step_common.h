// What an SFT step (sft_step.cc) and a GRPO step (rl_step.cc) share: one micro-batch's forward,
// loss and backward with gradient accumulation and MoE expert-load counting, and the end of the
// step (gradients summed over ranks, clip + AdamW, expert-bias update with loads summed over
// ranks). Each step supplies only its loss.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/hybrid_model.h"
#include "model/hybrid_model_backward.h"
#include "model/weights.h"
#include "trainer/collectives.h"
#include "trainer/data.h"
#include "trainer/losses.h"
#include "trainer/optimizer.h"

namespace tandem::trainer {

// Tokens routed to each expert: [layer][expert], empty for dense layers.
using ExpertLoads = std::vector<std::vector<int64_t>>;
ExpertLoads ZeroLoads(const model::ModelConfig& config);

void ZeroGradients(model::ModelWeights& grads);

// A micro-batch's loss from the trainer's log-probs `logp` [T]: the value and d loss / d logp.
using MicroBatchLoss = std::function<absl::StatusOr<LossOutputs>(std::span<const float> logp)>;

struct MicroBatchPass {
  model::ForwardActivations acts;
  LossOutputs loss;
  Tensor entropy;  // [T] f32 on ctx's device when asked for (model::Backward's entropy)
};

// TrainingForward of `mb` at `temperature`, `loss` on its log-probs, Backward accumulated into
// `grads`, and the tokens each expert was selected for (every packed position) added to `loads`.
// with_entropy: also each position's policy entropy, from the LM-head backward's logits.
absl::StatusOr<MicroBatchPass> ForwardBackward(const Context& ctx, model::HybridModel& model,
                                               const MicroBatch& mb, float temperature,
                                               const MicroBatchLoss& loss,
                                               model::ModelWeights& grads, ExpertLoads& loads,
                                               bool with_entropy = false);

// The end of a step (a collective call): grads = Σ_ranks grads (AllReduceGradients, rank order);
// AdamW::Step (clip, update); then, when expert_bias_update_rate > 0 and the optimizer did not
// skip the step, `loads` summed over ranks (one int64 all-reduce) and UpdateExpertBiases.
// `master` null: the model's own fp32 weights are updated (CPU). Non-null (GPU): the update goes
// to *master (fp32 on ctx's device) and the model's compute weights are then cast from it
// (model::CastMasterInto), so they are the bits UploadWeights would give from the master.
absl::StatusOr<StepStats> ApplyUpdate(const Context& ctx, Collective& collective,
                                      model::HybridModel& model, AdamW& optimizer,
                                      model::ModelWeights& grads, ExpertLoads& loads,
                                      double expert_bias_update_rate,
                                      model::ModelWeights* master = nullptr);

}  // namespace tandem::trainer

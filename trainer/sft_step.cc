// One data-parallel SFT step: shard and pack, forward/backward over micro-batches, all-reduce,
// AdamW, expert-bias update.
#include "trainer/sft_step.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/hybrid_model_backward.h"
#include "trainer/losses.h"

namespace tandem::trainer {
namespace {

using ExpertLoads = std::vector<std::vector<int64_t>>;  // [layer][expert], empty for dense layers

ExpertLoads ZeroLoads(const model::ModelConfig& config) {
  ExpertLoads loads(config.num_hidden_layers);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.IsMoeLayer(l)) loads[l].assign(config.num_experts, 0);
  }
  return loads;
}

// Adds the number of tokens each expert was selected for (every packed position counts).
void CountExpertLoads(const model::ForwardActivations& acts, ExpertLoads& loads) {
  for (size_t l = 0; l < loads.size(); ++l) {
    if (loads[l].empty()) continue;
    const Tensor& idx = acts.layers[l].ffn.topk_idx;  // [T, K] i32
    const int32_t* e = idx.data<int32_t>();
    for (int64_t i = 0; i < idx.numel(); ++i) ++loads[l][e[i]];
  }
}

// All layers' loads in one int64 all-reduce (the sum is exact, so any order gives the same).
absl::Status AllReduceLoads(Collective& collective, ExpertLoads& loads) {
  std::vector<int64_t> flat;
  for (const auto& layer : loads) flat.insert(flat.end(), layer.begin(), layer.end());
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(flat.data(), static_cast<int64_t>(flat.size())));
  size_t offset = 0;
  for (auto& layer : loads) {
    for (int64_t& x : layer) x = flat[offset++];
  }
  return absl::OkStatus();
}

void ZeroGradients(model::ModelWeights& grads) {
  grads.ForEachParameter([](const std::string&, Tensor& t) { t.SetZero(); });
}

// Forward, loss and backward of one micro-batch; grads accumulate. Returns the micro-batch's
// share of the global loss (its Σ −logp / N).
absl::StatusOr<double> MicroBatchForwardBackward(const Context& ctx, model::HybridModel& model,
                                                 const MicroBatch& mb, double normalizer,
                                                 model::ModelWeights& grads, ExpertLoads& loads) {
  const model::ForwardInput input = ToForwardInput(mb);
  TANDEM_ASSIGN_OR_RETURN(model::ForwardActivations acts,
                          model::TrainingForward(ctx, model, input));
  const int64_t T = static_cast<int64_t>(mb.tokens.size());
  std::span<const float> logp(acts.logprob.data<float>(), T);
  TANDEM_ASSIGN_OR_RETURN(LossOutputs loss, SftLoss(logp, mb.loss_mask, normalizer));
  const Tensor dlogprob = Tensor::FromVector(loss.dlogp, {T});  // [T]
  TANDEM_RETURN_IF_ERROR(model::Backward(ctx, model, input, acts, dlogprob, grads));
  CountExpertLoads(acts, loads);
  return loss.loss;
}

}  // namespace

absl::StatusOr<RankBatch> ShardAndPack(std::span<const Example> examples,
                                       std::span<const int64_t> global_indices, int rank, int size,
                                       int64_t max_tokens) {
  const int64_t B = static_cast<int64_t>(global_indices.size());
  TANDEM_CHECK_ARG(size >= 1 && rank >= 0 && rank < size, "rank: expected in [0, ", size, "), got ",
                   rank);
  TANDEM_CHECK_ARG(B > 0 && B % size == 0, "data.sequences_per_step: expected a positive multiple",
                   " of the number of ranks (", size, "), got ", B);
  const int64_t per_rank = B / size;
  RankBatch batch;
  batch.sequences.reserve(per_rank);
  for (int64_t i = rank * per_rank; i < (rank + 1) * per_rank; ++i) {
    const int64_t index = global_indices[i];
    TANDEM_CHECK_ARG(index >= 0 && index < static_cast<int64_t>(examples.size()), "global_indices[",
                     i, "]: ", index, " is outside [0, ", examples.size(), ")");
    batch.sequences.push_back(examples[index]);
  }
  TANDEM_ASSIGN_OR_RETURN(batch.micro_batches, PackMicroBatches(batch.sequences, max_tokens));
  for (const MicroBatch& mb : batch.micro_batches) {
    batch.tokens += static_cast<int64_t>(mb.tokens.size());
    batch.targets += mb.num_targets();
  }
  return batch;
}

absl::StatusOr<SftStepResult> SftTrainStep(const Context& ctx, Collective& collective,
                                           model::HybridModel& model, AdamW& optimizer,
                                           model::ModelWeights& grads, const RankBatch& batch,
                                           const SftStepOptions& options) {
  SftStepResult result;
  int64_t counts[2] = {batch.tokens, batch.targets};
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(counts, 2));
  result.tokens = counts[0];
  result.targets = counts[1];
  // The global token count: every rank's token losses are divided by the same N.
  const double normalizer = static_cast<double>(std::max<int64_t>(result.targets, 1));

  ZeroGradients(grads);
  ExpertLoads loads = ZeroLoads(model.config());
  double local_loss = 0;  // fp64, micro-batches in order
  for (const MicroBatch& mb : batch.micro_batches) {
    TANDEM_ASSIGN_OR_RETURN(double mb_loss,
                            MicroBatchForwardBackward(ctx, model, mb, normalizer, grads, loads));
    local_loss += mb_loss;
  }
  float loss = static_cast<float>(local_loss);
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(&loss, 1));
  result.loss = loss;

  TANDEM_RETURN_IF_ERROR(AllReduceGradients(collective, grads));
  TANDEM_ASSIGN_OR_RETURN(result.optimizer, optimizer.Step(ctx, model.weights(), grads));
  if (options.expert_bias_update_rate > 0 && !result.optimizer.skipped) {
    TANDEM_RETURN_IF_ERROR(AllReduceLoads(collective, loads));
    TANDEM_RETURN_IF_ERROR(UpdateExpertBiases(model.config(), model.weights(), loads,
                                              options.expert_bias_update_rate));
  }
  return result;
}

}  // namespace tandem::trainer

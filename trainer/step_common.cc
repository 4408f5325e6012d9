// The micro-batch pass and the end of an optimizer step, shared by the SFT and GRPO steps.
#include "trainer/step_common.h"

#include <string>
#include <utility>

#include "kernels/core/status_macros.h"

namespace tandem::trainer {
namespace {

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

}  // namespace

ExpertLoads ZeroLoads(const model::ModelConfig& config) {
  ExpertLoads loads(config.num_hidden_layers);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.IsMoeLayer(l)) loads[l].assign(config.num_experts, 0);
  }
  return loads;
}

void ZeroGradients(model::ModelWeights& grads) {
  grads.ForEachParameter([](const std::string&, Tensor& t) { t.SetZero(); });
}

absl::StatusOr<MicroBatchPass> ForwardBackward(const Context& ctx, model::HybridModel& model,
                                               const MicroBatch& mb, float temperature,
                                               const MicroBatchLoss& loss,
                                               model::ModelWeights& grads, ExpertLoads& loads) {
  const model::ForwardInput input = ToForwardInput(mb, temperature);
  MicroBatchPass pass;
  TANDEM_ASSIGN_OR_RETURN(pass.acts, model::TrainingForward(ctx, model, input));
  const int64_t T = static_cast<int64_t>(mb.tokens.size());
  TANDEM_ASSIGN_OR_RETURN(pass.loss,
                          loss(std::span<const float>(pass.acts.logprob.data<float>(), T)));
  const Tensor dlogprob = Tensor::FromVector(pass.loss.dlogp, {T});  // [T]
  TANDEM_RETURN_IF_ERROR(model::Backward(ctx, model, input, pass.acts, dlogprob, grads));
  CountExpertLoads(pass.acts, loads);
  return pass;
}

absl::StatusOr<StepStats> ApplyUpdate(const Context& ctx, Collective& collective,
                                      model::HybridModel& model, AdamW& optimizer,
                                      model::ModelWeights& grads, ExpertLoads& loads,
                                      double expert_bias_update_rate) {
  TANDEM_RETURN_IF_ERROR(AllReduceGradients(collective, grads));
  TANDEM_ASSIGN_OR_RETURN(StepStats stats, optimizer.Step(ctx, model.weights(), grads));
  if (expert_bias_update_rate > 0 && !stats.skipped) {
    TANDEM_RETURN_IF_ERROR(AllReduceLoads(collective, loads));
    TANDEM_RETURN_IF_ERROR(
        UpdateExpertBiases(model.config(), model.weights(), loads, expert_bias_update_rate));
  }
  return stats;
}

}  // namespace tandem::trainer

// The micro-batch pass and the end of an optimizer step, shared by the SFT and GRPO steps.
#include "trainer/step_common.h"

#include <string>
#include <utility>

#include "kernels/core/status_macros.h"
#include "model/device_ops.h"
#include "model/hybrid_model_backward_weights.h"

namespace tandem::trainer {
namespace {

// Adds the number of tokens each expert was selected for (every packed position counts). The
// selections are read on the host (copied from the GPU when the pass ran there).
absl::Status CountExpertLoads(const Context& ctx, const model::ForwardActivations& acts,
                              ExpertLoads& loads) {
  for (size_t l = 0; l < loads.size(); ++l) {
    if (loads[l].empty()) continue;
    TANDEM_ASSIGN_OR_RETURN(const Tensor idx,
                            model::internal::ToHost(ctx, acts.layers[l].ffn.topk_idx));  // [T, K]
    const int32_t* e = idx.data<int32_t>();
    for (int64_t i = 0; i < idx.numel(); ++i) ++loads[l][e[i]];
  }
  return absl::OkStatus();
}

// UpdateExpertBiases on a GPU master: each MoE layer's bias [E] (f32, tiny) makes a round trip
// through the host, where the CPU rule runs unchanged.
absl::Status UpdateDeviceExpertBiases(const Context& ctx, const model::ModelConfig& config,
                                      model::ModelWeights& master, const ExpertLoads& loads,
                                      double rate) {
  model::ModelWeights host;
  host.layers.resize(master.layers.size());
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (!config.IsMoeLayer(l)) continue;
    TANDEM_ASSIGN_OR_RETURN(Tensor bias,
                            model::internal::ToHost(ctx, master.layers[l].expert_bias));
    host.layers[l].expert_bias = bias.Clone();
  }
  TANDEM_RETURN_IF_ERROR(UpdateExpertBiases(config, host, loads, rate));
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (!config.IsMoeLayer(l)) continue;
    TANDEM_ASSIGN_OR_RETURN(Tensor bias,
                            model::internal::ToContextDevice(ctx, host.layers[l].expert_bias));
    Tensor& dst = master.layers[l].expert_bias;
    TANDEM_RETURN_IF_ERROR(model::internal::CastInto(ctx, bias, dst));
  }
  return absl::OkStatus();
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
                                               model::ModelWeights& grads, ExpertLoads& loads,
                                               bool with_entropy) {
  const model::ForwardInput input = ToForwardInput(mb, temperature);
  MicroBatchPass pass;
  TANDEM_ASSIGN_OR_RETURN(pass.acts, model::TrainingForward(ctx, model, input));
  const int64_t T = static_cast<int64_t>(mb.tokens.size());
  TANDEM_ASSIGN_OR_RETURN(pass.loss,
                          loss(std::span<const float>(pass.acts.logprob.data<float>(), T)));
  const Tensor dlogprob = Tensor::FromVector(pass.loss.dlogp, {T});  // [T]
  if (with_entropy) pass.entropy = Tensor::Empty({T}, DType::kF32, ctx.device());
  TANDEM_RETURN_IF_ERROR(model::Backward(ctx, model, input, pass.acts, dlogprob, grads,
                                         with_entropy ? &pass.entropy : nullptr));
  TANDEM_RETURN_IF_ERROR(CountExpertLoads(ctx, pass.acts, loads));
  return pass;
}

absl::StatusOr<StepStats> ApplyUpdate(const Context& ctx, Collective& collective,
                                      model::HybridModel& model, AdamW& optimizer,
                                      model::ModelWeights& grads, ExpertLoads& loads,
                                      double expert_bias_update_rate, model::ModelWeights* master) {
  TANDEM_RETURN_IF_ERROR(AllReduceGradients(collective, grads));
  model::ModelWeights& weights = master != nullptr ? *master : model.weights();
  TANDEM_ASSIGN_OR_RETURN(StepStats stats, optimizer.Step(ctx, weights, grads));
  if (expert_bias_update_rate > 0 && !stats.skipped) {
    TANDEM_RETURN_IF_ERROR(AllReduceLoads(collective, loads));
    if (master == nullptr) {
      TANDEM_RETURN_IF_ERROR(
          UpdateExpertBiases(model.config(), weights, loads, expert_bias_update_rate));
    } else {
      TANDEM_RETURN_IF_ERROR(
          UpdateDeviceExpertBiases(ctx, model.config(), weights, loads, expert_bias_update_rate));
    }
  }
  // The compute weights the next forward reads: the cast of the updated master.
  if (master != nullptr && !stats.skipped) {
    TANDEM_RETURN_IF_ERROR(model::CastMasterInto(ctx, *master, model.weights()));
  }
  return stats;
}

}  // namespace tandem::trainer

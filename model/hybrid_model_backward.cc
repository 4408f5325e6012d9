// The training pass: TrainingForward runs HybridModel::Forward's own code with its activations
// kept; Backward walks the model in reverse, reading like the forward's table of contents upside
// down: LM head and log-probs, final norm, then per layer (last first) FFN, post-attention norm,
// attention, input norm — each norm's dx added into the residual gradient — and the embedding.
#include "model/hybrid_model_backward.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gemm/gemm.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "kernels/rms_norm/rms_norm.h"
#include "model/device_ops.h"
#include "model/device_weights.h"
#include "model/hybrid_model_backward_blocks.h"
#include "model/hybrid_model_blocks.h"

namespace tandem::model {
namespace {

using internal::AddInto;
using internal::Buffer;
using internal::PackedSequences;
using internal::ToContextDevice;

// An f32 buffer on ctx's device.
Tensor F32(const Context& ctx, Shape shape) { return Buffer(ctx, std::move(shape)); }

// Backward of logprob = log_softmax(h · lm_headᵀ / temperature)[target] over row chunks: the logits
// and their log-sum-exp are recomputed by the forward's kernels (the same bits), dh [T, Dm] is
// written and d lm_head [V, Dm] accumulated. Positions whose target is −1 contribute nothing.
// With `entropy`, SoftmaxEntropy gives the lse (the same bits) and each row's entropy.
absl::Status LmHeadBwd(const Context& ctx, const Tensor& lm_head, const Tensor& h,
                       const Tensor& targets, float temperature, const Tensor& dlogprob, Tensor& dh,
                       Tensor& g_lm_head, Tensor* entropy) {
  const int64_t T = h.dim(0);
  const int64_t V = lm_head.dim(0);
  // Targets and dlogprob are host tensors; the kernels' copies go to ctx's device.
  Tensor host_targets = Tensor::Empty({T}, DType::kI32);  // [T], −1 → 0 for the kernels
  Tensor host_dlp = Tensor::Empty({T}, DType::kF32);      // [T], 0 where the target is −1
  for (int64_t t = 0; t < T; ++t) {
    const int32_t target = targets.data<int32_t>()[t];
    host_targets.data<int32_t>()[t] = std::max(target, 0);
    host_dlp.data<float>()[t] = target < 0 ? 0.0f : dlogprob.data<float>()[t];
  }
  TANDEM_ASSIGN_OR_RETURN(const Tensor kernel_targets, ToContextDevice(ctx, host_targets));
  TANDEM_ASSIGN_OR_RETURN(const Tensor dlp, ToContextDevice(ctx, host_dlp));
  // The chunk depends only on the device, T and V, so the order d lm_head sums its rows in is
  // fixed.
  const int64_t chunk = internal::LmHeadChunkRows(ctx, T, V);
  Tensor logits = F32(ctx, {chunk, V});   // [chunk, V]
  Tensor dlogits = F32(ctx, {chunk, V});  // [chunk, V]
  Tensor logprob = F32(ctx, {chunk});     // [chunk]
  Tensor lse = F32(ctx, {chunk});         // [chunk]
  for (int64_t r0 = 0; r0 < T; r0 += chunk) {
    const int64_t r1 = std::min(T, r0 + chunk);
    const Tensor h_rows = h.Rows(r0, r1);                    // [r1 − r0, Dm]
    const Tensor target_rows = kernel_targets.Rows(r0, r1);  // [r1 − r0]
    Tensor logits_rows = logits.Rows(0, r1 - r0);            // [r1 − r0, V]
    Tensor dlogits_rows = dlogits.Rows(0, r1 - r0);          // [r1 − r0, V]
    Tensor logprob_rows = logprob.Rows(0, r1 - r0);          // [r1 − r0]
    Tensor lse_rows = lse.Rows(0, r1 - r0);                  // [r1 − r0]
    Tensor dh_rows = dh.Rows(r0, r1);                        // [r1 − r0, Dm]
    TANDEM_RETURN_IF_ERROR(kernels::GemmNT(ctx, h_rows, lm_head, logits_rows));
    if (entropy != nullptr) {  // the same lse bits, and each row's entropy from the same pass
      Tensor entropy_rows = entropy->Rows(r0, r1);
      TANDEM_RETURN_IF_ERROR(
          kernels::SoftmaxEntropy(ctx, logits_rows, temperature, entropy_rows, lse_rows));
    } else {
      TANDEM_RETURN_IF_ERROR(kernels::LogprobFromLogits(ctx, logits_rows, target_rows, temperature,
                                                        logprob_rows, lse_rows));
    }
    TANDEM_RETURN_IF_ERROR(kernels::LogprobFromLogitsBwd(
        ctx, logits_rows, target_rows, lse_rows, temperature, dlp.Rows(r0, r1), dlogits_rows));
    TANDEM_RETURN_IF_ERROR(kernels::GemmNN(ctx, dlogits_rows, lm_head, dh_rows));
    TANDEM_RETURN_IF_ERROR(kernels::GemmTN(ctx, dlogits_rows, h_rows, g_lm_head,
                                           /*accumulate=*/true));
  }
  return absl::OkStatus();
}

// One decoder layer in reverse. dx [T, Dm] holds d loss / d (layer output) on entry and d loss / d
// (layer input) on return; dh and dtmp [T, Dm] are scratch.
absl::Status LayerBwd(const Context& ctx, const ModelConfig& config, int64_t layer,
                      const LayerWeights& w, const PackedSequences& seqs, const LayerActivations& a,
                      Tensor& dx, Tensor& dh, Tensor& dtmp, LayerWeights& g) {
  // x_out = x_mid + FFN(RmsNorm(x_mid))
  if (config.IsMoeLayer(layer)) {
    TANDEM_RETURN_IF_ERROR(internal::MoeBlockBwd(ctx, config, w, a.h_ffn, a.ffn, dx, dh, g));
  } else {
    TANDEM_RETURN_IF_ERROR(internal::DenseMlpBlockBwd(ctx, w, a.h_ffn, a.ffn, dx, dh, g));
  }
  TANDEM_RETURN_IF_ERROR(kernels::RmsNormBwd(ctx, a.x_mid, w.post_attention_layernorm, a.rstd_ffn,
                                             dh, dtmp, g.post_attention_layernorm));
  TANDEM_RETURN_IF_ERROR(AddInto(ctx, dtmp, dx));

  // x_mid = x + Attn(RmsNorm(x))
  if (config.layer_types[layer] == LayerType::kLinear) {
    TANDEM_RETURN_IF_ERROR(internal::LinearAttentionBlockBwd(ctx, config, layer, w, seqs, a.h_attn,
                                                             a.attn, dx, dh, g));
  } else {
    TANDEM_RETURN_IF_ERROR(
        internal::SoftmaxAttentionBlockBwd(ctx, config, w, seqs, a.h_attn, a.attn, dx, dh, g));
  }
  TANDEM_RETURN_IF_ERROR(
      kernels::RmsNormBwd(ctx, a.x, w.input_layernorm, a.rstd_attn, dh, dtmp, g.input_layernorm));
  return AddInto(ctx, dtmp, dx);
}

// `grads` must have the parameter tensors of `weights`, with the same shapes, as f32 on `device`
// (where the backward runs).
absl::Status CheckGradShapes(const ModelWeights& weights, ModelWeights& grads, Device device) {
  TANDEM_CHECK_ARG(grads.layers.size() == weights.layers.size(), "grads: ", grads.layers.size(),
                   " layers, expected ", weights.layers.size());
  std::vector<std::pair<std::string, Shape>> want;
  weights.ForEachParameter(
      [&](const std::string& name, const Tensor& t) { want.emplace_back(name, t.shape()); });
  size_t i = 0;
  absl::Status status;
  grads.ForEachParameter([&](const std::string& name, const Tensor& t) {
    if (!status.ok()) return;
    if (i >= want.size() || want[i].first != name || !t.defined() || t.dtype() != DType::kF32 ||
        t.shape() != want[i].second || t.device() != device) {
      status = absl::InvalidArgumentError(
          absl::StrCat("grads: tensor '", name, "' does not match the weights (expected f32 ",
                       i < want.size() ? ShapeString(want[i].second) : "nothing", " on ",
                       DeviceName(device), ")"));
    }
    ++i;
  });
  TANDEM_RETURN_IF_ERROR(status);
  TANDEM_CHECK_ARG(i == want.size(), "grads: ", i, " tensors, expected ", want.size());
  return ExpectTensor(grads.lm_head, "grads.lm_head", DType::kF32,
                      {weights.lm_head.dim(0), weights.lm_head.dim(1)}, device);
}

absl::Status CheckBackwardArgs(const Context& ctx, const HybridModel& model,
                               const ForwardInput& input, const ForwardActivations& acts,
                               const Tensor& dlogprob, ModelWeights& grads) {
  const int64_t T = input.tokens.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dlogprob, "dlogprob", DType::kF32, {T}));
  TANDEM_CHECK_ARG(acts.logprob.defined() && acts.logprob.dim(0) == T,
                   "acts: not from TrainingForward over this input (", T, " tokens)");
  TANDEM_CHECK_ARG(
      T == 0 || static_cast<int64_t>(acts.layers.size()) == model.config().num_hidden_layers,
      "acts: ", acts.layers.size(), " layers, expected ", model.config().num_hidden_layers);
  // Weights and gradients live where the context runs (AllocateGradients gives such grads).
  TANDEM_CHECK_ARG(WeightsDevice(model.weights()) == ctx.device(), "weights: on ",
                   DeviceName(WeightsDevice(model.weights())), " but the context is ",
                   DeviceName(ctx.device()));
  return CheckGradShapes(model.weights(), grads, ctx.device());
}

}  // namespace

absl::StatusOr<ForwardActivations> TrainingForward(const Context& ctx, const HybridModel& model,
                                                   const ForwardInput& input,
                                                   const BackwardOptions& options) {
  ForwardActivations acts;
  acts.keep_layers = !options.recompute_layers;
  TANDEM_ASSIGN_OR_RETURN(
      acts.logprob, internal::ForwardPass(ctx, model.config(), model.weights(), input, &acts));
  return acts;
}

absl::Status Backward(const Context& ctx, const HybridModel& model, const ForwardInput& input,
                      const ForwardActivations& acts, const Tensor& dlogprob, ModelWeights& grads,
                      Tensor* entropy) {
  TANDEM_RETURN_IF_ERROR(CheckBackwardArgs(ctx, model, input, acts, dlogprob, grads));
  if (entropy != nullptr) {
    TANDEM_RETURN_IF_ERROR(
        ExpectTensor(*entropy, "entropy", DType::kF32, {input.tokens.dim(0)}, ctx.device()));
  }
  const ModelConfig& config = model.config();
  const ModelWeights& weights = model.weights();
  const int64_t T = input.tokens.dim(0);
  if (T == 0) return absl::OkStatus();
  const PackedSequences seqs{input.cu_seqlens, acts.positions};
  Tensor dx = F32(ctx, {T, config.hidden_size});    // [T, Dm] d loss / d residual stream
  Tensor dh = F32(ctx, {T, config.hidden_size});    // [T, Dm] d loss / d a norm's output
  Tensor dtmp = F32(ctx, {T, config.hidden_size});  // [T, Dm] a norm's d input, before the add

  TANDEM_RETURN_IF_ERROR(LmHeadBwd(ctx, weights.lm_head, acts.h_final, input.targets,
                                   input.temperature, dlogprob, dh, grads.lm_head, entropy));
  TANDEM_RETURN_IF_ERROR(kernels::RmsNormBwd(ctx, acts.x_final, weights.final_norm, acts.rstd_final,
                                             dh, dx, grads.final_norm));
  for (int64_t layer = config.num_hidden_layers - 1; layer >= 0; --layer) {
    const LayerActivations* a = &acts.layers[layer];
    LayerActivations recomputed;
    if (!acts.keep_layers) {
      recomputed.x = a->x;
      TANDEM_RETURN_IF_ERROR(
          internal::RecomputeLayer(ctx, config, layer, weights.layers[layer], seqs, recomputed));
      a = &recomputed;
    }
    TANDEM_RETURN_IF_ERROR(LayerBwd(ctx, config, layer, weights.layers[layer], seqs, *a, dx, dh,
                                    dtmp, grads.layers[layer]));
  }
  return kernels::EmbeddingBwd(ctx, input.tokens, dx, grads.embed);
}

absl::StatusOr<Tensor> ForwardBackward(const Context& ctx, const HybridModel& model,
                                       const ForwardInput& input, const Tensor& dlogprob,
                                       ModelWeights& grads, const BackwardOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(ForwardActivations acts, TrainingForward(ctx, model, input, options));
  TANDEM_RETURN_IF_ERROR(Backward(ctx, model, input, acts, dlogprob, grads));
  return acts.logprob;
}

}  // namespace tandem::model

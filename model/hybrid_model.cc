// HybridModel::Forward: the Ring-linear forward pass over packed sequences, read top to bottom
// like the table of contents of MODEL.md §1.4: embed, L pre-norm decoder layers (attention then
// FFN, each added into one fp32 residual stream), final norm, LM head log-probs. The blocks live in
// hybrid_model_blocks.cc; docs/model.md lists every op in order with the file that does it.
#include "model/hybrid_model.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gemm/gemm.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "kernels/rms_norm/rms_norm.h"
#include "model/device_ops.h"
#include "model/device_weights.h"
#include "model/hybrid_model_blocks.h"

namespace tandem::model {
namespace {

using internal::Buffer;
using internal::PackedSequences;
using internal::ResidualStream;
using internal::ToContextDevice;
using internal::ToHost;

absl::Status ValidateTokens(const ModelConfig& config, const ForwardInput& in) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(in.tokens, "tokens", DType::kI32, {-1}));
  const int64_t T = in.tokens.dim(0);
  const int32_t* tokens = in.tokens.data<int32_t>();
  for (int64_t t = 0; t < T; ++t) {
    TANDEM_CHECK_ARG(tokens[t] >= 0 && tokens[t] < config.vocab_size, "tokens: id ", tokens[t],
                     " at position ", t, " is outside the vocabulary [0, ", config.vocab_size, ")");
  }
  TANDEM_RETURN_IF_ERROR(ExpectTensor(in.targets, "targets", DType::kI32, {T}));
  const int32_t* targets = in.targets.data<int32_t>();
  for (int64_t t = 0; t < T; ++t) {
    TANDEM_CHECK_ARG(targets[t] == -1 || (targets[t] >= 0 && targets[t] < config.vocab_size),
                     "targets: ", targets[t], " at position ", t,
                     " is neither -1 nor in the vocabulary [0, ", config.vocab_size, ")");
  }
  return absl::OkStatus();
}

absl::Status ValidateInput(const ModelConfig& config, const ForwardInput& in) {
  TANDEM_RETURN_IF_ERROR(ValidateTokens(config, in));
  const int64_t T = in.tokens.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(in.cu_seqlens, "cu_seqlens", DType::kI32, {-1}));
  const int64_t n = in.cu_seqlens.dim(0);
  const int32_t* cu = in.cu_seqlens.data<int32_t>();
  TANDEM_CHECK_ARG(n >= 1, "cu_seqlens: expected B + 1 >= 1 entries, got none");
  TANDEM_CHECK_ARG(cu[0] == 0, "cu_seqlens: must start at 0, got ", cu[0]);
  for (int64_t b = 1; b < n; ++b) {
    TANDEM_CHECK_ARG(cu[b] >= cu[b - 1], "cu_seqlens: decreases at index ", b, " (", cu[b],
                     " after ", cu[b - 1], ")");
  }
  TANDEM_CHECK_ARG(cu[n - 1] == T, "cu_seqlens: must end at the token count T = ", T, ", got ",
                   cu[n - 1]);
  TANDEM_CHECK_ARG(std::isfinite(in.temperature) && in.temperature > 0.0f,
                   "temperature: must be a finite number > 0, got ", in.temperature);
  return absl::OkStatus();
}

// positions [T] i32: each token's index within its own sequence.
Tensor Positions(const Tensor& cu_seqlens, int64_t T) {
  Tensor positions = Tensor::Empty({T}, DType::kI32);  // [T]
  const int32_t* cu = cu_seqlens.data<int32_t>();
  int32_t* pos = positions.data<int32_t>();
  for (int64_t b = 0; b + 1 < cu_seqlens.dim(0); ++b) {
    for (int32_t t = cu[b]; t < cu[b + 1]; ++t) pos[t] = t - cu[b];
  }
  return positions;
}

// One pre-norm decoder layer: x += Attn(RmsNorm(x)); x += FFN(RmsNorm(x)). With `acts`, the
// layer's intermediate tensors are kept there for the backward pass.
absl::Status DecoderLayer(const Context& ctx, const ModelConfig& config, int64_t layer,
                          const LayerWeights& w, const PackedSequences& seqs,
                          ResidualStream& stream, LayerActivations* acts = nullptr) {
  const float eps = static_cast<float>(config.rms_norm_eps);
  TANDEM_RETURN_IF_ERROR(stream.Norm(ctx, w.input_layernorm, eps));
  if (acts != nullptr) stream.Keep(acts->x, acts->h_attn, acts->rstd_attn);
  AttentionActivations* attn = acts != nullptr ? &acts->attn : nullptr;
  if (config.layer_types[layer] == LayerType::kLinear) {
    TANDEM_RETURN_IF_ERROR(
        internal::LinearAttentionBlock(ctx, config, layer, w, seqs, stream.h, stream.delta, attn));
  } else {
    TANDEM_RETURN_IF_ERROR(
        internal::SoftmaxAttentionBlock(ctx, config, w, seqs, stream.h, stream.delta, attn));
  }
  stream.delta_pending = true;
  return internal::FeedForwardHalf(ctx, config, layer, w, stream, acts);
}

// logprob [T] (host) = log_softmax(h · lm_headᵀ / temperature)[target], 0 where target = −1,
// computed over row chunks so the logits buffer stays bounded for large vocabularies. The logits
// come from kernels::GemmNT, as in ForwardStep, so the two read the same logits rows on either
// device (LmHeadLogprobFwd is the same GEMM then LogprobFromLogits on the CPU).
absl::StatusOr<Tensor> LmHeadLogprobs(const Context& ctx, const ModelConfig& config,
                                      const Tensor& lm_head, const Tensor& h, const Tensor& targets,
                                      float temperature) {
  const int64_t T = h.dim(0);
  const int64_t V = config.vocab_size;
  const int32_t* target = targets.data<int32_t>();
  Tensor host_targets = Tensor::Empty({T}, DType::kI32);  // [T], −1 → 0 for the kernel
  for (int64_t t = 0; t < T; ++t) host_targets.data<int32_t>()[t] = std::max(target[t], 0);
  TANDEM_ASSIGN_OR_RETURN(Tensor kernel_targets, ToContextDevice(ctx, host_targets));

  // Rows are independent (GEMM rows are batch-invariant and the log-sum-exp is row-local), so
  // the chunk size never changes a bit.
  const int64_t chunk = internal::LmHeadChunkRows(ctx, T, V);
  Tensor logits = Buffer(ctx, {chunk, V});  // [chunk, V]
  Tensor logprob = Buffer(ctx, {T});        // [T]
  Tensor lse = Buffer(ctx, {T});            // [T]
  for (int64_t r0 = 0; r0 < T; r0 += chunk) {
    const int64_t r1 = std::min(T, r0 + chunk);
    Tensor logits_rows = logits.Rows(0, r1 - r0);  // [r1 − r0, V]
    Tensor logprob_rows = logprob.Rows(r0, r1);    // [r1 − r0]
    Tensor lse_rows = lse.Rows(r0, r1);            // [r1 − r0]
    TANDEM_RETURN_IF_ERROR(kernels::GemmNT(ctx, h.Rows(r0, r1), lm_head, logits_rows));
    TANDEM_RETURN_IF_ERROR(kernels::LogprobFromLogits(ctx, logits_rows, kernel_targets.Rows(r0, r1),
                                                      temperature, logprob_rows, lse_rows));
  }
  TANDEM_ASSIGN_OR_RETURN(Tensor out, ToHost(ctx, logprob));
  for (int64_t t = 0; t < T; ++t) {
    if (target[t] < 0) out.data<float>()[t] = 0.0f;
  }
  return out;
}

}  // namespace

HybridModel::HybridModel(ModelConfig config, ModelWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {}

absl::StatusOr<Tensor> HybridModel::Forward(const Context& ctx, const ForwardInput& input) const {
  return internal::ForwardPass(ctx, config_, weights_, input, /*acts=*/nullptr);
}

namespace internal {

absl::StatusOr<Tensor> ForwardPass(const Context& ctx, const ModelConfig& config,
                                   const ModelWeights& weights, const ForwardInput& input,
                                   ForwardActivations* acts) {
  TANDEM_RETURN_IF_ERROR(ValidateInput(config, input));
  TANDEM_CHECK_ARG(static_cast<int64_t>(weights.layers.size()) == config.num_hidden_layers &&
                       static_cast<int64_t>(config.layer_types.size()) == config.num_hidden_layers,
                   "weights: ", weights.layers.size(), " layers for a config of ",
                   config.num_hidden_layers);
  if (!config.use_qk_norm) {
    return absl::UnimplementedError("config: use_qk_norm = false is not supported");
  }
  if (WeightsDevice(weights) != ctx.device()) {
    return absl::FailedPreconditionError(
        absl::StrCat("weights: on ", DeviceName(WeightsDevice(weights)), " but the context is ",
                     DeviceName(ctx.device()), " (UploadWeights puts them on the GPU)"));
  }
  const int64_t T = input.tokens.dim(0);
  const int64_t Dm = config.hidden_size;
  if (T == 0) return Tensor::Empty({0}, DType::kF32);

  // Token ids, offsets and positions stay on the host: the kernels read them there.
  PackedSequences seqs{input.cu_seqlens, Positions(input.cu_seqlens, T)};
  ResidualStream stream = ResidualStream::Allocate(ctx, T, Dm);
  TANDEM_RETURN_IF_ERROR(kernels::EmbeddingFwd(ctx, weights.embed, input.tokens, stream.x));
  if (acts != nullptr) acts->positions = seqs.positions;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    LayerActivations layer_acts;
    TANDEM_RETURN_IF_ERROR(DecoderLayer(ctx, config, layer, weights.layers[layer], seqs, stream,
                                        acts != nullptr ? &layer_acts : nullptr));
    if (acts == nullptr) continue;
    if (!acts->keep_layers) {  // per-layer checkpointing: only the layer's input residual
      Tensor x = layer_acts.x;
      layer_acts = LayerActivations();
      layer_acts.x = x;
    }
    acts->layers.push_back(std::move(layer_acts));
  }
  TANDEM_RETURN_IF_ERROR(
      stream.Norm(ctx, weights.final_norm, static_cast<float>(config.rms_norm_eps)));
  if (acts != nullptr) stream.Keep(acts->x_final, acts->h_final, acts->rstd_final);
  return LmHeadLogprobs(ctx, config, weights.lm_head, stream.h, input.targets, input.temperature);
}

absl::Status RecomputeLayer(const Context& ctx, const ModelConfig& config, int64_t layer,
                            const LayerWeights& w, const PackedSequences& seqs,
                            LayerActivations& acts) {
  const int64_t T = acts.x.dim(0);
  const int64_t Dm = config.hidden_size;
  ResidualStream stream = ResidualStream::Allocate(ctx, T, Dm);
  stream.x = acts.x.Clone();
  return DecoderLayer(ctx, config, layer, w, seqs, stream, &acts);
}

}  // namespace internal

}  // namespace tandem::model

// Attention and FFN blocks of the hybrid model, composed from kernels/ in the order MODEL.md gives
// (§2.3 linear attention, §3 softmax attention, §3b MoE). Pure composition: every number is
// computed by a kernel; this file only allocates buffers and splits the fused qkv projection.
#include "model/hybrid_model_blocks.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm.h"
#include "kernels/group_rms_norm_gate/group_rms_norm_gate.h"
#include "kernels/linear_attention/linear_attention.h"
#include "kernels/moe_experts/moe_experts.h"
#include "kernels/moe_route/moe_route.h"
#include "kernels/qk_norm_rope/qk_norm_rope.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "kernels/swiglu/swiglu.h"
#include "model/device_ops.h"
#include "model/inference_cache.h"

namespace tandem::model::internal {
namespace {

using kernels::GemmNT;

// An f32 buffer on ctx's device.
Tensor F32(const Context& ctx, Shape shape) { return Buffer(ctx, std::move(shape)); }

// NC = Σ_b ceil(T_b / C): the linear-attention chunks of a packed batch.
int64_t NumChunks(const Tensor& cu_seqlens) {
  const int32_t* cu = cu_seqlens.data<int32_t>();
  int64_t chunks = 0;
  for (int64_t b = 0; b + 1 < cu_seqlens.dim(0); ++b) {
    chunks += (cu[b + 1] - cu[b] + kLinearAttentionChunk - 1) / kLinearAttentionChunk;
  }
  return chunks;
}

// The attention scale s = D^-1/2, rounded once from double.
float AttentionScale(int64_t head_dim) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

// out [T, Dm] = down(silu(gate(h)) · up(h)), optionally added onto what out already holds.
absl::Status Swiglu(const Context& ctx, const Tensor& gate_w, const Tensor& up_w,
                    const Tensor& down_w, const Tensor& h, Tensor& out, bool accumulate,
                    SwigluActivations* acts) {
  const int64_t T = h.dim(0);
  const int64_t I = gate_w.dim(0);
  Tensor gate = F32(ctx, {T, I});                         // [T, I]
  Tensor up = F32(ctx, {T, I});                           // [T, I]
  Tensor act = Buffer(ctx, {T, I}, GemmInputDType(ctx));  // [T, I]
  TANDEM_RETURN_IF_ERROR(GemmNT(ctx, h, gate_w, gate));
  TANDEM_RETURN_IF_ERROR(GemmNT(ctx, h, up_w, up));
  TANDEM_RETURN_IF_ERROR(kernels::SwigluFwd(ctx, gate, up, act));
  if (acts != nullptr) *acts = {gate, up, act};
  return GemmNT(ctx, act, down_w, out, accumulate);
}

}  // namespace

absl::StatusOr<Qkv> ProjectQkv(const Context& ctx, const ModelConfig& config, int64_t kv_heads,
                               const LayerWeights& w, const Tensor& positions, const Tensor& h,
                               AttentionActivations* acts) {
  const int64_t T = h.dim(0);
  const int64_t H = config.num_attention_heads;
  const int64_t D = config.head_dim;
  Tensor qkv = F32(ctx, {T, (H + 2 * kv_heads) * D});  // [T, (H + 2·Hkv)·D]
  TANDEM_RETURN_IF_ERROR(GemmNT(ctx, h, w.qkv, qkv));
  Tensor q_raw = F32(ctx, {T, H, D});         // [T, H, D]
  Tensor k_raw = F32(ctx, {T, kv_heads, D});  // [T, Hkv, D]
  const DType dtype = KvCacheDType(ctx.device());
  Qkv out{Buffer(ctx, {T, H, D}, dtype), Buffer(ctx, {T, kv_heads, D}, dtype),
          Buffer(ctx, {T, kv_heads, D}, dtype)};
  TANDEM_RETURN_IF_ERROR(CopyColumns(ctx, qkv, 0, q_raw));
  TANDEM_RETURN_IF_ERROR(CopyColumns(ctx, qkv, H * D, k_raw));
  TANDEM_RETURN_IF_ERROR(CopyColumns(ctx, qkv, (H + kv_heads) * D, out.v));

  kernels::QkNormRopeParams p;
  p.rotary_dim = config.rotary_dim();
  p.theta = config.rope_theta;
  p.eps = static_cast<float>(config.rms_norm_eps);
  Tensor q_rstd = F32(ctx, {T, H});         // [T, H]
  Tensor k_rstd = F32(ctx, {T, kv_heads});  // [T, Hkv]
  TANDEM_RETURN_IF_ERROR(
      kernels::QkNormRopeFwd(ctx, p, q_raw, w.query_layernorm, positions, out.q, q_rstd));
  TANDEM_RETURN_IF_ERROR(
      kernels::QkNormRopeFwd(ctx, p, k_raw, w.key_layernorm, positions, out.k, k_rstd));
  if (acts != nullptr) {
    acts->q_raw = q_raw;
    acts->k_raw = k_raw;
    acts->q_rstd = q_rstd;
    acts->k_rstd = k_rstd;
    acts->q = out.q;
    acts->k = out.k;
    acts->v = out.v;
  }
  return out;
}

kernels::SoftmaxAttentionParams SoftmaxParams(const ModelConfig& config) {
  return {config.num_attention_heads, config.num_key_value_heads, config.head_dim,
          AttentionScale(config.head_dim)};
}

kernels::LinearAttentionParams LinearParams(const ModelConfig& config) {
  return {config.num_attention_heads, config.head_dim, AttentionScale(config.head_dim)};
}

absl::Status SoftmaxAttentionOutput(const Context& ctx, const ModelConfig& config,
                                    const LayerWeights& w, const Tensor& o, Tensor& out) {
  const int64_t T = o.dim(0);
  TANDEM_ASSIGN_OR_RETURN(Tensor o_flat,
                          o.Reshape({T, config.num_attention_heads * config.head_dim}));
  return GemmNT(ctx, o_flat, w.dense, out);
}

absl::Status LinearAttentionOutput(const Context& ctx, const ModelConfig& config,
                                   const LayerWeights& w, const Tensor& h, const Tensor& o,
                                   Tensor& out, AttentionActivations* acts) {
  const int64_t T = o.dim(0);
  const int64_t HD = config.num_attention_heads * config.head_dim;
  Tensor gate = F32(ctx, {T, HD});  // [T, H·D]
  TANDEM_RETURN_IF_ERROR(GemmNT(ctx, h, w.g_proj, gate));
  TANDEM_ASSIGN_OR_RETURN(Tensor o_flat, o.Reshape({T, HD}));  // [T, H·D]
  kernels::GroupRmsNormGateParams gp{config.group_norm_size,
                                     static_cast<float>(config.rms_norm_eps)};
  Tensor y = Buffer(ctx, {T, HD}, GemmInputDType(ctx));   // [T, H·D]
  Tensor y_rstd = F32(ctx, {T, config.group_norm_size});  // [T, groups]
  TANDEM_RETURN_IF_ERROR(kernels::GroupRmsNormGateFwd(ctx, gp, o_flat, gate, w.g_norm, y, y_rstd));
  if (acts != nullptr) {
    acts->gate = gate;
    acts->y = y;
    acts->y_rstd = y_rstd;
  }
  return GemmNT(ctx, y, w.dense, out);
}

absl::Status FeedForwardHalf(const Context& ctx, const ModelConfig& config, int64_t layer,
                             const LayerWeights& w, ResidualStream& stream,
                             LayerActivations* acts) {
  TANDEM_RETURN_IF_ERROR(
      stream.Norm(ctx, w.post_attention_layernorm, static_cast<float>(config.rms_norm_eps)));
  if (acts != nullptr) stream.Keep(acts->x_mid, acts->h_ffn, acts->rstd_ffn);
  FfnActivations* ffn = acts != nullptr ? &acts->ffn : nullptr;
  if (config.IsMoeLayer(layer)) {
    TANDEM_RETURN_IF_ERROR(MoeBlock(ctx, config, w, stream.h, stream.delta, ffn));
  } else {
    TANDEM_RETURN_IF_ERROR(DenseMlpBlock(ctx, w, stream.h, stream.delta, ffn));
  }
  stream.delta_pending = true;
  return absl::OkStatus();
}

absl::Status LinearAttentionBlock(const Context& ctx, const ModelConfig& config, int64_t layer,
                                  const LayerWeights& w, const PackedSequences& seqs,
                                  const Tensor& h, Tensor& out, AttentionActivations* acts) {
  const int64_t T = h.dim(0);
  const int64_t H = config.num_attention_heads;
  const int64_t D = config.head_dim;
  // Linear layers are MHA: q, k, v all [T, H, D].
  TANDEM_ASSIGN_OR_RETURN(Qkv qkv, ProjectQkv(ctx, config, H, w, seqs.positions, h, acts));

  Tensor decay = Tensor::FromVector(config.LinearDecay(layer), {H});  // [H], λ_h = exp(−x_h)
  Tensor o = F32(ctx, {T, H, D});                                     // [T, H, D]
  Tensor no_initial_state, no_boundary_state;
  // [NC, H, D, D], kept for the backward pass only. With bf16 q, k, v (the GPU) in bf16: the
  // forward's own q·bf16(S) operand, all the backward multiplies with (the same bits as f32
  // states, half the bytes, and the forward writes no f32 copy).
  Tensor chunk_states;
  if (acts != nullptr) {
    const Shape shape = {NumChunks(seqs.cu_seqlens), H, D, D};
    chunk_states = qkv.q.dtype() == DType::kBF16 ? Tensor::Empty(shape, DType::kBF16, ctx.device())
                                                 : F32(ctx, shape);
  }
  TANDEM_RETURN_IF_ERROR(kernels::LinearAttentionFwd(ctx, LinearParams(config), qkv.q, qkv.k, qkv.v,
                                                     decay, seqs.cu_seqlens, no_initial_state, o,
                                                     chunk_states, no_boundary_state));
  if (acts != nullptr) {
    acts->o = o;
    acts->chunk_states = chunk_states;
  }
  return LinearAttentionOutput(ctx, config, w, h, o, out, acts);
}

absl::Status SoftmaxAttentionBlock(const Context& ctx, const ModelConfig& config,
                                   const LayerWeights& w, const PackedSequences& seqs,
                                   const Tensor& h, Tensor& out, AttentionActivations* acts) {
  const int64_t T = h.dim(0);
  const int64_t H = config.num_attention_heads;
  const int64_t D = config.head_dim;
  TANDEM_ASSIGN_OR_RETURN(
      Qkv qkv, ProjectQkv(ctx, config, config.num_key_value_heads, w, seqs.positions, h, acts));
  Tensor o = Buffer(ctx, {T, H, D}, GemmInputDType(ctx));  // [T, H, D], enters the dense GEMM
  Tensor lse = F32(ctx, {T, H});                           // [T, H]
  TANDEM_RETURN_IF_ERROR(kernels::SoftmaxAttentionFwd(ctx, SoftmaxParams(config), qkv.q, qkv.k,
                                                      qkv.v, seqs.cu_seqlens, o, lse));
  if (acts != nullptr) {
    acts->o = o;
    acts->lse = lse;
  }
  return SoftmaxAttentionOutput(ctx, config, w, o, out);
}

absl::Status DenseMlpBlock(const Context& ctx, const LayerWeights& w, const Tensor& h, Tensor& out,
                           FfnActivations* acts) {
  return Swiglu(ctx, w.mlp_gate, w.mlp_up, w.mlp_down, h, out, /*accumulate=*/false,
                acts != nullptr ? &acts->mlp : nullptr);
}

absl::Status MoeBlock(const Context& ctx, const ModelConfig& config, const LayerWeights& w,
                      const Tensor& h, Tensor& out, FfnActivations* acts) {
  if (config.score_function != "sigmoid") {
    return absl::UnimplementedError(absl::StrCat("config: score_function '", config.score_function,
                                                 "' is not supported (only sigmoid)"));
  }
  const int64_t T = h.dim(0);
  const int64_t E = config.num_experts;
  const int64_t K = config.num_experts_per_tok;
  Tensor logits = F32(ctx, {T, E});  // [T, E], fp32 router on the f32 (widened) stream
  TANDEM_ASSIGN_OR_RETURN(Tensor h32, AsF32(ctx, h));
  TANDEM_RETURN_IF_ERROR(GemmNT(ctx, h32, w.router, logits));

  kernels::MoeRouteParams rp;
  rp.num_experts = E;
  rp.top_k = K;
  rp.n_group = config.n_group;
  rp.topk_group = config.topk_group;
  rp.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
  rp.norm_topk_prob = config.norm_topk_prob;
  Tensor topk_idx = Buffer(ctx, {T, K}, DType::kI32);  // [T, K], rank order
  Tensor topk_weight = F32(ctx, {T, K});               // [T, K]
  Tensor scores = F32(ctx, {T, E});                    // [T, E]
  TANDEM_RETURN_IF_ERROR(
      kernels::MoeRouteFwd(ctx, rp, logits, w.expert_bias, topk_idx, topk_weight, scores));
  TANDEM_RETURN_IF_ERROR(kernels::MoeExpertsFwd(ctx, h, topk_idx, topk_weight, w.experts, out,
                                                acts != nullptr ? &acts->experts : nullptr));
  if (acts != nullptr) {
    acts->scores = scores;
    acts->topk_idx = topk_idx;
    acts->topk_weight = topk_weight;
  }

  // Shared expert last (rule 4): the GEMM's accumulate adds it once per element, after the
  // routed sum is complete, so out = routed + shared.
  if (config.shared_intermediate_size() > 0) {
    TANDEM_RETURN_IF_ERROR(Swiglu(ctx, w.shared_gate, w.shared_up, w.shared_down, h, out,
                                  /*accumulate=*/true, acts != nullptr ? &acts->mlp : nullptr));
  }
  return absl::OkStatus();
}

}  // namespace tandem::model::internal

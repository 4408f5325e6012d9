// Backward of the attention and FFN blocks (MODEL.md §2.3, §3, §3b), composed from the kernels'
// backward entry points in the reverse order of hybrid_model_blocks.cc. Every weight gradient is
// accumulated by one kernel call with a fixed reduction order, and where a block input feeds two
// branches their contributions to dh are added in a fixed order (GEMM accumulate), so the result
// never depends on the thread count.
#include "model/hybrid_model_backward_blocks.h"

#include <cmath>

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

namespace tandem::model::internal {
namespace {

using kernels::GemmNN;
using kernels::GemmTN;

// An f32 buffer on ctx's device.
Tensor F32(const Context& ctx, Shape shape) { return Buffer(ctx, std::move(shape)); }

// The forward's attention scale s = D^-1/2, rounded once from double.
float AttentionScale(int64_t head_dim) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

kernels::QkNormRopeParams NormRopeParams(const ModelConfig& config) {
  kernels::QkNormRopeParams p;
  p.rotary_dim = config.rotary_dim();
  p.theta = config.rope_theta;
  p.eps = static_cast<float>(config.rms_norm_eps);
  return p;
}

// Backward of the fused qkv projection and the q/k norm + RoPE: from dq [T, H, D] and dk, dv
// [T, Hkv, D] (gradients of the attention kernel's inputs), accumulates the qkv and q/k norm
// weight gradients and writes (or, with `accumulate`, adds) d h into dh [T, Dm].
absl::Status QkvBwd(const Context& ctx, const ModelConfig& config, const LayerWeights& w,
                    const PackedSequences& seqs, const Tensor& h, const AttentionActivations& a,
                    const Tensor& dq, const Tensor& dk, const Tensor& dv, Tensor& dh,
                    bool accumulate, LayerWeights& g) {
  const int64_t T = h.dim(0);
  const int64_t H = dq.dim(1);
  const int64_t Hkv = dk.dim(1);
  const int64_t D = dq.dim(2);
  const kernels::QkNormRopeParams p = NormRopeParams(config);
  Tensor dq_raw = F32(ctx, {T, H, D});    // [T, H, D]
  Tensor dk_raw = F32(ctx, {T, Hkv, D});  // [T, Hkv, D]
  TANDEM_RETURN_IF_ERROR(kernels::QkNormRopeBwd(ctx, p, a.q_raw, w.query_layernorm, seqs.positions,
                                                a.q_rstd, dq, dq_raw, g.query_layernorm));
  TANDEM_RETURN_IF_ERROR(kernels::QkNormRopeBwd(ctx, p, a.k_raw, w.key_layernorm, seqs.positions,
                                                a.k_rstd, dk, dk_raw, g.key_layernorm));
  Tensor dqkv = F32(ctx, {T, (H + 2 * Hkv) * D});  // [T, (H + 2·Hkv)·D]
  TANDEM_RETURN_IF_ERROR(ScatterColumns(ctx, dq_raw, 0, dqkv));
  TANDEM_RETURN_IF_ERROR(ScatterColumns(ctx, dk_raw, H * D, dqkv));
  TANDEM_RETURN_IF_ERROR(ScatterColumns(ctx, dv, (H + Hkv) * D, dqkv));
  TANDEM_RETURN_IF_ERROR(GemmTN(ctx, dqkv, h, g.qkv, /*accumulate=*/true));
  return GemmNN(ctx, dqkv, w.qkv, dh, accumulate);
}

// Backward of out = down(silu(gate(h)) · up(h)): weight gradients accumulated, d h written (or
// added, with `accumulate`) into dh [T, Dm].
absl::Status SwigluMlpBwd(const Context& ctx, const Tensor& gate_w, const Tensor& up_w,
                          const Tensor& down_w, const Tensor& h, const SwigluActivations& a,
                          const Tensor& dout, Tensor& dh, bool accumulate, Tensor& g_gate,
                          Tensor& g_up, Tensor& g_down) {
  const int64_t T = h.dim(0);
  const int64_t I = gate_w.dim(0);
  Tensor dact = F32(ctx, {T, I});   // [T, I]
  Tensor dgate = F32(ctx, {T, I});  // [T, I]
  Tensor dup = F32(ctx, {T, I});    // [T, I]
  TANDEM_RETURN_IF_ERROR(GemmNN(ctx, dout, down_w, dact));
  TANDEM_RETURN_IF_ERROR(GemmTN(ctx, dout, a.act, g_down, /*accumulate=*/true));
  TANDEM_RETURN_IF_ERROR(kernels::SwigluBwd(ctx, a.gate, a.up, dact, dgate, dup));
  TANDEM_RETURN_IF_ERROR(GemmTN(ctx, dgate, h, g_gate, /*accumulate=*/true));
  TANDEM_RETURN_IF_ERROR(GemmTN(ctx, dup, h, g_up, /*accumulate=*/true));
  TANDEM_RETURN_IF_ERROR(GemmNN(ctx, dgate, gate_w, dh, accumulate));
  return GemmNN(ctx, dup, up_w, dh, /*accumulate=*/true);
}

}  // namespace

absl::Status LinearAttentionBlockBwd(const Context& ctx, const ModelConfig& config, int64_t layer,
                                     const LayerWeights& w, const PackedSequences& seqs,
                                     const Tensor& h, const AttentionActivations& a,
                                     const Tensor& dout, Tensor& dh, LayerWeights& g) {
  const int64_t T = h.dim(0);
  const int64_t H = config.num_attention_heads;
  const int64_t D = config.head_dim;
  // out = y · denseᵀ
  Tensor dy = F32(ctx, {T, H * D});  // [T, H·D]
  TANDEM_RETURN_IF_ERROR(GemmNN(ctx, dout, w.dense, dy));
  TANDEM_RETURN_IF_ERROR(GemmTN(ctx, dout, a.y, g.dense, /*accumulate=*/true));

  // y = GroupRmsNorm(o) · g_norm · sigmoid(gate), gate = h · g_projᵀ
  TANDEM_ASSIGN_OR_RETURN(Tensor o_flat, a.o.Reshape({T, H * D}));   // [T, H·D]
  Tensor d_o = F32(ctx, {T, H, D});                                  // [T, H, D]
  TANDEM_ASSIGN_OR_RETURN(Tensor do_flat, d_o.Reshape({T, H * D}));  // [T, H·D]
  Tensor dgate = F32(ctx, {T, H * D});                               // [T, H·D]
  kernels::GroupRmsNormGateParams gp{config.group_norm_size,
                                     static_cast<float>(config.rms_norm_eps)};
  TANDEM_RETURN_IF_ERROR(kernels::GroupRmsNormGateBwd(ctx, gp, o_flat, a.gate, w.g_norm, a.y_rstd,
                                                      dy, do_flat, dgate, g.g_norm));
  TANDEM_RETURN_IF_ERROR(GemmTN(ctx, dgate, h, g.g_proj, /*accumulate=*/true));
  TANDEM_RETURN_IF_ERROR(GemmNN(ctx, dgate, w.g_proj, dh));

  // o = LinearAttention(q, k, v), from the saved chunk-start states.
  Tensor decay = Tensor::FromVector(config.LinearDecay(layer), {H});  // [H]
  kernels::LinearAttentionParams p{H, D, AttentionScale(D)};
  Tensor dq = F32(ctx, {T, H, D});  // [T, H, D]
  Tensor dk = F32(ctx, {T, H, D});  // [T, H, D]
  Tensor dv = F32(ctx, {T, H, D});  // [T, H, D]
  Tensor no_d_initial_state;
  TANDEM_RETURN_IF_ERROR(kernels::LinearAttentionBwd(ctx, p, a.q, a.k, a.v, decay, seqs.cu_seqlens,
                                                     a.chunk_states, d_o, dq, dk, dv,
                                                     no_d_initial_state));
  return QkvBwd(ctx, config, w, seqs, h, a, dq, dk, dv, dh, /*accumulate=*/true, g);
}

absl::Status SoftmaxAttentionBlockBwd(const Context& ctx, const ModelConfig& config,
                                      const LayerWeights& w, const PackedSequences& seqs,
                                      const Tensor& h, const AttentionActivations& a,
                                      const Tensor& dout, Tensor& dh, LayerWeights& g) {
  const int64_t T = h.dim(0);
  const int64_t H = config.num_attention_heads;
  const int64_t Hkv = config.num_key_value_heads;
  const int64_t D = config.head_dim;
  // out = o · denseᵀ
  TANDEM_ASSIGN_OR_RETURN(Tensor o_flat, a.o.Reshape({T, H * D}));   // [T, H·D]
  Tensor d_o = F32(ctx, {T, H, D});                                  // [T, H, D]
  TANDEM_ASSIGN_OR_RETURN(Tensor do_flat, d_o.Reshape({T, H * D}));  // [T, H·D]
  TANDEM_RETURN_IF_ERROR(GemmNN(ctx, dout, w.dense, do_flat));
  TANDEM_RETURN_IF_ERROR(GemmTN(ctx, dout, o_flat, g.dense, /*accumulate=*/true));

  kernels::SoftmaxAttentionParams p{H, Hkv, D, AttentionScale(D)};
  Tensor dq = F32(ctx, {T, H, D});    // [T, H, D]
  Tensor dk = F32(ctx, {T, Hkv, D});  // [T, Hkv, D]
  Tensor dv = F32(ctx, {T, Hkv, D});  // [T, Hkv, D]
  TANDEM_RETURN_IF_ERROR(kernels::SoftmaxAttentionBwd(ctx, p, a.q, a.k, a.v, seqs.cu_seqlens, a.o,
                                                      a.lse, d_o, dq, dk, dv));
  return QkvBwd(ctx, config, w, seqs, h, a, dq, dk, dv, dh, /*accumulate=*/false, g);
}

absl::Status DenseMlpBlockBwd(const Context& ctx, const LayerWeights& w, const Tensor& h,
                              const FfnActivations& a, const Tensor& dout, Tensor& dh,
                              LayerWeights& g) {
  return SwigluMlpBwd(ctx, w.mlp_gate, w.mlp_up, w.mlp_down, h, a.mlp, dout, dh,
                      /*accumulate=*/false, g.mlp_gate, g.mlp_up, g.mlp_down);
}

absl::Status MoeBlockBwd(const Context& ctx, const ModelConfig& config, const LayerWeights& w,
                         const Tensor& h, const FfnActivations& a, const Tensor& dout, Tensor& dh,
                         LayerWeights& g) {
  const int64_t T = h.dim(0);
  const int64_t E = config.num_experts;
  const int64_t K = config.num_experts_per_tok;
  // Routed experts: out = Σ_k w_k · expert_k(h).
  Tensor dtopk_weight = F32(ctx, {T, K});  // [T, K]
  TANDEM_RETURN_IF_ERROR(kernels::MoeExpertsBwd(ctx, h, a.topk_idx, a.topk_weight, w.experts,
                                                a.experts, dout, dh, dtopk_weight, g.experts));

  // Router: w = normalised top-k of sigmoid(h · routerᵀ).
  kernels::MoeRouteParams rp;
  rp.num_experts = E;
  rp.top_k = K;
  rp.n_group = config.n_group;
  rp.topk_group = config.topk_group;
  rp.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
  rp.norm_topk_prob = config.norm_topk_prob;
  Tensor dlogits = F32(ctx, {T, E});  // [T, E]
  TANDEM_RETURN_IF_ERROR(
      kernels::MoeRouteBwd(ctx, rp, a.scores, a.topk_idx, dtopk_weight, dlogits));
  // The fp32 router's gradient reads the stream as the forward's router did: widened back to f32
  // where it is stored in bf16 (GPU), so both GEMMs below are all-fp32.
  TANDEM_ASSIGN_OR_RETURN(Tensor h32, AsF32(ctx, h));
  TANDEM_RETURN_IF_ERROR(GemmTN(ctx, dlogits, h32, g.router, /*accumulate=*/true));
  TANDEM_RETURN_IF_ERROR(GemmNN(ctx, dlogits, w.router, dh, /*accumulate=*/true));

  // Shared expert, added last in the forward.
  if (config.shared_intermediate_size() == 0) return absl::OkStatus();
  return SwigluMlpBwd(ctx, w.shared_gate, w.shared_up, w.shared_down, h, a.mlp, dout, dh,
                      /*accumulate=*/true, g.shared_gate, g.shared_up, g.shared_down);
}

}  // namespace tandem::model::internal

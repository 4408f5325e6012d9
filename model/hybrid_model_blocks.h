// The blocks HybridModel::Forward composes, one function each (MODEL.md §2.3, §3, §3b): the two
// attention kinds and the two FFN kinds. Each reads the normalised residual stream h [T, Dm] and
// writes the block's output [T, Dm], which the caller adds back into the residual stream. Internal
// to model/; every block is row-local or per-sequence, so packing never changes a row's bits.
// The attention blocks are projection → core → output; ForwardStep (hybrid_model_step.cc) calls
// the same projection and output pieces around its cache-reading cores.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/linear_attention/linear_attention.h"
#include "kernels/rms_norm/rms_norm.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "model/activations.h"
#include "model/config.h"
#include "model/device_ops.h"
#include "model/hybrid_model.h"
#include "model/weights.h"

namespace tandem::model::internal {

// The sequence-local inputs every attention block needs.
struct PackedSequences {
  Tensor cu_seqlens;  // [B + 1] i32
  Tensor positions;   // [T] i32, restarting at 0 in each sequence
};

// The fp32 residual stream of MODEL.md §1.4, with the residual add fused into the next norm:
// Norm() first adds the pending block output `delta` into x (if any), then h = RmsNorm(x) · w.
struct ResidualStream {
  Tensor x;      // [T, Dm] the residual stream
  Tensor delta;  // [T, Dm] the last block's output, not yet added into x
  Tensor h;      // [T, Dm] the normalised stream the next block reads
  Tensor rstd;   // [T]
  bool delta_pending = false;

  // Buffers on ctx's device: x, delta [T, Dm] and rstd [T] f32; h [T, Dm] in GemmInputDType (it
  // only enters GEMMs; the router widens it back to f32).
  static ResidualStream Allocate(const Context& ctx, int64_t T, int64_t Dm) {
    const Device dev = ctx.device();
    return {Tensor::Empty({T, Dm}, DType::kF32, dev), Tensor::Empty({T, Dm}, DType::kF32, dev),
            Tensor::Empty({T, Dm}, GemmInputDType(ctx), dev), Tensor::Empty({T}, DType::kF32, dev)};
  }
  absl::Status Norm(const Context& ctx, const Tensor& w, float eps) {
    if (!delta_pending) return kernels::RmsNormFwd(ctx, x, w, eps, h, rstd);
    delta_pending = false;
    return kernels::AddRmsNormFwd(ctx, x, delta, w, eps, /*sum=*/x, h, rstd);
  }
  // Copies of x, h and rstd after a Norm() (the buffers are reused), for the backward pass.
  void Keep(Tensor& x_out, Tensor& h_out, Tensor& rstd_out) const {
    x_out = x.Clone();
    h_out = h.Clone();
    rstd_out = rstd.Clone();
  }
};

// q [T, H, D], k, v [T, Hkv, D] from the fused projection of h; q and k RMS-normalised per head
// (query_layernorm / key_layernorm) and rotated by partial NeoX RoPE at `positions` [T] i32.
// q, k and v are stored in KvCacheDType(ctx.device()): f32 on the CPU, bf16 on the GPU (what the
// cache holds and the tensor-core attention kernels read), rounded once from the fp32 norm/RoPE.
// Every function below that takes an activations pointer keeps its intermediate tensors there
// for the backward pass (hybrid_model_backward.cc) when it is non-null.
// Buffers live on ctx's device; the weights must be there too (model/device_weights.h).
struct Qkv {
  Tensor q, k, v;
};
absl::StatusOr<Qkv> ProjectQkv(const Context& ctx, const ModelConfig& config, int64_t kv_heads,
                               const LayerWeights& w, const Tensor& positions, const Tensor& h,
                               AttentionActivations* acts = nullptr);

// Kernel parameters of the two attention kinds (scale D^-1/2, rounded once from double).
kernels::SoftmaxAttentionParams SoftmaxParams(const ModelConfig& config);
kernels::LinearAttentionParams LinearParams(const ModelConfig& config);

// out [T, Dm] = dense(o) for softmax layers, o [T, H, D].
absl::Status SoftmaxAttentionOutput(const Context& ctx, const ModelConfig& config,
                                    const LayerWeights& w, const Tensor& o, Tensor& out);
// out [T, Dm] = dense(GroupRmsNormGate(o, g_proj(h))) for linear layers; the gate is computed
// from the attention input h, not from o.
absl::Status LinearAttentionOutput(const Context& ctx, const ModelConfig& config,
                                   const LayerWeights& w, const Tensor& h, const Tensor& o,
                                   Tensor& out, AttentionActivations* acts = nullptr);

// The FFN half of a decoder layer: stream.h = RmsNorm(x) (post_attention_layernorm, adding the
// pending attention output first), stream.delta = FFN(stream.h), left pending.
absl::Status FeedForwardHalf(const Context& ctx, const ModelConfig& config, int64_t layer,
                             const LayerWeights& w, ResidualStream& stream,
                             LayerActivations* acts = nullptr);

// out [T, Dm] = dense(GroupRmsNormGate(LinearAttention(rope(norm(q)), rope(norm(k)), v),
//                                      g_proj(h))).
absl::Status LinearAttentionBlock(const Context& ctx, const ModelConfig& config, int64_t layer,
                                  const LayerWeights& w, const PackedSequences& seqs,
                                  const Tensor& h, Tensor& out,
                                  AttentionActivations* acts = nullptr);

// out [T, Dm] = dense(SoftmaxAttention(rope(norm(q)), rope(norm(k)), v)), causal GQA.
absl::Status SoftmaxAttentionBlock(const Context& ctx, const ModelConfig& config,
                                   const LayerWeights& w, const PackedSequences& seqs,
                                   const Tensor& h, Tensor& out,
                                   AttentionActivations* acts = nullptr);

// out [T, Dm] = down(silu(gate(h)) · up(h)) with the dense-MLP weights.
absl::Status DenseMlpBlock(const Context& ctx, const LayerWeights& w, const Tensor& h, Tensor& out,
                           FfnActivations* acts = nullptr);

// out [T, Dm] = Σ_k w_k · expert_k(h)  (rank order)  +  shared(h)  (added last, contract rule 4).
absl::Status MoeBlock(const Context& ctx, const ModelConfig& config, const LayerWeights& w,
                      const Tensor& h, Tensor& out, FfnActivations* acts = nullptr);

// HybridModel::Forward's pass (hybrid_model.cc). With `acts` every layer's intermediate tensors
// (or, with acts->keep_layers = false, only each layer's input residual) are kept there for the
// backward pass; the log-probs are the same bits either way.
absl::StatusOr<Tensor> ForwardPass(const Context& ctx, const ModelConfig& config,
                                   const ModelWeights& weights, const ForwardInput& input,
                                   ForwardActivations* acts);

// Runs layer `layer` of the pass again from acts.x (its input residual) and fills the rest of
// `acts` with the bits the full pass keeps (per-layer checkpointing).
absl::Status RecomputeLayer(const Context& ctx, const ModelConfig& config, int64_t layer,
                            const LayerWeights& w, const PackedSequences& seqs,
                            LayerActivations& acts);

}  // namespace tandem::model::internal

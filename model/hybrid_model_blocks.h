// The blocks HybridModel::Forward composes, one function each (MODEL.md §2.3, §3, §3b): the two
// attention kinds and the two FFN kinds. Each reads the normalised residual stream h [T, Dm] and
// writes the block's output [T, Dm], which the caller adds back into the residual stream. Internal
// to model/; every block is row-local or per-sequence, so packing never changes a row's bits.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "model/config.h"
#include "model/weights.h"

namespace tandem::model::internal {

// The sequence-local inputs every attention block needs.
struct PackedSequences {
  Tensor cu_seqlens;  // [B + 1] i32
  Tensor positions;   // [T] i32, restarting at 0 in each sequence
};

// out [T, Dm] = dense(GroupRmsNormGate(LinearAttention(rope(norm(q)), rope(norm(k)), v),
//                                      g_proj(h))).
absl::Status LinearAttentionBlock(const Context& ctx, const ModelConfig& config, int64_t layer,
                                  const LayerWeights& w, const PackedSequences& seqs,
                                  const Tensor& h, Tensor& out);

// out [T, Dm] = dense(SoftmaxAttention(rope(norm(q)), rope(norm(k)), v)), causal GQA.
absl::Status SoftmaxAttentionBlock(const Context& ctx, const ModelConfig& config,
                                   const LayerWeights& w, const PackedSequences& seqs,
                                   const Tensor& h, Tensor& out);

// out [T, Dm] = down(silu(gate(h)) · up(h)) with the dense-MLP weights.
absl::Status DenseMlpBlock(const Context& ctx, const LayerWeights& w, const Tensor& h, Tensor& out);

// out [T, Dm] = Σ_k w_k · expert_k(h)  (rank order)  +  shared(h)  (added last, contract rule 4).
absl::Status MoeBlock(const Context& ctx, const ModelConfig& config, const LayerWeights& w,
                      const Tensor& h, Tensor& out);

}  // namespace tandem::model::internal

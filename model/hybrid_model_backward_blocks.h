// Backward of the blocks in hybrid_model_blocks.h, one function each, in the reverse order of the
// forward composition. Each reads the block's input h [T, Dm], the activations its forward kept
// and dout [T, Dm] (d loss / d block output), writes dh [T, Dm] (d loss / d h, overwritten) and
// accumulates (+=) the block's weight gradients into `g`. Internal to model/.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "model/activations.h"
#include "model/config.h"
#include "model/hybrid_model_blocks.h"
#include "model/weights.h"

namespace tandem::model::internal {

absl::Status LinearAttentionBlockBwd(const Context& ctx, const ModelConfig& config, int64_t layer,
                                     const LayerWeights& w, const PackedSequences& seqs,
                                     const Tensor& h, const AttentionActivations& acts,
                                     const Tensor& dout, Tensor& dh, LayerWeights& g);

absl::Status SoftmaxAttentionBlockBwd(const Context& ctx, const ModelConfig& config,
                                      const LayerWeights& w, const PackedSequences& seqs,
                                      const Tensor& h, const AttentionActivations& acts,
                                      const Tensor& dout, Tensor& dh, LayerWeights& g);

absl::Status DenseMlpBlockBwd(const Context& ctx, const LayerWeights& w, const Tensor& h,
                              const FfnActivations& acts, const Tensor& dout, Tensor& dh,
                              LayerWeights& g);

// The router gets its gradient through the top-k weights (selection held fixed); the expert bias
// gets none.
absl::Status MoeBlockBwd(const Context& ctx, const ModelConfig& config, const LayerWeights& w,
                         const Tensor& h, const FfnActivations& acts, const Tensor& dout,
                         Tensor& dh, LayerWeights& g);

}  // namespace tandem::model::internal

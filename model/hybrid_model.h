// HybridModel: the Ring-linear forward pass composed from kernels/ (MODEL.md §1.4, §2.3, §3, §3b):
//   x = embed(tokens)
//   per layer: h = x + Attn(RmsNorm(x)); x = h + FFN(RmsNorm(h))   (residual add fused into the
//   norm) logprobs = log_softmax(lm_head(RmsNorm(x)) / temperature)[target]
// over packed sequences: sequence b is tokens[cu_seqlens[b] .. cu_seqlens[b+1]), positions restart
// at 0 and linear-attention chunks restart at each sequence's start (contract rule 3). Every op is
// row-local or per-sequence, so a sequence's log-probs are bitwise the same alone or packed.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "model/config.h"
#include "model/weights.h"

namespace tandem::model {

struct ForwardInput {
  Tensor tokens;      // [T] i32, token ids in [0, V)
  Tensor cu_seqlens;  // [B + 1] i32, cu_seqlens[0] = 0, non-decreasing, cu_seqlens[B] = T
  Tensor targets;     // [T] i32: the token whose log-prob is wanted at each position; −1 = none
  float temperature = 1.0f;
};

class HybridModel {
 public:
  HybridModel(ModelConfig config, ModelWeights weights);

  const ModelConfig& config() const { return config_; }
  ModelWeights& weights() { return weights_; }
  const ModelWeights& weights() const { return weights_; }

  // logprob [T] f32: log p(targets[t] | tokens of t's sequence up to and including t), and 0 where
  // targets[t] = −1. Bad ids or offsets are InvalidArgument naming the field.
  absl::StatusOr<Tensor> Forward(const Context& ctx, const ForwardInput& input) const;

 private:
  ModelConfig config_;
  ModelWeights weights_;
};

}  // namespace tandem::model

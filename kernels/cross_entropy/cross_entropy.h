// Cross-entropy for SFT: the mean over unmasked tokens of −log p(target), built on the same
// row log-sum-exp as the log-probs (lm_head_logprob), so SFT and RL read the same numbers.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

// logits [T, V], targets [T] i32, mask [T] f32 (token weights, usually 0/1).
// loss [1] = Σ_t mask_t · (−logprob_t) / max(Σ_t mask_t, 1), summed over t ascending; lse [T]
// saved.
absl::Status CrossEntropyFwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, Tensor& loss, Tensor& lse);

// dlogits [T, V] = dloss · ∂loss/∂logits.
absl::Status CrossEntropyBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, const Tensor& lse, float dloss, Tensor& dlogits);

}  // namespace tandem::kernels

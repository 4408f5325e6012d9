// Cross-entropy for SFT: the mean over unmasked tokens of −log p(target), built on the same
// row log-sum-exp as the log-probs (lm_head_logprob), so SFT and RL read the same numbers.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

// logits [T, V], targets [T] i32, mask [T] f32 (token weights, usually 0/1).
// loss [1] = Σ_t mask_t · (−logprob_t) / max(Σ_t mask_t, 1), summed over t ascending; lse [T]
// saved. logprob_t is LogprobFromLogits' value at temperature 1 (the same bits). A target must be
// in [0, V) where mask_t != 0 (InvalidArgument otherwise); where mask_t == 0 the token is skipped
// and its target may be anything (e.g. −100 padding).
// Threads split the rows; the two sums over t run serially, so the loss is thread-invariant.
absl::Status CrossEntropyFwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, Tensor& loss, Tensor& lse);

// dlogits [T, V] = dloss · ∂loss/∂logits = dloss · mask_t / max(Σ mask, 1) · (softmax − onehot);
// rows with mask_t == 0 get exact zeros.
absl::Status CrossEntropyBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, const Tensor& lse, float dloss, Tensor& dlogits);

}  // namespace tandem::kernels

// Cross-entropy for SFT on the GPU: the semantics of kernels::CrossEntropyFwd / Bwd
// (cross_entropy.h), fp32, all tensors on the GPU. The per-token log-prob is
// cuda::LogprobFromLogits at temperature 1 (the same bits the RL path reads); the loss sums run
// in one thread over t ascending (the CPU's order), so the loss is deterministic and depends on
// other tokens only through those sums, as on the CPU.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// logits [T, V] f32, targets [T] i32, mask [T] f32; loss [1], lse [T] f32. Targets stay on the
// GPU and are not checked: an out-of-range target at a token with mask != 0 makes the loss NaN
// (where mask == 0 any target is fine, e.g. −100 padding).
absl::Status CrossEntropyFwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, Tensor& loss, Tensor& lse);

// dlogits [T, V] = dloss · mask_t / max(Σ mask, 1) · (softmax − onehot); masked rows exact zeros.
absl::Status CrossEntropyBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, const Tensor& lse, float dloss, Tensor& dlogits);

}  // namespace tandem::kernels::cuda

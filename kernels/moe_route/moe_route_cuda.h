// MoE router on the GPU: the semantics of kernels::MoeRouteFwd / MoeRouteBwd (moe_route.h), fp32
// (contract rule 4), all tensors on the GPU. One thread routes one token with the CPU's sequence
// of "strictly greater wins" scans in ascending index order (ties to the lower group / expert),
// so a token's routing never depends on the batch. sigmoid uses expf, which may differ from the
// host's std::exp by an ulp or two: scores agree with the CPU to rounding, and the selection
// agrees unless two candidates are that close. The backward has no transcendental functions and
// evaluates the CPU's expressions in its order without FMA contraction: the CPU's bits.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/moe_route/moe_route.h"

namespace tandem::kernels::cuda {

// Limits of the one-thread-per-token kernel (InvalidArgument beyond them).
inline constexpr int64_t kMoeRouteMaxExperts = 1024;
inline constexpr int64_t kMoeRouteMaxGroups = 64;
inline constexpr int64_t kMoeRouteMaxTopK = 64;

// logits [T, E], expert_bias [E] f32; topk_idx [T, K] i32, topk_weight [T, K] f32, scores [T, E].
absl::Status MoeRouteFwd(const Context& ctx, const MoeRouteParams& p, const Tensor& logits,
                         const Tensor& expert_bias, Tensor& topk_idx, Tensor& topk_weight,
                         Tensor& scores);

// dlogits [T, E] overwritten. topk_idx stays on the GPU and is not checked: an index outside
// [0, E) is skipped.
absl::Status MoeRouteBwd(const Context& ctx, const MoeRouteParams& p, const Tensor& scores,
                         const Tensor& topk_idx, const Tensor& dtopk_weight, Tensor& dlogits);

}  // namespace tandem::kernels::cuda

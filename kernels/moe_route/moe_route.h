// MoE router (MODEL.md §3b), fp32 (contract rule 4):
//   p = sigmoid(logits);  b = p + expert_bias (selection only)
//   group score = sum of the top-2 b in each of n_group contiguous groups (a group of one expert
//   scores its single b); keep the topk_group best groups; idx = top-k of b over the kept
//   experts, in descending b with ties to the lower index (group ties too);
//   w_k = p[idx_k] / (Σ_k p[idx_k] + 1e-20) · routed_scaling_factor
//   (without norm_topk_prob: w_k = p[idx_k] · routed_scaling_factor). Σ over k ascending.
// idx is returned in rank order, which is the order experts' outputs are combined in.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

struct MoeRouteParams {
  int64_t num_experts = 0;  // E
  int64_t top_k = 0;        // K
  int64_t n_group = 1;      // groups of E / n_group experts
  int64_t topk_group = 1;   // groups kept
  float routed_scaling_factor = 1.0f;
  bool norm_topk_prob = true;
};

// logits [T, E] (router GEMM output), expert_bias [E]; writes topk_idx [T, K] i32,
// topk_weight [T, K] f32, scores [T, E] = sigmoid(logits) (saved for backward).
absl::Status MoeRouteFwd(const Context& ctx, const MoeRouteParams& p, const Tensor& logits,
                         const Tensor& expert_bias, Tensor& topk_idx, Tensor& topk_weight,
                         Tensor& scores);

// dlogits [T, E] (overwritten) from dtopk_weight [T, K]; the selection is treated as constant and
// the bias gets no gradient (it is updated by the load-balancing rule, not by backprop).
absl::Status MoeRouteBwd(const Context& ctx, const MoeRouteParams& p, const Tensor& scores,
                         const Tensor& topk_idx, const Tensor& dtopk_weight, Tensor& dlogits);

}  // namespace tandem::kernels

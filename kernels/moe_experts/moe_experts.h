// Routed experts: each token's K selected SwiGLU experts, combined in rank order (contract rule 4):
//   y_{t,k} = down_e(silu(gate_e(x_t)) · up_e(x_t)),  e = topk_idx[t, k]
//   out_t   = Σ_{k=0..K−1} topk_weight[t, k] · y_{t,k}        (k ascending, fp32)
// Tokens are grouped by expert for the GEMMs (ascending token order within an expert); since GEMM
// rows are batch-invariant, y_{t,k} does not depend on which other tokens chose the same expert.
// The shared expert is a dense SwiGLU the caller adds after this sum.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

struct MoeExpertsWeights {
  Tensor gate;  // [E, I, Dm]
  Tensor up;    // [E, I, Dm]
  Tensor down;  // [E, Dm, I]
};

// What the forward saves for the backward pass (rows are (t, k) pairs, row = t·K + k).
struct MoeExpertsActivations {
  Tensor gate;  // [T·K, I]  gate projection before silu
  Tensor up;    // [T·K, I]
  Tensor y;     // [T·K, Dm] expert output before weighting
};

// x [T, Dm], topk_idx [T, K] i32, topk_weight [T, K]; out [T, Dm] overwritten. `acts` is
// (re)allocated and filled when non-null.
absl::Status MoeExpertsFwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w, Tensor& out,
                           MoeExpertsActivations* acts);

// dx [T, Dm] and dtopk_weight [T, K] overwritten; grads.{gate, up, down} accumulated (+=), each
// expert's rows summed in ascending token order.
absl::Status MoeExpertsBwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w,
                           const MoeExpertsActivations& acts, const Tensor& dout, Tensor& dx,
                           Tensor& dtopk_weight, MoeExpertsWeights& grads);

}  // namespace tandem::kernels

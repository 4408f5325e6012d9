// Routed experts on the GPU: the semantics of kernels::MoeExpertsFwd / MoeExpertsBwd
// (moe_experts.h) with every tensor on the device. Contract rules 1 and 4: the (t, k) rows are
// grouped by expert with a deterministic counting sort (ascending (t, k) within an expert), every
// expert GEMM does cuda::GemmNT's tile arithmetic (one grouped launch per projection, expert
// offsets kept on the device, no host synchronisation; the tile height changes with the batch
// but not a row's bits), and each token's K outputs are summed in fp32 in top-k rank order. A
// token's out row is therefore the same bits whether it is alone or in any batch, with any routing
// of the others.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/moe_experts/moe_experts.h"

namespace tandem::kernels::cuda {

// Dtypes (all on the GPU):
//   x [T, Dm]            bf16 or f32 (rounded to bf16 where it enters the GEMMs)
//   topk_idx [T, K]      i32 in [0, E). An index outside it is found on the device (no host
//                        synchronisation): its rows are dropped, and the next MoeExperts call on
//                        this context (after this one has run) fails with InvalidArgument
//   Dm and I             multiples of 8 (the tiles move 16-byte chunks)
//   topk_weight [T, K]   f32
//   w.gate, w.up [E, I, Dm], w.down [E, Dm, I]   bf16
//   out [T, Dm]          bf16 or f32 (the fp32 sum, rounded once when bf16)
//   acts (when non-null) (re)allocated on the GPU as f32 [T·K, I], [T·K, I], [T·K, Dm]; rows in
//                        (t, k) order as on the CPU
// The expert GEMMs take bf16 operands with fp32 accumulation: the intermediate h = silu(gate)·up
// is rounded to bf16 before the down projection. Scratch comes from a per-context buffer that
// grows to the largest call and is kept (calls on one context from one thread at a time).
absl::Status MoeExpertsFwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w, Tensor& out,
                           MoeExpertsActivations* acts);

// Backward. x, topk_idx, topk_weight, w as above; acts f32 as the forward fills them;
//   dout [T, Dm]         bf16 or f32
//   dx [T, Dm]           bf16 or f32, overwritten (fp32 sum over k ascending, rounded once)
//   dtopk_weight [T, K]  f32, overwritten
//   grads.{gate, up, down}  f32, same shapes as w, accumulated (+=): one fp32 accumulator per
//                        element walks the expert's rows in ascending (t, k) order (bf16
//                        products), added to the gradient once.
// Every GEMM operand is rounded to bf16 (tensor cores); products and sums are fp32.
absl::Status MoeExpertsBwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w,
                           const MoeExpertsActivations& acts, const Tensor& dout, Tensor& dx,
                           Tensor& dtopk_weight, MoeExpertsWeights& grads);

}  // namespace tandem::kernels::cuda

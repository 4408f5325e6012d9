// The sm_90a wgmma path of the CUDA softmax attention forward, seen from the host: whether the
// forward takes it, and a probe that runs the tile products through both instruction paths (wgmma
// and chained mma.sync) so a test can check, on the device, that a row's bits do not depend on
// which one ran — the fact behind decode (mma.sync) == forward (wgmma) bitwise.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// True when the bf16 forward at this head dim runs on wgmma: a build with sm_90a code, a compute
// capability 9.0 device, head dim 64 or 128, and TANDEM_ATTENTION_WGMMA not set to 0 in the
// environment (read once; the mma.sync forward then runs instead, for comparisons).
bool SoftmaxAttentionUsesWgmma(int64_t head_dim);

// One 64-row tile on one warpgroup, all bf16 operands and f32 results on the GPU, d = head_dim:
//   q [64, d], k [64, d]:   s = q·kᵀ [64, 64]   from zero, k steps over d ascending;
//   p [64, 64], v [64, d], c [64, d] f32:  o = c + p·v [64, d], k steps over keys ascending;
// each through wgmma (operands in the forward's swizzled layout) and through chained mma.sync
// m16n8k16 (the decode's layout). Unimplemented when SoftmaxAttentionUsesWgmma(d) is false.
absl::Status SoftmaxAttentionWgmmaProbe(const Context& ctx, int64_t head_dim, const Tensor& q,
                                        const Tensor& k, const Tensor& p, const Tensor& v,
                                        const Tensor& c, Tensor& s_wgmma, Tensor& s_mma,
                                        Tensor& o_wgmma, Tensor& o_mma);

}  // namespace tandem::kernels::cuda

// RMSNorm on the GPU: the semantics of kernels::RmsNormFwd / AddRmsNormFwd / RmsNormBwd
// (rms_norm.h) with every tensor on the device. Math is fp32; storage per tensor:
//   x, delta, sum, y, dy, dx: f32 or bf16 (independently)   w: f32 or bf16   rstd, dw: f32.
// Row reductions (Σx², Σ dn·x) run in one block of kRmsNormThreads threads per row: thread i sums
// elements i, i + kRmsNormThreads, ... ascending, then a fixed tree (warp butterfly, then the warp
// sums pairwise). The order depends only on D, so a row's outputs are the same bits in any batch;
// it is not the CPU's order, so GPU and CPU agree to rounding, not bitwise.
// AddRmsNormFwd rounds sum to its dtype first and normalises the stored value, so it equals
// "sum = x + delta; RmsNormFwd(sum)" bitwise. dw is summed over rows in ascending order (+= into
// dw), without atomics.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

inline constexpr int kRmsNormThreads = 256;

absl::Status RmsNormFwd(const Context& ctx, const Tensor& x, const Tensor& w, float eps, Tensor& y,
                        Tensor& rstd);

// sum may alias x.
absl::Status AddRmsNormFwd(const Context& ctx, const Tensor& x, const Tensor& delta,
                           const Tensor& w, float eps, Tensor& sum, Tensor& y, Tensor& rstd);

// dx [T, D] overwritten; dw [D] accumulated into.
absl::Status RmsNormBwd(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dy, Tensor& dx, Tensor& dw);

}  // namespace tandem::kernels::cuda

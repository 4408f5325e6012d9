// RMSNorm, y = x · rsqrt(mean(x²) + eps) · w, in fp32, optionally fused with the residual add that
// precedes it in a pre-norm block (MODEL.md §4 item 3: the fused and unfused forms must agree, so
// there is only this one implementation).
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

// y = RmsNorm(x) · w.  x, y [T, D]; w [D]; rstd [T] receives rsqrt(mean(x²) + eps) for backward.
// The mean is a sum over d ascending divided by D.
absl::Status RmsNormFwd(const Context& ctx, const Tensor& x, const Tensor& w, float eps, Tensor& y,
                        Tensor& rstd);

// Fused residual add: sum = x + delta (stored), then y = RmsNorm(sum) · w.
// x, delta, sum, y [T, D]; sum may alias x (in-place residual stream update).
absl::Status AddRmsNormFwd(const Context& ctx, const Tensor& x, const Tensor& delta,
                           const Tensor& w, float eps, Tensor& sum, Tensor& y, Tensor& rstd);

// Backward of RmsNormFwd (use `sum` as x for the fused form: the add's gradient is the identity).
// dx [T, D] is overwritten; dw [D] is accumulated into (+=), summing rows in ascending order
// (a running sum from dw's old value, so splitting the rows over several calls gives the same
// bits). Threads split dx by rows and dw by columns.
absl::Status RmsNormBwd(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dy, Tensor& dx, Tensor& dw);

namespace cpu {
// The one RMS routine every norm in Tandem calls (rms_norm, qk_norm_rope, group_rms_norm_gate):
//   ss   = Σ_{i=0..n-1} x_i²      fp32, i ascending, one accumulator (no FMA: built as ISO C++)
//   rstd = 1.0f / std::sqrt(ss / n + eps)   fp32; n converted to float
float RmsRstd(const float* x, int64_t n, float eps);

// Backward through u = x · rstd for one row: given dn = ∂L/∂u [n], writes
//   dx_j = dn_j · rstd − x_j · c,   c = (Σ_i dn_i · x_i) · rstd³ / n   (Σ over i ascending, fp32).
// dx may alias dn (c is computed before any dx is written).
void RmsRowBwd(const float* x, float rstd, const float* dn, int64_t n, float* dx);
}  // namespace cpu

}  // namespace tandem::kernels

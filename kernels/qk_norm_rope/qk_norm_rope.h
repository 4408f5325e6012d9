// Per-head RMSNorm of q or k followed by partial NeoX RoPE (MODEL.md §2.3, §3): the order is
// norm, then rotate. Used by both layer types.
//
// RoPE convention: rotary_dim R of the D head dims rotate, the rest pass through. Pairs are
// (i, i + R/2) for i < R/2 ("rotate half"); inv_freq_i = theta^(-2i/R); the angle is
// pos·inv_freq_i. cos and sin are computed in double and rounded to fp32 (identical on every path),
// then
//   y_i       = n_i · cos − n_{i+R/2} · sin
//   y_{i+R/2} = n_{i+R/2} · cos + n_i · sin          (fp32, no fused multiply-add)
// where n = (x · rstd) · w is the normalised head vector and rstd is cpu::RmsRstd of the head
// (kernels/rms_norm), so with R = 0 the output is bitwise RmsNormFwd over the [T·H, D] rows.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

struct QkNormRopeParams {
  int64_t rotary_dim = 0;  // R: even, 0 <= R <= D; 0 disables RoPE
  double theta = 1e6;      // RoPE base
  float eps = 1e-6f;       // RMSNorm epsilon
};

// x, y [T, H, D]; w [D] (shared by all heads); positions [T] i32 (position within its
// sequence, >= 0); rstd [T, H] saved for backward. y may not alias x.
absl::Status QkNormRopeFwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, Tensor& y, Tensor& rstd);

// dx [T, H, D] overwritten; dw [D] accumulated (+=), summing (t, h) in ascending order (a running
// sum from dw's old value; threads split dw by columns).
absl::Status QkNormRopeBwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, const Tensor& rstd,
                           const Tensor& dy, Tensor& dx, Tensor& dw);

namespace cpu {
// The R/2 rotation factors of one position, the only place they are computed:
//   inv_freq_i = std::pow(theta, -(2.0 * i) / R),  angle = double(pos) · inv_freq_i,
//   cos[i] = float(std::cos(angle)),  sin[i] = float(std::sin(angle)),   0 <= i < R/2.
void RopeCosSin(int64_t pos, int64_t rotary_dim, double theta, float* cos, float* sin);
}  // namespace cpu

}  // namespace tandem::kernels

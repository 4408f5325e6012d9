// The linear-attention output path (MODEL.md §2.3): the H·D channels are split into `groups`
// contiguous groups, each RMS-normalised in fp32, scaled by its slice of w, and gated:
//   y = (x · rstd_g) · w · sigmoid(gate),   sigmoid(g) = 1 / (1 + exp(−g))
// evaluated left to right in fp32, with rstd_g = cpu::RmsRstd of the group's slice
// (kernels/rms_norm).
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

struct GroupRmsNormGateParams {
  int64_t groups = 1;  // number of groups; divides the channel count
  float eps = 1e-6f;
};

// x, gate, y [T, Ch]; w [Ch]; rstd [T, groups] saved for backward.
absl::Status GroupRmsNormGateFwd(const Context& ctx, const GroupRmsNormGateParams& p,
                                 const Tensor& x, const Tensor& gate, const Tensor& w, Tensor& y,
                                 Tensor& rstd);

// dx, dgate [T, Ch] overwritten; dw [Ch] accumulated (+=), rows summed in ascending order (a
// running sum from dw's old value; threads split dw by columns).
absl::Status GroupRmsNormGateBwd(const Context& ctx, const GroupRmsNormGateParams& p,
                                 const Tensor& x, const Tensor& gate, const Tensor& w,
                                 const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgate,
                                 Tensor& dw);

}  // namespace tandem::kernels

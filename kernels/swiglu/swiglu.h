// SwiGLU activation: h = silu(g) · u with silu(g) = g / (1 + exp(−g)), fp32, elementwise. The two
// projections around it are GEMMs; the MLP is down(silu(gate(x)) · up(x)).
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

// gate, up, h [T, I].
absl::Status SwigluFwd(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& h);

// dgate, dup [T, I] overwritten.
absl::Status SwigluBwd(const Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dh,
                       Tensor& dgate, Tensor& dup);

namespace cpu {
// Raw row-range forms used inside the MoE expert loop. n elements.
void SwigluFwd(int64_t n, const float* gate, const float* up, float* h);
void SwigluBwd(int64_t n, const float* gate, const float* up, const float* dh, float* dgate,
               float* dup);
}  // namespace cpu

}  // namespace tandem::kernels

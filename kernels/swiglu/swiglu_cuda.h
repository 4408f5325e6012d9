// SwiGLU on the GPU: the semantics of kernels::SwigluFwd / SwigluBwd (swiglu.h) with tensors on
// the device. fp32 math; each tensor f32 or bf16 (independently). Elementwise, so batch-invariant;
// the GPU's expf differs from the host's std::exp by an ulp or two, so GPU and CPU agree to
// rounding, not bitwise.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// gate, up, h [T, I].
absl::Status SwigluFwd(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& h);

// dgate, dup [T, I] overwritten.
absl::Status SwigluBwd(const Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dh,
                       Tensor& dgate, Tensor& dup);

}  // namespace tandem::kernels::cuda

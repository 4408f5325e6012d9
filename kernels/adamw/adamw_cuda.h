// AdamW on the GPU: the semantics of kernels::AdamWStep (adamw.h) on fp32 master weights, all four
// tensors f32 on the GPU. Elementwise; the bias corrections are computed on the host exactly as
// the CPU does, and every product, sum, quotient and square root is a correctly rounded fp32
// operation in the CPU's order (no FMA contraction), so the step is the CPU's bits.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/adamw/adamw.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// param, grad, m, v: f32 of one shape on the GPU. m and v are updated in place, then param.
absl::Status AdamWStep(const Context& ctx, const AdamWParams& p, Tensor& param, const Tensor& grad,
                       Tensor& m, Tensor& v);

// SumOfSquaresOnDevice (adamw.h) for an f32 tensor on the GPU.
absl::StatusOr<double> SumOfSquares(const Context& ctx, const Tensor& t);

}  // namespace tandem::kernels::cuda

// AdamW on fp32 master weights (decoupled weight decay, Loshchilov & Hutter), elementwise:
//   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//   m̂ = m / (1−β1^step);  v̂ = v / (1−β2^step)
//   p = p − lr·(m̂ / (sqrt(v̂) + eps) + weight_decay·p)
// Elementwise, so the result never depends on the thread count. Gradient clipping and the
// learning-rate schedule are the trainer's; it passes the already-scaled gradient.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // 0 for norms and biases
  int64_t step = 1;           // 1-based step count, for bias correction
};

// param, grad, m, v: f32 of one shape. m and v are updated in place, then param.
absl::Status AdamWStep(const Context& ctx, const AdamWParams& p, Tensor& param, const Tensor& grad,
                       Tensor& m, Tensor& v);

// Sum of squares of every element of `t`, in fp64, in index order (for the global grad norm).
double SumOfSquares(const Tensor& t);

}  // namespace tandem::kernels

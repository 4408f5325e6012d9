// AdamW on fp32 master weights (decoupled weight decay, Loshchilov & Hutter), elementwise:
//   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//   m̂ = m / (1−β1^step);  v̂ = v / (1−β2^step)
//   p = p − lr·(m̂ / (sqrt(v̂) + eps) + weight_decay·p)
// Elementwise, so the result never depends on the thread count. Gradient clipping and the
// learning-rate schedule are the trainer's; it passes the already-scaled gradient.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// The same on t's device (ctx's): on the host exactly SumOfSquares(t); on the GPU in fp64 over
// fixed 8192-element segments (each a fixed tree) whose sums are added in a fixed tree — so the
// result depends on t alone (not on the grid or the device), though its last bits differ from the
// host's serial order. Only a double crosses to the host. f32 tensors only.
absl::StatusOr<double> SumOfSquaresOnDevice(const Context& ctx, const Tensor& t);

}  // namespace tandem::kernels

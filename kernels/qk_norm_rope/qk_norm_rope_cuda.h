// Per-head RMSNorm + partial NeoX RoPE on the GPU: the semantics of kernels::QkNormRopeFwd / Bwd
// (qk_norm_rope.h). Storage: x, y, dy, dx f32 or bf16 (independently), w f32 or bf16, rstd and dw
// f32, all on the GPU; positions [T] i32 on the host or the GPU (read on the host and checked).
// The rotation factors come from cpu::RopeCosSin on the host (double, rounded to fp32) and are
// uploaded, so GPU and CPU rotate by the same fp32 values. Each (t, h) head row is one block of
// kRmsNormThreads threads with cuda::RmsNormFwd's reduction order and arithmetic, so with
// rotary_dim 0 the output is bitwise cuda::RmsNormFwd over the [T·H, D] rows, and a row's bits do
// not depend on the batch. dw walks the (t, h) rows in ascending order, one thread per column.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/qk_norm_rope/qk_norm_rope.h"

namespace tandem::kernels::cuda {

// x, y [T, H, D]; w [D]; positions [T]; rstd [T, H]. y may not alias x.
absl::Status QkNormRopeFwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, Tensor& y, Tensor& rstd);

// dx [T, H, D] overwritten; dw [D] accumulated (+=).
absl::Status QkNormRopeBwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, const Tensor& rstd,
                           const Tensor& dy, Tensor& dx, Tensor& dw);

}  // namespace tandem::kernels::cuda

// CUDA RMSNorm: one block per row for the forward and the row part of the backward (reductions in
// the fixed BlockSum order), and one thread per column for dw, which walks rows in ascending order
// (no atomics, so dw is the same bits on every run). Per-element arithmetic mirrors the CPU code:
// y = (x · rstd) · w, dx = dn · rstd − x · c, dw += dy · (x · rstd), no FMA contraction.
#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/rms_norm/rms_norm_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = kRmsNormThreads;
constexpr int kDwThreads = 64;

struct FwdArgs {
  int64_t d;
  float eps;
  FloatPtr x, delta, sum, w, y;  // delta.p == nullptr: plain RMSNorm (sum unused)
  float* rstd;
};

__global__ void __launch_bounds__(kThreads) RmsNormFwdKernel(const FwdArgs a) {
  const int64_t row = a.d * blockIdx.x;
  const bool fused = a.delta.p != nullptr;
  const FloatPtr src = fused ? a.sum : a.x;  // the values that get normalised
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    float v = a.x.Load(row + i);
    if (fused) v = a.sum.Store(row + i, __fadd_rn(v, a.delta.Load(row + i)));
    ss = __fadd_rn(ss, __fmul_rn(v, v));
  }
  ss = BlockSum<kThreads>(ss);
  const float rstd = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, float(a.d)), a.eps)));
  if (threadIdx.x == 0) a.rstd[blockIdx.x] = rstd;
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {  // sum[i] was written by this thread
    a.y.Store(row + i, __fmul_rn(__fmul_rn(src.Load(row + i), rstd), a.w.Load(i)));
  }
}

struct BwdArgs {
  int64_t t, d;
  FloatPtr x, w, dy, dx;
  const float* rstd;
  float* dw;
};

// dx for one row: dn = dy · w, c = (Σ dn·x) · rstd³ / D, dx = dn · rstd − x · c.
__global__ void __launch_bounds__(kThreads) RmsNormBwdRowKernel(const BwdArgs a) {
  const int64_t row = a.d * blockIdx.x;
  const float rstd = a.rstd[blockIdx.x];
  float dot = 0.0f;
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    const float dn = __fmul_rn(a.dy.Load(row + i), a.w.Load(i));
    dot = __fadd_rn(dot, __fmul_rn(dn, a.x.Load(row + i)));
  }
  dot = BlockSum<kThreads>(dot);
  const float c = __fdiv_rn(__fmul_rn(dot, __fmul_rn(__fmul_rn(rstd, rstd), rstd)), float(a.d));
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    const float dn = __fmul_rn(a.dy.Load(row + i), a.w.Load(i));
    a.dx.Store(row + i, __fsub_rn(__fmul_rn(dn, rstd), __fmul_rn(a.x.Load(row + i), c)));
  }
}

// dw[c] += Σ_t dy[t, c] · (x[t, c] · rstd[t]), rows ascending, one thread per column.
__global__ void __launch_bounds__(kDwThreads) RmsNormBwdDwKernel(const BwdArgs a) {
  const int64_t col = int64_t{blockIdx.x} * kDwThreads + threadIdx.x;
  if (col >= a.d) return;
  float acc = a.dw[col];
#pragma unroll 4
  for (int64_t r = 0; r < a.t; ++r) {
    const int64_t i = r * a.d + col;
    acc = __fadd_rn(acc, __fmul_rn(a.dy.Load(i), __fmul_rn(a.x.Load(i), a.rstd[r])));
  }
  a.dw[col] = acc;
}

DType FloatType(const Tensor& t) { return t.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32; }

absl::Status ExpectFloat(const Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
  return ExpectTensor(t, name, FloatType(t), shape, Device::kCUDA);
}

absl::Status CheckFwd(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                      const Tensor& rstd) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1}));
  const int64_t t = x.dim(0), d = x.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(w, "w", {d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(y, "y", {t, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t}, Device::kCUDA));
  TANDEM_CHECK_ARG(eps >= 0.0f && std::isfinite(eps), "eps: expected a finite value >= 0, got ",
                   eps);
  TANDEM_CHECK_ARG(t <= 0x7fffffff, "x: at most 2^31 - 1 rows, got ", t);
  return absl::OkStatus();
}

absl::Status LaunchFwd(const Context& ctx, const FwdArgs& args, int64_t rows) {
  if (rows == 0) return absl::OkStatus();
  RmsNormFwdKernel<<<static_cast<unsigned>(rows), kThreads, 0, StreamOf(ctx)>>>(args);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status RmsNormFwd(const Context& ctx, const Tensor& x, const Tensor& w, float eps, Tensor& y,
                        Tensor& rstd) {
  TANDEM_RETURN_IF_ERROR(CheckFwd(x, w, eps, y, rstd));
  const FwdArgs args{x.dim(1),   eps,           ToFloatPtr(x), FloatPtr{},
                     FloatPtr{}, ToFloatPtr(w), ToFloatPtr(y), rstd.data<float>()};
  return LaunchFwd(ctx, args, x.dim(0));
}

absl::Status AddRmsNormFwd(const Context& ctx, const Tensor& x, const Tensor& delta,
                           const Tensor& w, float eps, Tensor& sum, Tensor& y, Tensor& rstd) {
  TANDEM_RETURN_IF_ERROR(CheckFwd(x, w, eps, y, rstd));
  const int64_t t = x.dim(0), d = x.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(delta, "delta", {t, d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(sum, "sum", {t, d}));
  TANDEM_CHECK_ARG(sum.raw_data() != x.raw_data() || sum.dtype() == x.dtype(),
                   "sum: may alias x only with the same dtype");
  const FwdArgs args{d,
                     eps,
                     ToFloatPtr(x),
                     ToFloatPtr(delta),
                     ToFloatPtr(sum),
                     ToFloatPtr(w),
                     ToFloatPtr(y),
                     rstd.data<float>()};
  return LaunchFwd(ctx, args, t);
}

absl::Status RmsNormBwd(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dy, Tensor& dx, Tensor& dw) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1}));
  const int64_t t = x.dim(0), d = x.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(w, "w", {d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dy, "dy", {t, d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dx, "dx", {t, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dw, "dw", DType::kF32, {d}, Device::kCUDA));
  TANDEM_CHECK_ARG(t <= 0x7fffffff, "x: at most 2^31 - 1 rows, got ", t);
  if (t == 0 || d == 0) return absl::OkStatus();
  const BwdArgs args{t,
                     d,
                     ToFloatPtr(x),
                     ToFloatPtr(w),
                     ToFloatPtr(dy),
                     ToFloatPtr(dx),
                     rstd.data<float>(),
                     dw.data<float>()};
  RmsNormBwdRowKernel<<<static_cast<unsigned>(t), kThreads, 0, StreamOf(ctx)>>>(args);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const unsigned dw_blocks = static_cast<unsigned>((d + kDwThreads - 1) / kDwThreads);
  RmsNormBwdDwKernel<<<dw_blocks, kDwThreads, 0, StreamOf(ctx)>>>(args);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

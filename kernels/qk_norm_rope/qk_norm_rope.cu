// CUDA per-head RMSNorm + RoPE: one block per (t, h) head row for the forward and the row part of
// the backward, one thread per column for dw (rows ascending, no atomics). The cos/sin table
// [T, R] is built on the host by cpu::RopeCosSin and uploaded (stream-ordered, freed after use).
// Products and sums are explicit round-to-nearest intrinsics, never contracted into FMAs.
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/qk_norm_rope/qk_norm_rope_cuda.h"
#include "kernels/rms_norm/rms_norm_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = kRmsNormThreads;  // the same block reduction as RmsNormFwd
constexpr int kDwThreads = 64;

struct Args {
  int64_t t, h, d, r;  // r: rotary_dim
  float eps;
  FloatPtr x, w, y, dy, dx;
  float* rstd;
  const float* table;  // [T, R]: cos[0, R/2) then sin[0, R/2)
  float* dw;
};

// ∂L/∂n_c: RoPE's transpose applied to the row's dy at column c.
__device__ __forceinline__ float RopeGrad(const Args& a, int64_t row, int64_t c, const float* cs) {
  const int64_t half = a.r / 2, base = row * a.d;
  if (c >= a.r) return a.dy.Load(base + c);
  if (c < half) {
    return __fadd_rn(__fmul_rn(a.dy.Load(base + c), cs[c]),
                     __fmul_rn(a.dy.Load(base + c + half), cs[half + c]));
  }
  const int64_t i = c - half;
  return __fsub_rn(__fmul_rn(a.dy.Load(base + c), cs[i]),
                   __fmul_rn(a.dy.Load(base + i), cs[half + i]));
}

__global__ void __launch_bounds__(kThreads) FwdKernel(const Args a) {
  const int64_t row = blockIdx.x, base = row * a.d, half = a.r / 2;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    const float v = a.x.Load(base + i);
    ss = __fadd_rn(ss, __fmul_rn(v, v));
  }
  ss = BlockSum<kThreads>(ss);
  const float rs = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, float(a.d)), a.eps)));
  if (threadIdx.x == 0) a.rstd[row] = rs;
  const float* cs = a.table + (row / a.h) * a.r;
  for (int64_t i = threadIdx.x; i < half; i += kThreads) {
    const float n0 = __fmul_rn(__fmul_rn(a.x.Load(base + i), rs), a.w.Load(i));
    const float n1 = __fmul_rn(__fmul_rn(a.x.Load(base + i + half), rs), a.w.Load(i + half));
    const float c = cs[i], s = cs[half + i];
    a.y.Store(base + i, __fsub_rn(__fmul_rn(n0, c), __fmul_rn(n1, s)));
    a.y.Store(base + i + half, __fadd_rn(__fmul_rn(n1, c), __fmul_rn(n0, s)));
  }
  for (int64_t i = a.r + threadIdx.x; i < a.d; i += kThreads) {
    a.y.Store(base + i, __fmul_rn(__fmul_rn(a.x.Load(base + i), rs), a.w.Load(i)));
  }
}

// dx = dn · rstd − x · c with dn = RopeGrad · w and c = (Σ dn·x) · rstd³ / D.
__global__ void __launch_bounds__(kThreads) BwdRowKernel(const Args a) {
  const int64_t row = blockIdx.x, base = row * a.d;
  const float rs = a.rstd[row];
  const float* cs = a.table + (row / a.h) * a.r;
  float dot = 0.0f;
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    const float dn = __fmul_rn(RopeGrad(a, row, i, cs), a.w.Load(i));
    dot = __fadd_rn(dot, __fmul_rn(dn, a.x.Load(base + i)));
  }
  dot = BlockSum<kThreads>(dot);
  const float c = __fdiv_rn(__fmul_rn(dot, __fmul_rn(__fmul_rn(rs, rs), rs)), float(a.d));
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    const float dn = __fmul_rn(RopeGrad(a, row, i, cs), a.w.Load(i));
    a.dx.Store(base + i, __fsub_rn(__fmul_rn(dn, rs), __fmul_rn(a.x.Load(base + i), c)));
  }
}

// dw[c] += Σ_(t,h) RopeGrad_c · (x_c · rstd), rows ascending, one thread per column.
__global__ void __launch_bounds__(kDwThreads) BwdDwKernel(const Args a) {
  const int64_t col = int64_t{blockIdx.x} * kDwThreads + threadIdx.x;
  if (col >= a.d) return;
  float acc = a.dw[col];
  for (int64_t row = 0; row < a.t * a.h; ++row) {
    const float* cs = a.table + (row / a.h) * a.r;
    const float u = __fmul_rn(a.x.Load(row * a.d + col), a.rstd[row]);
    acc = __fadd_rn(acc, __fmul_rn(RopeGrad(a, row, col, cs), u));
  }
  a.dw[col] = acc;
}

absl::Status ExpectFloat(const Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
  const DType dt = t.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  return ExpectTensor(t, name, dt, shape, Device::kCUDA);
}

// Checks the common arguments, fills the shape fields of *a and uploads the cos/sin table
// (a->table; the caller frees it with cudaFreeAsync).
absl::Status Prepare(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                     const Tensor& w, const Tensor& positions, const Tensor& rstd, Args* a) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1, -1}));
  const int64_t t = x.dim(0), h = x.dim(1), d = x.dim(2), r = p.rotary_dim;
  TANDEM_RETURN_IF_ERROR(ExpectFloat(w, "w", {d}));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(positions, "positions", DType::kI32, {t}, positions.device()));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t, h}, Device::kCUDA));
  TANDEM_CHECK_ARG(r >= 0 && r <= d && r % 2 == 0, "rotary_dim: expected an even value in [0, ", d,
                   "], got ", r);
  TANDEM_CHECK_ARG(p.theta > 0 && std::isfinite(p.theta), "theta: expected > 0, got ", p.theta);
  TANDEM_CHECK_ARG(p.eps >= 0 && std::isfinite(p.eps), "eps: expected >= 0, got ", p.eps);
  TANDEM_CHECK_ARG(t * h <= 0x7fffffff, "x: at most 2^31 - 1 head rows, got ", t * h);
  Tensor pos = positions;
  if (positions.device() == Device::kCUDA) {
    TANDEM_ASSIGN_OR_RETURN(pos, CopyToHost(ctx, positions));
  }
  std::vector<float> table(std::max<int64_t>(1, t * r));  // [T, R]
  for (int64_t i = 0; i < t; ++i) {
    const int32_t pi = pos.data<int32_t>()[i];
    TANDEM_CHECK_ARG(pi >= 0, "positions: positions[", i, "] = ", pi, " is negative");
    cpu::RopeCosSin(pi, r, p.theta, table.data() + i * r, table.data() + i * r + r / 2);
  }
  const size_t bytes = table.size() * sizeof(float);
  float* dev = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMallocAsync(reinterpret_cast<void**>(&dev), bytes, StreamOf(ctx)));
  TANDEM_RETURN_IF_ERROR(UploadAsync(dev, table.data(), bytes, StreamOf(ctx)));
  a->t = t, a->h = h, a->d = d, a->r = r, a->eps = p.eps;
  a->x = ToFloatPtr(x), a->w = ToFloatPtr(w);
  a->rstd = const_cast<float*>(rstd.data<float>());
  a->table = dev;
  return absl::OkStatus();
}

}  // namespace

absl::Status QkNormRopeFwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, Tensor& y, Tensor& rstd) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1, -1}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(y, "y", {x.dim(0), x.dim(1), x.dim(2)}));
  TANDEM_CHECK_ARG(y.numel() == 0 || y.raw_data() != x.raw_data(), "y: may not alias x");
  Args a{};
  TANDEM_RETURN_IF_ERROR(Prepare(ctx, p, x, w, positions, rstd, &a));
  a.y = ToFloatPtr(y);
  const cudaStream_t stream = StreamOf(ctx);
  if (a.t * a.h > 0) {
    FwdKernel<<<static_cast<unsigned>(a.t * a.h), kThreads, 0, stream>>>(a);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(const_cast<float*>(a.table), stream));
  return absl::OkStatus();
}

absl::Status QkNormRopeBwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, const Tensor& rstd,
                           const Tensor& dy, Tensor& dx, Tensor& dw) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1, -1}));
  const int64_t t = x.dim(0), h = x.dim(1), d = x.dim(2);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dy, "dy", {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dx, "dx", {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dw, "dw", DType::kF32, {d}, Device::kCUDA));
  Args a{};
  TANDEM_RETURN_IF_ERROR(Prepare(ctx, p, x, w, positions, rstd, &a));
  a.dy = ToFloatPtr(dy), a.dx = ToFloatPtr(dx), a.dw = dw.data<float>();
  const cudaStream_t stream = StreamOf(ctx);
  if (t * h > 0 && d > 0) {
    BwdRowKernel<<<static_cast<unsigned>(t * h), kThreads, 0, stream>>>(a);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    BwdDwKernel<<<static_cast<unsigned>((d + kDwThreads - 1) / kDwThreads), kDwThreads, 0,
                  stream>>>(a);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(const_cast<float*>(a.table), stream));
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

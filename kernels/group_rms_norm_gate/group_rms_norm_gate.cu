// CUDA grouped RMSNorm + sigmoid gate: one block per (t, group) slice for the forward and the row
// part of the backward, one thread per column for dw (rows ascending, no atomics). The formulas
// are the CPU's, left to right, with explicit round-to-nearest intrinsics (no FMA contraction).
#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/group_rms_norm_gate/group_rms_norm_gate_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = kGroupNormThreads;
constexpr int kDwThreads = 64;

struct Args {
  int64_t t, ch, groups, n;  // n = ch / groups
  float eps;
  FloatPtr x, gate, w, y, dy, dx, dgate;
  float* rstd;  // [T, groups]
  float* dw;
};

__device__ __forceinline__ float Sigmoid(float g) {
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-g)));
}

// Block g = t · groups + group handles elements [g·n, (g+1)·n); its w slice starts at group·n.
__global__ void __launch_bounds__(kThreads) FwdKernel(const Args a) {
  const int64_t g = blockIdx.x, base = g * a.n, wbase = (g % a.groups) * a.n;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < a.n; i += kThreads) {
    const float v = a.x.Load(base + i);
    ss = __fadd_rn(ss, __fmul_rn(v, v));
  }
  ss = BlockSum<kThreads>(ss);
  const float rs = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, float(a.n)), a.eps)));
  if (threadIdx.x == 0) a.rstd[g] = rs;
  for (int64_t i = threadIdx.x; i < a.n; i += kThreads) {
    const float b = __fmul_rn(__fmul_rn(a.x.Load(base + i), rs), a.w.Load(wbase + i));
    a.y.Store(base + i, __fmul_rn(b, Sigmoid(a.gate.Load(base + i))));
  }
}

// With u = x·rstd, b = u·w, s = sigmoid(gate): dgate = dy·b·s(1−s), dn = (dy·s)·w, then
// dx = dn·rstd − x·c with c = (Σ dn·x)·rstd³ / n.
__global__ void __launch_bounds__(kThreads) BwdRowKernel(const Args a) {
  const int64_t g = blockIdx.x, base = g * a.n, wbase = (g % a.groups) * a.n;
  const float rs = a.rstd[g];
  float dot = 0.0f;
  for (int64_t i = threadIdx.x; i < a.n; i += kThreads) {
    const int64_t e = base + i;
    const float s = Sigmoid(a.gate.Load(e)), dy = a.dy.Load(e), x = a.x.Load(e);
    const float wc = a.w.Load(wbase + i);
    const float b = __fmul_rn(__fmul_rn(x, rs), wc);
    a.dgate.Store(e, __fmul_rn(__fmul_rn(dy, b), __fmul_rn(s, __fsub_rn(1.0f, s))));
    dot = __fadd_rn(dot, __fmul_rn(__fmul_rn(__fmul_rn(dy, s), wc), x));
  }
  dot = BlockSum<kThreads>(dot);
  const float c = __fdiv_rn(__fmul_rn(dot, __fmul_rn(__fmul_rn(rs, rs), rs)), float(a.n));
  for (int64_t i = threadIdx.x; i < a.n; i += kThreads) {
    const int64_t e = base + i;
    const float dn =
        __fmul_rn(__fmul_rn(a.dy.Load(e), Sigmoid(a.gate.Load(e))), a.w.Load(wbase + i));
    a.dx.Store(e, __fsub_rn(__fmul_rn(dn, rs), __fmul_rn(a.x.Load(e), c)));
  }
}

// dw[c] += Σ_t (dy · s) · (x · rstd), rows ascending, one thread per column.
__global__ void __launch_bounds__(kDwThreads) BwdDwKernel(const Args a) {
  const int64_t col = int64_t{blockIdx.x} * kDwThreads + threadIdx.x;
  if (col >= a.ch) return;
  const int64_t group = col / a.n;
  float acc = a.dw[col];
  for (int64_t r = 0; r < a.t; ++r) {
    const int64_t e = r * a.ch + col;
    const float u = __fmul_rn(a.x.Load(e), a.rstd[r * a.groups + group]);
    acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(a.dy.Load(e), Sigmoid(a.gate.Load(e))), u));
  }
  a.dw[col] = acc;
}

absl::Status ExpectFloat(const Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
  const DType dt = t.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  return ExpectTensor(t, name, dt, shape, Device::kCUDA);
}

absl::Status Prepare(const GroupRmsNormGateParams& p, const Tensor& x, const Tensor& gate,
                     const Tensor& w, const Tensor& rstd, Args* a) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1}));
  const int64_t t = x.dim(0), ch = x.dim(1);
  TANDEM_CHECK_ARG(p.groups >= 1 && ch % p.groups == 0, "groups: expected a divisor of the ", ch,
                   " channels, got ", p.groups);
  TANDEM_CHECK_ARG(p.eps >= 0 && std::isfinite(p.eps), "eps: expected >= 0, got ", p.eps);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(gate, "gate", {t, ch}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(w, "w", {ch}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t, p.groups}, Device::kCUDA));
  TANDEM_CHECK_ARG(t * p.groups <= 0x7fffffff, "x: at most 2^31 - 1 group slices, got ",
                   t * p.groups);
  a->t = t, a->ch = ch, a->groups = p.groups, a->n = ch / p.groups, a->eps = p.eps;
  a->x = ToFloatPtr(x), a->gate = ToFloatPtr(gate), a->w = ToFloatPtr(w);
  a->rstd = const_cast<float*>(rstd.data<float>());
  return absl::OkStatus();
}

}  // namespace

absl::Status GroupRmsNormGateFwd(const Context& ctx, const GroupRmsNormGateParams& p,
                                 const Tensor& x, const Tensor& gate, const Tensor& w, Tensor& y,
                                 Tensor& rstd) {
  Args a{};
  TANDEM_RETURN_IF_ERROR(Prepare(p, x, gate, w, rstd, &a));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(y, "y", {a.t, a.ch}));
  a.y = ToFloatPtr(y);
  if (a.t == 0 || a.ch == 0) return absl::OkStatus();
  FwdKernel<<<static_cast<unsigned>(a.t * a.groups), kThreads, 0, StreamOf(ctx)>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status GroupRmsNormGateBwd(const Context& ctx, const GroupRmsNormGateParams& p,
                                 const Tensor& x, const Tensor& gate, const Tensor& w,
                                 const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgate,
                                 Tensor& dw) {
  Args a{};
  TANDEM_RETURN_IF_ERROR(Prepare(p, x, gate, w, rstd, &a));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dy, "dy", {a.t, a.ch}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dx, "dx", {a.t, a.ch}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dgate, "dgate", {a.t, a.ch}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dw, "dw", DType::kF32, {a.ch}, Device::kCUDA));
  a.dy = ToFloatPtr(dy), a.dx = ToFloatPtr(dx), a.dgate = ToFloatPtr(dgate);
  a.dw = dw.data<float>();
  if (a.t == 0 || a.ch == 0) return absl::OkStatus();
  const cudaStream_t stream = StreamOf(ctx);
  BwdRowKernel<<<static_cast<unsigned>(a.t * a.groups), kThreads, 0, stream>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  BwdDwKernel<<<static_cast<unsigned>((a.ch + kDwThreads - 1) / kDwThreads), kDwThreads, 0,
                stream>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

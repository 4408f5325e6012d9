// CUDA AdamW: one grid-stride elementwise kernel with the CPU's expressions written as explicit
// round-to-nearest intrinsics.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/adamw/adamw_cuda.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

struct Args {
  int64_t n;
  float lr, beta1, beta2, eps, weight_decay, bc1, bc2;
  float* w;
  const float* g;
  float* m;
  float* v;
};

__global__ void __launch_bounds__(kThreads) StepKernel(const Args a) {
  const float one_b1 = __fsub_rn(1.0f, a.beta1), one_b2 = __fsub_rn(1.0f, a.beta2);
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < a.n;
       i += int64_t{gridDim.x} * kThreads) {
    const float g = a.g[i];
    const float m = __fadd_rn(__fmul_rn(a.beta1, a.m[i]), __fmul_rn(one_b1, g));
    const float v = __fadd_rn(__fmul_rn(a.beta2, a.v[i]), __fmul_rn(one_b2, __fmul_rn(g, g)));
    a.m[i] = m;
    a.v[i] = v;
    const float m_hat = __fdiv_rn(m, a.bc1), v_hat = __fdiv_rn(v, a.bc2);
    const float w = a.w[i];
    const float u = __fadd_rn(__fdiv_rn(m_hat, __fadd_rn(__fsqrt_rn(v_hat), a.eps)),
                              __fmul_rn(a.weight_decay, w));
    a.w[i] = __fsub_rn(w, __fmul_rn(a.lr, u));
  }
}

absl::Status ExpectLike(const Tensor& ref, const Tensor& t, const char* name) {
  if (t.dtype() != DType::kF32 || t.shape() != ref.shape() || t.device() != Device::kCUDA) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected f32 ", ShapeString(ref.shape()), " on cuda, got ", DTypeName(t.dtype()),
        " ", ShapeString(t.shape()), " on ", DeviceName(t.device())));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status AdamWStep(const Context& ctx, const AdamWParams& p, Tensor& param, const Tensor& grad,
                       Tensor& m, Tensor& v) {
  TANDEM_RETURN_IF_ERROR(ExpectLike(param, param, "param"));
  TANDEM_RETURN_IF_ERROR(ExpectLike(param, grad, "grad"));
  TANDEM_RETURN_IF_ERROR(ExpectLike(param, m, "m"));
  TANDEM_RETURN_IF_ERROR(ExpectLike(param, v, "v"));
  TANDEM_CHECK_ARG(p.step >= 1, "step: expected >= 1, got ", p.step);
  TANDEM_CHECK_ARG(p.beta1 >= 0 && p.beta1 < 1 && p.beta2 >= 0 && p.beta2 < 1,
                   "beta1, beta2: expected in [0, 1)");
  // The CPU's bias corrections, to the bit.
  const float bc1 = 1.0f - static_cast<float>(std::pow(static_cast<double>(p.beta1), p.step));
  const float bc2 = 1.0f - static_cast<float>(std::pow(static_cast<double>(p.beta2), p.step));
  const int64_t n = param.numel();
  if (n == 0) return absl::OkStatus();
  const Args a{n,
               p.lr,
               p.beta1,
               p.beta2,
               p.eps,
               p.weight_decay,
               bc1,
               bc2,
               param.data<float>(),
               grad.data<float>(),
               m.data<float>(),
               v.data<float>()};
  const int64_t blocks = std::min((n + kThreads - 1) / kThreads, kMaxBlocks);
  StepKernel<<<static_cast<unsigned>(blocks), kThreads, 0, StreamOf(ctx)>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

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

namespace {

constexpr int kSumThreads = 256;
constexpr int64_t kSegment = 8192;  // elements per first-level block

// out[b] = the fp64 sum of x[b·per_block, (b+1)·per_block) ∩ [0, n) (squared when kSquare):
// thread t adds elements t, t + 256, … in order, then a fixed binary tree over the 256 threads.
// Every add and product is correctly rounded (no contraction), so the result is a function of
// the data and n alone.
template <typename T, bool kSquare>
__global__ void __launch_bounds__(kSumThreads)
    TreeSumKernel(const T* __restrict__ x, int64_t n, int64_t per_block, double* __restrict__ out) {
  __shared__ double partial[kSumThreads];
  const int64_t begin = blockIdx.x * per_block;
  const int64_t end = begin + per_block < n ? begin + per_block : n;
  double s = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kSumThreads) {
    const double v = static_cast<double>(x[i]);
    s = __dadd_rn(s, kSquare ? __dmul_rn(v, v) : v);
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kSumThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      partial[threadIdx.x] = __dadd_rn(partial[threadIdx.x], partial[threadIdx.x + stride]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

}  // namespace

absl::StatusOr<double> SumOfSquares(const Context& ctx, const Tensor& t) {
  if (t.dtype() != DType::kF32 || t.device() != Device::kCUDA) {
    return absl::InvalidArgumentError(absl::StrCat(
        "t: expected f32 on cuda, got ", DTypeName(t.dtype()), " on ", DeviceName(t.device())));
  }
  const int64_t n = t.numel();
  if (n == 0) return 0.0;
  const int64_t segments = (n + kSegment - 1) / kSegment;
  cudaStream_t stream = StreamOf(ctx);
  double* scratch = nullptr;  // [segments] segment sums, then [1] the total
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMallocAsync(reinterpret_cast<void**>(&scratch), (segments + 1) * sizeof(double), stream));
  TreeSumKernel<float, true><<<static_cast<unsigned>(segments), kSumThreads, 0, stream>>>(
      t.data<float>(), n, kSegment, scratch);
  TreeSumKernel<double, false>
      <<<1, kSumThreads, 0, stream>>>(scratch, segments, segments, scratch + segments);
  double total = 0.0;
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) {
    e = cudaMemcpyAsync(&total, scratch + segments, sizeof(double), cudaMemcpyDeviceToHost, stream);
  }
  const cudaError_t freed = cudaFreeAsync(scratch, stream);
  if (e == cudaSuccess) e = freed;
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  TANDEM_CUDA_RETURN_IF_ERROR(e);
  return total;
}

}  // namespace tandem::kernels::cuda

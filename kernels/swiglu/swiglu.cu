// CUDA SwiGLU: grid-stride elementwise kernels with the CPU's formulas (silu(g) = g / (1 + e^−g),
// d silu/dg = σ · (1 + g · (1 − σ))), fp32 math on f32 or bf16 storage.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/swiglu/swiglu_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

__global__ void SwigluFwdKernel(int64_t n, FloatPtr gate, FloatPtr up, FloatPtr h) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kThreads) {
    const float g = gate.Load(i);
    const float silu = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
    h.Store(i, __fmul_rn(silu, up.Load(i)));
  }
}

__global__ void SwigluBwdKernel(int64_t n, FloatPtr gate, FloatPtr up, FloatPtr dh, FloatPtr dgate,
                                FloatPtr dup) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kThreads) {
    const float g = gate.Load(i), d = dh.Load(i);
    const float sig = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-g)));
    const float dsilu = __fmul_rn(sig, __fadd_rn(1.0f, __fmul_rn(g, __fsub_rn(1.0f, sig))));
    dup.Store(i, __fmul_rn(d, __fmul_rn(g, sig)));
    dgate.Store(i, __fmul_rn(__fmul_rn(d, up.Load(i)), dsilu));
  }
}

unsigned Blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

absl::Status ExpectLike(const Tensor& ref, const Tensor& t, const char* name) {
  const DType dt = t.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  return ExpectTensor(t, name, dt, {ref.dim(0), ref.dim(1)}, Device::kCUDA);
}

}  // namespace

absl::Status SwigluFwd(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& h) {
  const DType gt = gate.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(gate, "gate", gt, {-1, -1}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectLike(gate, up, "up"));
  TANDEM_RETURN_IF_ERROR(ExpectLike(gate, h, "h"));
  const int64_t n = gate.numel();
  if (n == 0) return absl::OkStatus();
  SwigluFwdKernel<<<Blocks(n), kThreads, 0, StreamOf(ctx)>>>(n, ToFloatPtr(gate), ToFloatPtr(up),
                                                             ToFloatPtr(h));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status SwigluBwd(const Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dh,
                       Tensor& dgate, Tensor& dup) {
  const DType gt = gate.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(gate, "gate", gt, {-1, -1}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectLike(gate, up, "up"));
  TANDEM_RETURN_IF_ERROR(ExpectLike(gate, dh, "dh"));
  TANDEM_RETURN_IF_ERROR(ExpectLike(gate, dgate, "dgate"));
  TANDEM_RETURN_IF_ERROR(ExpectLike(gate, dup, "dup"));
  const int64_t n = gate.numel();
  if (n == 0) return absl::OkStatus();
  SwigluBwdKernel<<<Blocks(n), kThreads, 0, StreamOf(ctx)>>>(
      n, ToFloatPtr(gate), ToFloatPtr(up), ToFloatPtr(dh), ToFloatPtr(dgate), ToFloatPtr(dup));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

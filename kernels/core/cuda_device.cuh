// Device-side helpers shared by the CUDA kernels (include from .cu files only): typed access to
// tensors whose storage is f32 or bf16, chosen at run time, and the fixed-order block reduction
// every row kernel uses.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// A device pointer to f32 or bf16 elements. The dtype branch is uniform across a launch.
struct FloatPtr {
  void* p = nullptr;
  bool bf16 = false;

  __device__ __forceinline__ float Load(int64_t i) const {
    return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i])
                : static_cast<const float*>(p)[i];
  }
  // Stores v rounded to the storage type and returns the stored value as a float.
  __device__ __forceinline__ float Store(int64_t i, float v) const {
    if (!bf16) {
      static_cast<float*>(p)[i] = v;
      return v;
    }
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    static_cast<__nv_bfloat16*>(p)[i] = h;
    return __bfloat162float(h);
  }
};

// REQUIRES: t is f32 or bf16 (checked by the caller).
inline FloatPtr ToFloatPtr(const Tensor& t) {
  return {const_cast<void*>(t.raw_data()), t.dtype() == DType::kBF16};
}

// Sum of v over the block, returned to every thread, in an order fixed by the block size alone:
// a butterfly within each warp (every lane ends with the same bits: a + b == b + a), then the
// warp sums pairwise. REQUIRES: blockDim.x == kThreads, a multiple of 32; every thread calls it.
template <int kThreads>
__device__ __forceinline__ float BlockSum(float v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  constexpr int kWarps = kThreads / 32;
  __shared__ float warp_sums[kWarps];
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  __syncthreads();  // warp_sums may still be read by a previous call
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  float s[kWarps];
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s[w] = warp_sums[w];
#pragma unroll
  for (int width = 1; width < kWarps; width *= 2) {
#pragma unroll
    for (int w = 0; w + width < kWarps; w += 2 * width) s[w] += s[w + width];
  }
  return s[0];
}

}  // namespace tandem::kernels::cuda

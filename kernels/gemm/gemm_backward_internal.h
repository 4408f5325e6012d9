// The device kernels behind cuda::GemmNN / cuda::GemmTN (gemm_backward_kernels.cu). Arguments are
// validated by the caller (gemm_backward.cu); these only launch. Not for use outside kernels/gemm.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/gemm/gemm_cuda.h"

namespace tandem::kernels::cuda::internal {

// The fallback GEMM: C (+)= A · B with A [m, k] (trans_a false) or [k, m] (trans_a true); one fp32
// FMA chain per element over k ascending from 0; an f32 a with a bf16 b is rounded to bf16.
cudaError_t LaunchGemmBackwardFallback(cudaStream_t stream, const GemmBackwardArgs& g,
                                       bool trans_a);

// dst[r, c] = bf16(src[r, c]) (nearest-even) for r < rows, c < cols.
cudaError_t LaunchRoundToBf16(cudaStream_t stream, const float* src, int64_t ld_src, void* dst,
                              int64_t ld_dst, int64_t rows, int64_t cols);

// One group of GemmTN chunk products, [count, m, n] f32 in `parts`, added in ascending order onto
// the running `sum` [m, n] (or starting it, when `first`); the `last` group writes c (+)= sum.
struct ChunkSum {
  const float* parts = nullptr;
  int count = 0;
  float* sum = nullptr;
  bool first = false, last = false;
  int64_t m = 0, n = 0;
  void* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
};
cudaError_t LaunchSumChunks(cudaStream_t stream, const ChunkSum& s, DType c_dtype);

}  // namespace tandem::kernels::cuda::internal

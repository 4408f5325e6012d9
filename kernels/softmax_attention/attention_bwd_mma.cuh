// Internal to the attention backward (include from .cu files only): the PTX building blocks of its
// tensor-core tiles — cp.async copies, ldmatrix fragment loads, mma.sync m16n8k16 (bf16 in, fp32
// accumulate) and the conversions between accumulator and operand fragments.
// Fragment layouts (lane = 4·g + t): A rows g, g+8 × columns 2t, 2t+1 (+8); B k rows 2t, 2t+1 (+8)
// × column g; C rows g, g+8 × columns 2t, 2t+1.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/mma_sync.cuh"

namespace tandem::kernels::cuda::attention_bwd {

using mma::CpAsync16;
using mma::CpAsyncCommit;
using mma::CpAsyncWait;
using mma::Exp2;
using mma::LdMatrixX4;
using mma::LdMatrixX4Trans;
using mma::Mma;
using mma::PackBf16;
using mma::SmemAddr;

// 4-byte asynchronous copy, zeros when !valid.
__device__ __forceinline__ void CpAsync4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem),
               "r"(valid ? 4 : 0)
               : "memory");
}

// A fragment of rows [row0, row0 + 16) × k [k0, k0 + 16) of a row-major bf16 smem tile (stride ld).
__device__ __forceinline__ void LoadA(uint32_t (&a)[4], const __nv_bfloat16* s, int ld, int row0,
                                      int k0) {
  const int lane = threadIdx.x % 32;
  LdMatrixX4(a, s + (row0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8);
}

// B fragments of two n8 tiles (n0, n0 + 8) × k [k0, k0 + 16) from a tile stored [n][k] (the
// matrix's transpose is row-major: Q·Kᵀ reads K this way).
__device__ __forceinline__ void LoadBNk(uint32_t (&b)[4], const __nv_bfloat16* s, int ld, int n0,
                                        int k0) {
  const int lane = threadIdx.x % 32;
  LdMatrixX4(b, s + (n0 + (lane & 7) + ((lane >> 4) << 3)) * ld + k0 + ((lane >> 3) & 1) * 8);
}

// B fragments of two n8 tiles (n0, n0 + 8) × k [k0, k0 + 16) from a tile stored [k][n] (P·V reads
// V this way). b[0], b[1] belong to tile n0; b[2], b[3] to tile n0 + 8.
__device__ __forceinline__ void LoadBKn(uint32_t (&b)[4], const __nv_bfloat16* s, int ld, int n0,
                                        int k0) {
  const int lane = threadIdx.x % 32;
  LdMatrixX4Trans(b, s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8);
}

// The A fragment (16 rows × 16 k) made of accumulator tiles c[2kk] and c[2kk + 1], in bf16.
__device__ __forceinline__ void AccToA(uint32_t (&a)[4], const float (&lo)[4],
                                       const float (&hi)[4]) {
  a[0] = PackBf16(lo[0], lo[1]);
  a[1] = PackBf16(lo[2], lo[3]);
  a[2] = PackBf16(hi[0], hi[1]);
  a[3] = PackBf16(hi[2], hi[3]);
}

}  // namespace tandem::kernels::cuda::attention_bwd

// fp32 GEMM on the GPU, C = A · Bᵀ, for the parts the contract keeps in fp32 (router, fp32 LM
// head): 64x64 block tiles, 16-deep k slices, 4x4 outputs per thread. Each output element is one
// fp32 FMA chain from 0 over k ascending, then the optional `accumulate` add, exactly the
// arithmetic of the CPU GEMM, so rows are batch-invariant and match the CPU bit for bit.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gemm/gemm_cuda_internal.h"

namespace tandem::kernels::cuda::internal {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;
constexpr int kThreads = 256;  // 16 x 16 threads, 4x4 outputs each
constexpr int kPad = 4;        // keeps each k row of a tile 16-byte aligned

// Loads rows [row0, row0 + 64) x k [k0, k0 + 16) of a row-major [rows, k] matrix, transposed
// into tile[k][row], zeros outside the matrix.
__device__ __forceinline__ void LoadTile(float (*tile)[kBM + kPad], const float* src, int64_t ld,
                                         int64_t rows, int64_t k, int64_t row0, int64_t k0) {
#pragma unroll
  for (int i = 0; i < kBM * kBK / kThreads; ++i) {
    const int idx = threadIdx.x + i * kThreads;
    const int r = idx / kBK, kk = idx % kBK;
    const int64_t gr = row0 + r, gk = k0 + kk;
    tile[kk][r] = gr < rows && gk < k ? src[gr * ld + gk] : 0.0f;
  }
}

// acc[i][j] = fma(a[row i][kk], b[col j][kk], acc[i][j]) for the thread's 4x4 outputs.
__device__ __forceinline__ void FmaStep(const float (*as)[kBM + kPad],
                                        const float (*bs)[kBN + kPad], int kk, int tx, int ty,
                                        float (&acc)[4][4]) {
  const float4 av = *reinterpret_cast<const float4*>(&as[kk][ty * 4]);
  const float4 bv = *reinterpret_cast<const float4*>(&bs[kk][tx * 4]);
  const float ar[4] = {av.x, av.y, av.z, av.w}, br[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(ar[i], br[j], acc[i][j]);
  }
}

__global__ void __launch_bounds__(kThreads) GemmF32Kernel(const GemmNTArgs g) {
  __shared__ __align__(16) float as[kBK][kBM + kPad];
  __shared__ __align__(16) float bs[kBK][kBN + kPad];
  const int64_t m0 = int64_t{blockIdx.y} * kBM, n0 = int64_t{blockIdx.x} * kBN;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const float* a = static_cast<const float*>(g.a);
  const float* b = static_cast<const float*>(g.b);
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < g.k; k0 += kBK) {
    LoadTile(as, a, g.lda, g.m, g.k, m0, k0);
    LoadTile(bs, b, g.ldb, g.n, g.k, n0, k0);
    __syncthreads();
    if (k0 + kBK <= g.k) {
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) FmaStep(as, bs, kk, tx, ty, acc);
    } else {  // last, partial slice: stop at k exactly (a zero product could flip a -0 to +0)
      for (int kk = 0; kk < g.k - k0; ++kk) FmaStep(as, bs, kk, tx, ty, acc);
    }
    __syncthreads();
  }
  float* c = static_cast<float*>(g.c);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t row = m0 + ty * 4 + i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n0 + tx * 4 + j;
      if (row < g.m && col < g.n) {
        float* p = c + row * g.ldc + col;
        *p = g.accumulate ? __fadd_rn(*p, acc[i][j]) : acc[i][j];
      }
    }
  }
}

}  // namespace

cudaError_t LaunchGemmF32(cudaStream_t stream, const GemmNTArgs& g) {
  const dim3 grid(static_cast<unsigned>((g.n + kBN - 1) / kBN),
                  static_cast<unsigned>((g.m + kBM - 1) / kBM));
  GemmF32Kernel<<<grid, kThreads, 0, stream>>>(g);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::internal

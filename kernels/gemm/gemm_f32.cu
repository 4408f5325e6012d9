// fp32 GEMM on the GPU, C = A · Bᵀ, for the parts the contract keeps in fp32 (router, fp32 LM
// head). Each output element is one fp32 FMA chain from 0 over k ascending, then the optional
// `accumulate` add, exactly the arithmetic of the CPU GEMM, so rows match the CPU bit for bit
// whatever the tiling. Two tilings of that one chain:
//   wide:   64x64 block tiles, 4x4 outputs per thread (two shared-memory loads per 16 FMAs),
//           16-deep k slices;
//   narrow: 8x16 block tiles, one output per thread, 128-deep k slices (few slices: each waits
//           for its loads), for products too small to give the wide tiling a block per
//           multiprocessor (the router at decode: M = 64 tokens, N = 256 experts is 4 wide
//           blocks; its K = 2048 chain per element then ran on 4 SMs).
// The choice looks at the grid only; since a tile never splits or reorders an element's chain,
// rows stay batch-invariant across it (contract rule 1), which the tests check bitwise.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/cuda_util.h"
#include "kernels/gemm/gemm_cuda_internal.h"

namespace tandem::kernels::cuda::internal {
namespace {

constexpr int kPad = 4;  // keeps each k row of a tile 16-byte aligned

// kBM x kBN outputs per block, kTM x kTN per thread, k slices of kBK per shared-memory stage.
template <int kBM, int kBN, int kTM, int kTN, int kBK>
struct F32Tiling {
  static constexpr int kThreads = (kBM / kTM) * (kBN / kTN);
  static constexpr int kThreadCols = kBN / kTN;  // threads along n
  static_assert(kBM * kBK % kThreads == 0 && kBN * kBK % kThreads == 0, "whole tile loads");
  static_assert((kTM == 1 || kTM == 4) && (kTN == 1 || kTN == 4), "scalar or float4 fragments");
};

// Loads rows [row0, row0 + kRows) x k [k0, k0 + kBK) of a row-major [rows, k] matrix,
// transposed into tile[k][row], zeros outside the matrix.
template <int kRows, int kBK, int kThreads>
__device__ __forceinline__ void LoadTile(float (*tile)[kRows + kPad], const float* src, int64_t ld,
                                         int64_t rows, int64_t k, int64_t row0, int64_t k0) {
#pragma unroll
  for (int i = 0; i < kRows * kBK / kThreads; ++i) {
    const int idx = threadIdx.x + i * kThreads;
    const int r = idx / kBK, kk = idx % kBK;
    const int64_t gr = row0 + r, gk = k0 + kk;
    tile[kk][r] = gr < rows && gk < k ? src[gr * ld + gk] : 0.0f;
  }
}

// kN values of a tile's k row from column c0 (one float4 when kN = 4).
template <int kN, int kLd>
__device__ __forceinline__ void Fragment(const float (*tile)[kLd], int kk, int c0, float (&x)[kN]) {
  if constexpr (kN == 4) {
    const float4 v = *reinterpret_cast<const float4*>(&tile[kk][c0]);
    x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
  } else {
    x[0] = tile[kk][c0];
  }
}

template <int kBM, int kBN, int kTM, int kTN, int kBK>
__global__ void __launch_bounds__((F32Tiling<kBM, kBN, kTM, kTN, kBK>::kThreads))
    GemmF32Kernel(const GemmNTArgs g) {
  using T = F32Tiling<kBM, kBN, kTM, kTN, kBK>;
  __shared__ __align__(16) float as[kBK][kBM + kPad];
  __shared__ __align__(16) float bs[kBK][kBN + kPad];
  const int64_t m0 = int64_t{blockIdx.y} * kBM, n0 = int64_t{blockIdx.x} * kBN;
  const int tx = threadIdx.x % T::kThreadCols, ty = threadIdx.x / T::kThreadCols;
  const float* a = static_cast<const float*>(g.a);
  const float* b = static_cast<const float*>(g.b);
  float acc[kTM][kTN] = {};
  // acc[i][j] = fma(a[row i][kk], b[col j][kk], acc[i][j]): one step of every chain.
  const auto step = [&](int kk) {
    float ar[kTM], br[kTN];
    Fragment<kTM>(as, kk, ty * kTM, ar);
    Fragment<kTN>(bs, kk, tx * kTN, br);
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
#pragma unroll
      for (int j = 0; j < kTN; ++j) acc[i][j] = __fmaf_rn(ar[i], br[j], acc[i][j]);
    }
  };
  for (int64_t k0 = 0; k0 < g.k; k0 += kBK) {
    LoadTile<kBM, kBK, T::kThreads>(as, a, g.lda, g.m, g.k, m0, k0);
    LoadTile<kBN, kBK, T::kThreads>(bs, b, g.ldb, g.n, g.k, n0, k0);
    __syncthreads();
    if (k0 + kBK <= g.k) {
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) step(kk);
    } else {  // last, partial slice: stop at k exactly (a zero product could flip a -0 to +0)
      for (int kk = 0; kk < g.k - k0; ++kk) step(kk);
    }
    __syncthreads();
  }
  float* c = static_cast<float*>(g.c);
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t row = m0 + ty * kTM + i;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t col = n0 + tx * kTN + j;
      if (row < g.m && col < g.n) {
        float* p = c + row * g.ldc + col;
        *p = g.accumulate ? __fadd_rn(*p, acc[i][j]) : acc[i][j];
      }
    }
  }
}

template <int kBM, int kBN, int kTM, int kTN, int kBK>
cudaError_t Launch(cudaStream_t stream, const GemmNTArgs& g) {
  const dim3 grid(static_cast<unsigned>((g.n + kBN - 1) / kBN),
                  static_cast<unsigned>((g.m + kBM - 1) / kBM));
  GemmF32Kernel<kBM, kBN, kTM, kTN, kBK>
      <<<grid, F32Tiling<kBM, kBN, kTM, kTN, kBK>::kThreads, 0, stream>>>(g);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchGemmF32(cudaStream_t stream, const GemmNTArgs& g) {
  const int64_t wide_blocks = ((g.m + 63) / 64) * ((g.n + 63) / 64);
  if (wide_blocks < Multiprocessors()) return Launch<8, 16, 1, 1, 128>(stream, g);
  return Launch<64, 64, 4, 4, 16>(stream, g);
}

}  // namespace tandem::kernels::cuda::internal

// bf16 tensor-core GEMM, C = A · Bᵀ: 128x128 block tiles, 32-deep k slices in a 4-stage
// shared-memory ring, 8 warps of 64x32, mma.sync m16n8k16 (runs on sm_80 and sm_90; a wgmma path
// for sm_90a is a later optimisation that must keep the k order below).
// Batch invariance: the tile is the same for every problem, out-of-range rows and k columns are
// loaded as zeros, and each output element is one fp32 accumulator fed by k steps 0, 16, 32, ...
// in order, so neither M nor the position of a row in its tile can change its bits.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/kernel_smem.h"
#include "kernels/core/mma_sync.cuh"
#include "kernels/gemm/gemm_cuda_internal.h"

namespace tandem::kernels::cuda::internal {
namespace {

constexpr int kBM = kGemmTileM, kBN = kGemmTileN, kBK = kGemmTileK;
constexpr int kStages = 4;
constexpr int kThreads = 256;            // 8 warps: 2 along M x 4 along N
constexpr int kWarpM = 64, kWarpN = 32;  // each warp: 4 m16 tiles x 4 n8 tiles
constexpr int kLds = kBK + 8;            // row stride in elements: 80 bytes, ldmatrix conflict-free
constexpr int kChunksPerRow = kBK / 8;   // 16-byte chunks of 8 bf16
constexpr int kChunksPerThread = kBM * kChunksPerRow / kThreads;  // per operand: 2
constexpr int kStageElems = (kBM + kBN) * kLds;
constexpr size_t kSmemBytes = size_t{kStages} * kStageElems * sizeof(uint16_t);
static_assert(kBM == kBN, "A and B tiles share one loader layout");
static_assert(kBM * kChunksPerRow % kThreads == 0, "every thread loads whole chunks");

using mma::CpAsync16;
using mma::CpAsyncCommit;
using mma::CpAsyncWait;
using mma::LdMatrixX4;
using mma::Mma;
using mma::PackBf16;
using mma::SmemAddr;

// Moves one operand tile ([128 rows, 32 k] of a row-major [rows, K] matrix) into shared memory as
// bf16. bf16 with 16-byte aligned rows goes by cp.async; anything else (f32 input, odd strides)
// is loaded into registers before the step's math and stored to shared memory after it.
template <typename T, bool kAligned>
struct TileLoader {
  static constexpr bool kAsync = kAligned && sizeof(T) == 2;
  const T* base;
  int64_t ld, rows, k;
  uint4 staged[kChunksPerThread];

  __device__ void Issue(uint16_t* tile, int64_t row0, int64_t k0) {
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      const int chunk = threadIdx.x + i * kThreads;
      const int r = chunk / kChunksPerRow, kc = (chunk % kChunksPerRow) * 8;
      const int64_t gr = row0 + r, gk = k0 + kc;
      if constexpr (kAsync) {
        const bool valid = gr < rows && gk < k;  // k % 8 == 0 here: a chunk is all in or all out
        CpAsync16(tile + r * kLds + kc, valid ? base + gr * ld + gk : base, valid);
      } else {
        staged[i] = Fetch(gr, gk);
      }
    }
  }

  __device__ void Store(uint16_t* tile) {
    if constexpr (!kAsync) {
#pragma unroll
      for (int i = 0; i < kChunksPerThread; ++i) {
        const int chunk = threadIdx.x + i * kThreads;
        const int r = chunk / kChunksPerRow, kc = (chunk % kChunksPerRow) * 8;
        *reinterpret_cast<uint4*>(tile + r * kLds + kc) = staged[i];
      }
    }
  }

  // Eight consecutive k of row gr as packed bf16, zeros outside [rows, k).
  __device__ uint4 Fetch(int64_t gr, int64_t gk) const {
    float v[8];
    const T* p = base + gr * ld + gk;
    if constexpr (kAligned && sizeof(T) == 4) {
      const bool valid = gr < rows && gk < k;
      const float4 lo = valid ? reinterpret_cast<const float4*>(p)[0] : float4{};
      const float4 hi = valid ? reinterpret_cast<const float4*>(p)[1] : float4{};
      v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w;
      v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = gr < rows && gk + e < k ? ToFloat(p[e]) : 0.0f;
    }
    return uint4{PackBf16(v[0], v[1]), PackBf16(v[2], v[3]), PackBf16(v[4], v[5]),
                 PackBf16(v[6], v[7])};
  }

  __device__ static float ToFloat(float x) { return x; }
  __device__ static float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
};

// One 32-deep k slice of the warp's 64x32 output: two 16-deep mma steps, k ascending.
__device__ __forceinline__ void ComputeSlice(const uint16_t* as, const uint16_t* bs, int warp_m,
                                             int warp_n, float (&acc)[4][4][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int ks = 0; ks < kBK; ks += 16) {
    uint32_t a[4][4], b[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      const int row = warp_m * kWarpM + mi * 16 + (lane & 15);
      LdMatrixX4(a[mi], as + row * kLds + ks + (lane >> 4) * 8);
    }
#pragma unroll
    for (int nj = 0; nj < 2; ++nj) {
      const int row = warp_n * kWarpN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
      uint32_t r[4];
      LdMatrixX4(r, bs + row * kLds + ks + ((lane >> 3) & 1) * 8);
      b[2 * nj][0] = r[0], b[2 * nj][1] = r[1], b[2 * nj + 1][0] = r[2], b[2 * nj + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) Mma(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
    }
  }
}

__device__ __forceinline__ void StoreC(float* c, int64_t i, float v, bool accumulate) {
  c[i] = accumulate ? c[i] + v : v;
}
__device__ __forceinline__ void StoreC(__nv_bfloat16* c, int64_t i, float v, bool accumulate) {
  c[i] = __float2bfloat16_rn(accumulate ? __bfloat162float(c[i]) + v : v);
}

template <typename TC>
__device__ void Epilogue(const GemmNTArgs& g, int64_t m0, int64_t n0, int warp_m, int warp_n,
                         const float (&acc)[4][4][4]) {
  const int lane = threadIdx.x % 32;
  TC* c = static_cast<TC*>(g.c);
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {  // fragment: rows g, g+8; columns 2t, 2t+1
        const int64_t row = m0 + warp_m * kWarpM + mi * 16 + lane / 4 + (e / 2) * 8;
        const int64_t col = n0 + warp_n * kWarpN + ni * 8 + (lane % 4) * 2 + e % 2;
        if (row < g.m && col < g.n) StoreC(c, row * g.ldc + col, acc[mi][ni][e], g.accumulate);
      }
    }
  }
}

template <typename TA, typename TC, bool kAligned>
__global__ void __launch_bounds__(kThreads) GemmTensorCoreKernel(const GemmNTArgs g) {
  extern __shared__ __align__(16) uint16_t smem[];  // kStages x ([kBM, kLds] A, [kBN, kLds] B)
  const int64_t m0 = int64_t{blockIdx.y} * kBM, n0 = int64_t{blockIdx.x} * kBN;
  const int warp = threadIdx.x / 32, warp_m = warp / 4, warp_n = warp % 4;
  TileLoader<TA, kAligned> load_a{static_cast<const TA*>(g.a), g.lda, g.m, g.k};
  TileLoader<__nv_bfloat16, kAligned> load_b{static_cast<const __nv_bfloat16*>(g.b), g.ldb, g.n,
                                             g.k};
  auto a_tile = [&](int s) { return smem + s * kStageElems; };
  auto b_tile = [&](int s) { return smem + s * kStageElems + kBM * kLds; };

  float acc[4][4][4] = {};
  const int64_t num_slices = (g.k + kBK - 1) / kBK;
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_slices) {
      load_a.Issue(a_tile(s), m0, s * kBK);
      load_b.Issue(b_tile(s), n0, s * kBK);
      load_a.Store(a_tile(s));
      load_b.Store(b_tile(s));
    }
    CpAsyncCommit();
  }
  for (int64_t kt = 0; kt < num_slices; ++kt) {
    CpAsyncWait<kStages - 2>();  // slice kt has landed (for this thread) ...
    __syncthreads();             // ... for every thread, and slice kt - 1 is no longer read
    const int64_t next = kt + kStages - 1;
    const int next_stage = static_cast<int>(next % kStages);
    if (next < num_slices) {
      load_a.Issue(a_tile(next_stage), m0, next * kBK);
      load_b.Issue(b_tile(next_stage), n0, next * kBK);
    }
    CpAsyncCommit();
    const int stage = static_cast<int>(kt % kStages);
    ComputeSlice(a_tile(stage), b_tile(stage), warp_m, warp_n, acc);
    if (next < num_slices) {
      load_a.Store(a_tile(next_stage));
      load_b.Store(b_tile(next_stage));
    }
  }
  Epilogue<TC>(g, m0, n0, warp_m, warp_n, acc);
}

template <typename TA, typename TC, bool kAligned>
cudaError_t Launch(cudaStream_t stream, const GemmNTArgs& g) {
  auto* kernel = &GemmTensorCoreKernel<TA, TC, kAligned>;
  const cudaError_t attr =
      AllowSmem<&GemmTensorCoreKernel<TA, TC, kAligned>>(static_cast<int>(kSmemBytes));
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>((g.n + kBN - 1) / kBN),
                  static_cast<unsigned>((g.m + kBM - 1) / kBM));
  kernel<<<grid, kThreads, kSmemBytes, stream>>>(g);
  return cudaGetLastError();
}

template <typename TA, typename TC>
cudaError_t LaunchAligned(cudaStream_t stream, const GemmNTArgs& g) {
  // Vector loads need 16-byte aligned rows and whole 8-element chunks in k. The choice only
  // changes how tiles reach shared memory, never their contents, so results are identical.
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const int64_t a_row_align = 16 / static_cast<int64_t>(sizeof(TA));
  const bool aligned = g.k % 8 == 0 && g.lda % a_row_align == 0 && g.ldb % 8 == 0 &&
                       aligned16(g.a) && aligned16(g.b);
  return aligned ? Launch<TA, TC, true>(stream, g) : Launch<TA, TC, false>(stream, g);
}

}  // namespace

cudaError_t LaunchGemmTensorCore(cudaStream_t stream, const GemmNTArgs& g) {
  const bool a_bf16 = g.a_dtype == DType::kBF16, c_bf16 = g.c_dtype == DType::kBF16;
  if (a_bf16) {
    return c_bf16 ? LaunchAligned<__nv_bfloat16, __nv_bfloat16>(stream, g)
                  : LaunchAligned<__nv_bfloat16, float>(stream, g);
  }
  return c_bf16 ? LaunchAligned<float, __nv_bfloat16>(stream, g)
                : LaunchAligned<float, float>(stream, g);
}

}  // namespace tandem::kernels::cuda::internal

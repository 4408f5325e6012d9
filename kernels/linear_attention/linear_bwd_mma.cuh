// Internal to the linear-attention backward (include from .cu files only): warp-level bf16 tensor
// core GEMMs over shared-memory tiles (mma.sync m16n8k16, fp32 accumulate) and the staging of
// [T, H, D] rows and fp32 [D, D] states into shared memory as bf16. Each accumulator element is
// fed by its k steps in ascending order only, so results depend on nothing but the operands.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/core/mma_sync.cuh"

namespace tandem::kernels::cuda::linear_bwd {

using bf16 = __nv_bfloat16;

using mma::CpAsync16;
using mma::CpAsyncCommit;
using mma::CpAsyncWait;
using mma::LdMatrixX4;
using mma::Mma;
using mma::PackBf16;
using mma::SmemAddr;

// Element offset of (row, col) in a bf16 tile with kW elements a row, stored unpadded with the
// 16-byte units of each row XOR-swizzled, so that the 8 consecutive rows (from a multiple of 8)
// one ldmatrix phase reads sit in distinct bank groups. 32-element rows pair up in a 128-byte
// line, so they swizzle by row/2.
template <int kW>
__device__ __forceinline__ int SwzOff(int row, int col) {
  static_assert(kW == 32 || kW % 64 == 0, "rows of 32 or a multiple of 64 elements");
  if constexpr (kW == 32) {
    return row * 32 + ((((col >> 3) ^ ((row >> 1) & 3))) << 3) + (col & 7);
  } else {
    return row * kW + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
  }
}

// A fragment (rows m0..m0+15, k..k+15) of A [M, K] in a swizzled tile of kW-element rows.
// kTrans = false: A is stored row-major (a[m][k]); kTrans = true: A is stored transposed
// (a[k][m]).
template <bool kTrans, int kW>
__device__ __forceinline__ void LoadA(uint32_t (&f)[4], const bf16* a, int m0, int k) {
  const int lane = threadIdx.x % 32, q = lane >> 3, r = lane & 7;
  if constexpr (kTrans) {
    LdMatrixX4<true>(f, a + SwzOff<kW>(k + (q >> 1) * 8 + r, m0 + (q & 1) * 8));
  } else {
    LdMatrixX4<false>(f, a + SwzOff<kW>(m0 + (lane & 15), k + (lane >> 4) * 8));
  }
}

// B fragments of two n8 tiles (columns n0..n0+15, k..k+15) of B [K, N] in a swizzled tile of
// kW-element rows: f[0], f[1] for the first tile, f[2], f[3] for the second. kTrans = false: B
// is stored as Bᵀ row-major (b[n][k]); kTrans = true: B is stored row-major (b[k][n]).
template <bool kTrans, int kW>
__device__ __forceinline__ void LoadB(uint32_t (&f)[4], const bf16* b, int n0, int k) {
  const int lane = threadIdx.x % 32, q = lane >> 3, r = lane & 7;
  if constexpr (kTrans) {
    LdMatrixX4<true>(f, b + SwzOff<kW>(k + (q & 1) * 8 + r, n0 + (q >> 1) * 8));
  } else {
    LdMatrixX4<false>(f, b + SwzOff<kW>(n0 + r + (q >> 1) * 8, k + (q & 1) * 8));
  }
}

// acc[nt] += A[m0.., k0..k1) · B[k0..k1), n0 + 8·nt ..) for kNT n8 tiles, k ascending in steps
// of 16; A and B are swizzled tiles of kWA- and kWB-element rows. Accumulator element e of tile
// nt: row m0 + lane/4 + 8·(e/2), column n0 + 8·nt + 2·(lane%4) + e%2.
template <int kNT, bool kTransA, bool kTransB, int kWA, int kWB>
__device__ __forceinline__ void WarpGemm(float (&acc)[kNT][4], const bf16* a, int m0, const bf16* b,
                                         int n0, int k0, int k1) {
  static_assert(kNT % 2 == 0, "B fragments come in pairs of n8 tiles");
  for (int k = k0; k < k1; k += 16) {
    uint32_t af[4];
    LoadA<kTransA, kWA>(af, a, m0, k);
#pragma unroll
    for (int nt = 0; nt < kNT; nt += 2) {
      uint32_t bf[4];
      LoadB<kTransB, kWB>(bf, b, n0 + nt * 8, k);
      Mma(acc[nt], af, bf[0], bf[1]);
      Mma(acc[nt + 1], af, bf[2], bf[3]);
    }
  }
}

template <int kNT>
__device__ __forceinline__ void ZeroAcc(float (&acc)[kNT][4]) {
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
}

// Eight consecutive elements of a f32 or bf16 tensor at element index i (i % 8 == 0, storage
// 16-byte aligned) as packed bf16.
__device__ __forceinline__ uint4 Load8(FloatPtr src, int64_t i) {
  if (src.bf16) return *reinterpret_cast<const uint4*>(static_cast<const bf16*>(src.p) + i);
  const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(src.p) + i);
  const float4 lo = p[0], hi = p[1];
  return uint4{PackBf16(lo.x, lo.y), PackBf16(lo.z, lo.w), PackBf16(hi.x, hi.y),
               PackBf16(hi.z, hi.w)};
}

// Eight consecutive elements of a f32 or bf16 tensor at element index i (as Load8), as floats.
__device__ __forceinline__ void Load8Floats(FloatPtr src, int64_t i, float (&x)[8]) {
  if (src.bf16) {
    const uint4 u = *reinterpret_cast<const uint4*>(static_cast<const bf16*>(src.p) + i);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[e]));
      x[2 * e] = f.x, x[2 * e + 1] = f.y;
    }
  } else {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(src.p) + i);
    const float4 lo = p[0], hi = p[1];
    x[0] = lo.x, x[1] = lo.y, x[2] = lo.z, x[3] = lo.w, x[4] = hi.x, x[5] = hi.y, x[6] = hi.z,
    x[7] = hi.w;
  }
}

// dst (swizzled, kD-element rows) [r][e] = bf16(src row row0 + r, head `head`, element e) for
// r < n, zeros for n ≤ r < rows (the padding of a sequence's last chunk).
template <int kD, int kThreads>
__device__ void StageRows(FloatPtr src, int64_t row0, int ld, int head, int n, int rows,
                          bf16* dst) {
  constexpr int kGroups = kD / 8;
  for (int idx = threadIdx.x; idx < rows * kGroups; idx += kThreads) {
    const int r = idx / kGroups, e = idx % kGroups * 8;
    const uint4 x = r < n ? Load8(src, (row0 + r) * ld + int64_t{head} * kD + e) : uint4{};
    *reinterpret_cast<uint4*>(dst + SwzOff<kD>(r, e)) = x;
  }
}

// StageRows, by cp.async when the source is bf16 (the caller commits and waits); f32 sources are
// converted through registers as StageRows does.
template <int kD, int kThreads>
__device__ void StageRowsAsync(FloatPtr src, int64_t row0, int ld, int head, int n, int rows,
                               bf16* dst) {
  if (!src.bf16) return StageRows<kD, kThreads>(src, row0, ld, head, n, rows, dst);
  constexpr int kGroups = kD / 8;
  const bf16* base = static_cast<const bf16*>(src.p);
  for (int idx = threadIdx.x; idx < rows * kGroups; idx += kThreads) {
    const int r = idx / kGroups, e = idx % kGroups * 8;
    const int64_t i = r < n ? (row0 + r) * ld + int64_t{head} * kD + e : 0;
    CpAsync16(dst + SwzOff<kD>(r, e), base + i, r < n);
  }
}

// A bf16 [kD, kD] state into dst (swizzled, kD-element rows) by cp.async.
template <int kD, int kThreads>
__device__ void StageStateAsync(const bf16* src, bf16* dst) {
  constexpr int kGroups = kD / 8;
  for (int idx = threadIdx.x; idx < kD * kGroups; idx += kThreads) {
    const int a = idx / kGroups, b = idx % kGroups * 8;
    CpAsync16(dst + SwzOff<kD>(a, b), src + a * kD + b, true);
  }
}

// An f32 [kD, kD] state held in registers between its loads and its bf16 store to shared memory,
// so that the loads overlap the work in between. Thread x owns 8-element groups x + kThreads·i.
template <int kD, int kThreads>
struct StateInRegs {
  static constexpr int kTotal = kD * kD / 8, kN = (kTotal + kThreads - 1) / kThreads;
  float4 v[kN][2];

  __device__ __forceinline__ void Load(const float* src) {
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      const int idx = threadIdx.x + kThreads * i;
      if (kTotal % kThreads == 0 || idx < kTotal) {
        const float4* p = reinterpret_cast<const float4*>(src + idx * 8);
        v[i][0] = p[0], v[i][1] = p[1];
      }
    }
  }
  __device__ __forceinline__ void Store(bf16* dst) const {  // swizzled, kD-element rows
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      const int idx = threadIdx.x + kThreads * i;
      if (kTotal % kThreads == 0 || idx < kTotal) {
        const int a = idx / (kD / 8), b = idx % (kD / 8) * 8;
        const float4 lo = v[i][0], hi = v[i][1];
        *reinterpret_cast<uint4*>(dst + SwzOff<kD>(a, b)) = uint4{
            PackBf16(lo.x, lo.y), PackBf16(lo.z, lo.w), PackBf16(hi.x, hi.y), PackBf16(hi.z, hi.w)};
      }
    }
  }
};

// Stores (x, y) at element i, i + 1 of an f32 or bf16 tensor (i even).
__device__ __forceinline__ void StorePair(FloatPtr dst, int64_t i, float x, float y) {
  if (dst.bf16) {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(dst.p) + i) = __floats2bfloat162_rn(x, y);
  } else {
    *reinterpret_cast<float2*>(static_cast<float*>(dst.p) + i) = make_float2(x, y);
  }
}

}  // namespace tandem::kernels::cuda::linear_bwd

// Internal to the attention backward (include from .cu files only): the two work items of the
// backward kernel, FlashAttention-2 style on mma.sync tensor cores, P recomputed from lse.
//   dK/dV item (64 keys of one kv head and sequence): loops over the group's query heads, then the
//     query tiles from the diagonal on, ascending; dV += Pᵀ·dO and dK += dSᵀ·Q stay in registers
//     (a warp owns 16 keys × D) and are written once.
//   dQ item (64 query rows of one head and sequence): loops over the KV tiles 0..diagonal
//     ascending; dQ += dS·K in registers, written once.
// Every position is sequence-relative (tiles start at the sequence's first token, rows past its end
// are loaded as zeros and masked), so a sequence's gradients do not depend on the rest of the pack.
// P and dS are rounded to bf16 for the second-stage mmas (the documented precision of the pass).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/softmax_attention/attention_bwd_mma.cuh"

namespace tandem::kernels::cuda::attention_bwd {

inline constexpr int kRows = 64;  // query rows / keys per tile
inline constexpr int kWarps = 4;  // a warp owns 16 rows of the item's tile
inline constexpr int kThreads = kWarps * 32;
inline constexpr int kChunk = 32;  // columns of S a warp holds at once
inline constexpr int kDkDv = 0, kDq = 1;

struct BwdArgs {
  const __nv_bfloat16* q;    // [T, H, D]
  const __nv_bfloat16* k;    // [T, Hkv, D]
  const __nv_bfloat16* v;    // [T, Hkv, D]
  const __nv_bfloat16* d_o;  // [T, H, D]
  const float* lse2;         // [H, T] lse·log2(e)
  const float* delta;        // [H, T] rowsum(dO ∘ O)
  FloatPtr dq, dk, dv;
  int t, h, hkv, group;
  float scale, scale_log2;  // scale, scale·log2(e)
};

struct WorkItem {
  int kind;  // kDkDv or kDq
  int seq_start, seq_len;
  int tile;  // key tile (kDkDv) or query tile (kDq) within the sequence
  int head;  // kv head (kDkDv) or query head (kDq)
};

// Shared memory of one block: two fixed tiles (K, V or Q, dO), two stages of two streamed tiles
// (Q, dO or K, V) and two stages of two row vectors (lse2, delta). Rows padded by 16 bytes so the
// eight row addresses of an ldmatrix hit distinct banks.
template <int kD>
struct Smem {
  static constexpr int kLd = kD + 8;
  static constexpr int kTileElems = kRows * kLd;
  static constexpr size_t kBytes = 6 * kTileElems * sizeof(__nv_bfloat16) + 4 * kRows * 4;
  __nv_bfloat16* base;
  __device__ __nv_bfloat16* Fixed(int i) const { return base + i * kTileElems; }
  __device__ __nv_bfloat16* Stream(int stage, int i) const {
    return base + (2 + 2 * stage + i) * kTileElems;
  }
  __device__ float* Vec(int stage, int i) const {
    return reinterpret_cast<float*>(base + 6 * kTileElems) + (2 * stage + i) * kRows;
  }
};

// Rows [0, kRows) of a tile into smem; row r at src + r·stride; zeros from row `valid` on.
template <int kD>
__device__ __forceinline__ void LoadRows(__nv_bfloat16* dst, const __nv_bfloat16* src,
                                         int64_t stride, int valid) {
  constexpr int kPerRow = kD / 8;
  for (int c = threadIdx.x; c < kRows * kPerRow; c += kThreads) {
    const int r = c / kPerRow, col = (c % kPerRow) * 8;
    const bool ok = r < valid;
    CpAsync16(dst + r * Smem<kD>::kLd + col, ok ? src + r * stride + col : src, ok);
  }
}

// lse2 and delta of rows [0, kRows) starting at src offset `first` ([H, T] layout: contiguous).
__device__ __forceinline__ void LoadVecs(float* lse_dst, float* delta_dst, const BwdArgs& a,
                                         int64_t first, int valid) {
  const int r = threadIdx.x % kRows;
  const bool ok = r < valid;
  if (threadIdx.x < kRows) {
    CpAsync4(lse_dst + r, ok ? a.lse2 + first + r : a.lse2, ok);
  } else if (threadIdx.x < 2 * kRows) {
    CpAsync4(delta_dst + r, ok ? a.delta + first + r : a.delta, ok);
  }
}

// s += A·Bᵀ and dp += A2·B2ᵀ for a warp's 16 rows (from a, a2 at row0) × 32 columns (from b, b2
// at col0; both tiles stored [column][k]), k over D ascending.
template <int kD>
__device__ __forceinline__ void TwoScoreTiles(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                              const __nv_bfloat16* a2, const __nv_bfloat16* b2,
                                              int row0, int col0, float (&s)[4][4],
                                              float (&dp)[4][4]) {
  constexpr int kLd = Smem<kD>::kLd;
#pragma unroll
  for (int k0 = 0; k0 < kD; k0 += 16) {
    uint32_t fa[4], fa2[4];
    LoadA(fa, a, kLd, row0, k0);
    LoadA(fa2, a2, kLd, row0, k0);
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      uint32_t fb[4];
      LoadBNk(fb, b, kLd, col0 + 16 * np, k0);
      Mma(s[2 * np], fa, fb[0], fb[1]);
      Mma(s[2 * np + 1], fa, fb[2], fb[3]);
      LoadBNk(fb, b2, kLd, col0 + 16 * np, k0);
      Mma(dp[2 * np], fa2, fb[0], fb[1]);
      Mma(dp[2 * np + 1], fa2, fb[2], fb[3]);
    }
  }
}

// acc[16 rows × D] += X (16 × 32, accumulator tiles x) · B (32 × D, stored [k][D] from row k0).
template <int kD>
__device__ __forceinline__ void AccumulateXB(const float (&x)[4][4], const __nv_bfloat16* b, int k0,
                                             float (&acc)[kD / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < 2; ++kk) {
    uint32_t fa[4];
    AccToA(fa, x[2 * kk], x[2 * kk + 1]);
#pragma unroll
    for (int d0 = 0; d0 < kD; d0 += 16) {
      uint32_t fb[4];
      LoadBKn(fb, b, Smem<kD>::kLd, d0, k0 + 16 * kk);
      Mma(acc[d0 / 8], fa, fb[0], fb[1]);
      Mma(acc[d0 / 8 + 1], fa, fb[2], fb[3]);
    }
  }
}

// p = exp(scale·s − lse) where live, else 0 (in s); dS = p·(dP − δ) (in dp).
__device__ __forceinline__ void ProbsAndDs(float& s, float& dp, bool live, float lse2, float delta,
                                           float scale_log2) {
  const float p = live ? Exp2(__fmaf_rn(s, scale_log2, -lse2)) : 0.0f;
  s = p;
  dp = __fmul_rn(p, __fsub_rn(dp, delta));
}

}  // namespace tandem::kernels::cuda::attention_bwd

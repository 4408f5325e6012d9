// Internal to kernels/softmax_attention (include from .cu files only): the tensor-core path for
// bf16 q/k/v. AttendTileMma is the ONE warp routine that folds a 64-key K/V tile into the warp's 16
// query rows (one m16 tile) with online softmax; MergeWeightsOf/MergeValue/FinalOutput/Lse are the
// ONE split merge and finalisation. The packed forward and paged decode both call them, so a row's
// bits depend only on the row: mma.sync m16n8k16 (bf16 in, fp32 accumulate) with each score's
// k steps over d ascending from zero, each output's k steps over the tile's keys ascending, row
// max/sum over the thread's values in a fixed order then a quad butterfly (every lane of the quad
// ends with the same bits). Scores are scaled by scale·log2(e) inside the exponent's fused
// multiply-add and exponentiated by the MUFU (Exp2); the running max m is kept in that log2 domain.
// P is rounded to bf16 for the P·V product (as in FlashAttention); l sums the fp32 p. Compiled with
// --fmad=false; products and sums are explicit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/core/contract.h"
#include "kernels/core/mma_sync.cuh"

namespace tandem::kernels::cuda::attention_mma {

using bf16 = __nv_bfloat16;

inline constexpr int kTile = static_cast<int>(kAttentionKvTile);        // keys per tile (64)
inline constexpr int kSplit = static_cast<int>(kAttentionSplitLength);  // keys per split (1024)
inline constexpr int kWarpRows = 16;                                    // query rows per warp
inline constexpr float kLog2e = 1.44269504088896341f, kLn2 = 0.693147180559945309f;
static_assert(kTile == 64, "the tile routine holds a 16x64 score block per warp");

// Shared-memory row stride in bf16 for Q, K and V tiles: 16 bytes of padding per row, so the eight
// 16-byte rows one ldmatrix phase reads fall in eight distinct bank quads (kD = 32, 64, 128).
template <int kD>
inline constexpr int kLd = kD + 8;

using mma::CpAsync16;
using mma::CpAsyncCommit;
using mma::CpAsyncWait;
using mma::Exp2;
using mma::LdMatrixX4;
using mma::LdMatrixX4Trans;
using mma::PackBf16;
using mma::SmemAddr;
// d += a · b for one 16x8 tile over 16 k (bf16 in, fp32 accumulate); plain asm, scheduled freely.
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  mma::MmaSchedulable(d, a, b0, b1);
}

// Copies rows [0, kTile) of a K or V tile (row j at src + row_offset(j), kD bf16) into smem with
// stride kLd, zeros from row `valid` on. Work split over `threads` threads; call CpAsyncCommit
// after.
template <int kD, typename RowOffset>
__device__ __forceinline__ void LoadTileAsync(const bf16* src, int valid, RowOffset row_offset,
                                              bf16* dst, int threads) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < kTile * kChunks; idx += threads) {
    const int j = idx / kChunks, c = (idx % kChunks) * 8;
    const bool ok = j < valid;
    CpAsync16(dst + j * kLd<kD> + c, ok ? src + row_offset(j) + c : src, ok);
  }
}

// The warp's Q rows [16, kD] in smem (stride kLd) as m16n8k16 A fragments, one per 16 d.
template <int kD>
__device__ __forceinline__ void LoadQFragments(const bf16* qs, uint32_t (&qf)[kD / 16][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    LdMatrixX4(qf[ks], qs + (lane & 15) * kLd<kD> + ks * 16 + (lane >> 4) * 8);
  }
}

// Online-softmax state of the thread's two rows of the warp's m16 tile: rows lane/4 (index 0) and
// lane/4 + 8 (index 1); acc is the m16n8 output fragment per 8 dims (elements 0, 1 row 0; 2, 3
// row 1; columns 8n + 2(lane%4) + {0, 1}). m in log2 units (max of scale·log2e·q·k).
template <int kD>
struct WarpState {
  float m[2], l[2], acc[kD / 8][4];
  __device__ __forceinline__ void Reset() {
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0f;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  }
};

// S = Q·Kᵀ for the warp's 16 rows and the tile's 64 keys: s[n] holds keys 8n .. 8n + 7. Each
// score starts at zero and takes the k steps d = 0, 16, 32, ... in order.
template <int kD>
__device__ __forceinline__ void ScoreTile(const uint32_t (&qf)[kD / 16][4], const bf16* ks,
                                          float (&s)[8][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < 4; ++np) {  // keys 16np .. 16np + 15: two n8 tiles per ldmatrix
      uint32_t b[4];
      LdMatrixX4(b, ks + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * kLd<kD> + kk * 16 +
                        ((lane >> 3) & 1) * 8);
      Mma(s[2 * np], qf[kk], b[0], b[1]);
      Mma(s[2 * np + 1], qf[kk], b[2], b[3]);
    }
  }
}

// The online-softmax step on the score block s (m16n8 C fragments, keys 8n .. 8n + 7 in s[n]; the
// same layout as a wgmma m64n64 accumulator's warp slice), shared by the mma.sync and wgmma tile
// routines so both do the same fp32 operations in the same order. Row i of the thread sees keys
// [0, lim[i]) of the tile (kMask; without it all 64, which is what the masked variant does for
// lim = 64, bit for bit). A row with no key in the tile keeps its state (α = 1, p = 0).
//   c = scale·log2e;  m' = max(m, (max_j q·k_j)·c);  p_j = 2^fma(q·k_j, c, −m');  α = 2^(m − m')
//   l' = l·α + Σ_j p_j;   acc := acc·α;   pa = bf16(p) as A fragments per 16 keys.
// It runs as two parts: SoftmaxScores (m, l, p in s, α) and RescalePack (acc·α, pa); the pipelined
// wgmma forward runs the first while the previous tile's P·V is still accumulating into acc.
template <int kD, bool kMask>
__device__ __forceinline__ void SoftmaxScores(float (&s)[8][4], const int (&lim)[2],
                                              float scale_log2, WarpState<kD>& st,
                                              float (&alpha)[2]) {
  const int t = threadIdx.x % 4;
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (kMask && n * 8 + 2 * t + (e & 1) >= lim[e >> 1]) s[n][e] = -INFINITY;
      mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
    }
  }
  float mu[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    // Rounding is monotone, so the scaled maximum is the maximum of the scaled scores.
    const float m_new = fmaxf(st.m[i], __fmul_rn(mx[i], scale_log2));
    mu[i] = m_new == -INFINITY ? 0.0f : m_new;  // no key yet: p = α = 0, not NaN
    alpha[i] = Exp2(__fsub_rn(st.m[i], mu[i]));
    st.m[i] = m_new;
  }
  float sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[n][e] = Exp2(__fmaf_rn(s[n][e], scale_log2, -mu[e >> 1]));
      sum[e >> 1] = __fadd_rn(sum[e >> 1], s[n][e]);
    }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {  // butterfly: (a0 + a1) + (a2 + a3) on every lane of the quad
    sum[i] = __fadd_rn(sum[i], __shfl_xor_sync(0xffffffffu, sum[i], 1));
    sum[i] = __fadd_rn(sum[i], __shfl_xor_sync(0xffffffffu, sum[i], 2));
    st.l[i] = __fadd_rn(__fmul_rn(st.l[i], alpha[i]), sum[i]);
  }
}
template <int kD>
__device__ __forceinline__ void RescalePack(const float (&s)[8][4], const float (&alpha)[2],
                                            float (&acc)[kD / 8][4], uint32_t (&pa)[4][4]) {
  // Where no row of the warp raised its maximum, α = 1 and acc·1 is acc: the warp skips the
  // multiplies (the same bits either way). Each 1,024-key split restarts the maximum, so that is
  // the minority of tiles (15 % of a 16K forward's, measured).
  if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[n][e] = __fmul_rn(acc[n][e], alpha[e >> 1]);
    }
  }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {  // keys 16kk .. 16kk + 15: P's A fragment from two S tiles
    pa[kk][0] = PackBf16(s[2 * kk][0], s[2 * kk][1]);
    pa[kk][1] = PackBf16(s[2 * kk][2], s[2 * kk][3]);
    pa[kk][2] = PackBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    pa[kk][3] = PackBf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
}
template <int kD, bool kMask>
__device__ __forceinline__ void SoftmaxTile(float (&s)[8][4], const int (&lim)[2], float scale_log2,
                                            WarpState<kD>& st, uint32_t (&pa)[4][4]) {
  float alpha[2];
  SoftmaxScores<kD, kMask>(s, lim, scale_log2, st, alpha);
  RescalePack<kD>(s, alpha, st.acc, pa);
}

// acc += P·V for the warp's 16 rows: k steps over the tile's keys ascending (16 per step).
template <int kD>
__device__ __forceinline__ void AccumulatePv(const uint32_t (&pa)[4][4], const bf16* vs,
                                             float (&acc)[kD / 8][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
    for (int dp = 0; dp < kD / 16; ++dp) {  // dims 16dp .. 16dp + 15: two n8 tiles
      uint32_t b[4];
      LdMatrixX4Trans(b, vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd<kD> + dp * 16 +
                             (lane >> 4) * 8);
      Mma(acc[2 * dp], pa[kk], b[0], b[1]);
      Mma(acc[2 * dp + 1], pa[kk], b[2], b[3]);
    }
  }
}

// Folds the tile in smem (ks, vs: [kTile, kLd] bf16) into st (SoftmaxTile says how).
template <int kD, bool kMask>
__device__ __forceinline__ void AttendTileMma(const uint32_t (&qf)[kD / 16][4], const bf16* ks,
                                              const bf16* vs, const int (&lim)[2], float scale_log2,
                                              WarpState<kD>& st) {
  float s[8][4];
  ScoreTile<kD>(qf, ks, s);
  uint32_t pa[4][4];
  SoftmaxTile<kD, kMask>(s, lim, scale_log2, st, pa);
  AccumulatePv<kD>(pa, vs, st.acc);
}

// The decode's half-tile pieces (32 keys of K or V in smem, stride kLd): ScoreHalf fills s[4h ..
// 4h + 3] (keys 32h .. 32h + 31) and AccumulatePvHalf takes the k steps kk = 2h, 2h + 1. Every
// score and output element sees exactly the mma sequence of ScoreTile / AccumulatePv (each s[n]
// starts at zero and takes d ascending; acc takes kk = 0, 1 from half 0, then 2, 3 from half 1), so
// ScoreHalf<0>, ScoreHalf<1>, SoftmaxTile, AccumulatePvHalf<0>, AccumulatePvHalf<1> is
// AttendTileMma bit for bit; only the smem each step needs is smaller, which lets decode keep more
// loads in flight.
template <int kD, int h>
__device__ __forceinline__ void ScoreHalf(const uint32_t (&qf)[kD / 16][4], const bf16* ks_half,
                                          float (&s)[8][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 4 * h; n < 4 * h + 4; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
    for (int np = 2 * h; np < 2 * h + 2; ++np) {
      uint32_t b[4];
      LdMatrixX4(b, ks_half + ((np - 2 * h) * 16 + (lane & 7) + ((lane >> 4) << 3)) * kLd<kD> +
                        kk * 16 + ((lane >> 3) & 1) * 8);
      Mma(s[2 * np], qf[kk], b[0], b[1]);
      Mma(s[2 * np + 1], qf[kk], b[2], b[3]);
    }
  }
}
template <int kD, int h>
__device__ __forceinline__ void AccumulatePvHalf(const uint32_t (&pa)[4][4], const bf16* vs_half,
                                                 float (&acc)[kD / 8][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 2 * h; kk < 2 * h + 2; ++kk) {
#pragma unroll
    for (int dp = 0; dp < kD / 16; ++dp) {
      uint32_t b[4];
      LdMatrixX4Trans(b, vs_half +
                             ((kk - 2 * h) * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd<kD> +
                             dp * 16 + (lane >> 4) * 8);
      Mma(acc[2 * dp], pa[kk], b[0], b[1]);
      Mma(acc[2 * dp + 1], pa[kk], b[2], b[3]);
    }
  }
}

// The split merge, element by element (any layout): the running total (empty: m = −inf, l = 0,
// acc = 0) and a split's partial become
//   m' = max(m, m_p);  x' = x·2^(m − m') + x_p·2^(m_p − m')  for x = l and each acc element.
struct MergeWeights {
  float m, a, b;
};
__device__ __forceinline__ MergeWeights MergeWeightsOf(float m_total, float m_part) {
  const float m = fmaxf(m_total, m_part);
  return {m, m_total == -INFINITY ? 0.0f : Exp2(__fsub_rn(m_total, m)),
          m_part == -INFINITY ? 0.0f : Exp2(__fsub_rn(m_part, m))};
}
__device__ __forceinline__ float MergeValue(float total, float part, const MergeWeights& w) {
  return __fadd_rn(__fmul_rn(total, w.a), __fmul_rn(part, w.b));
}
// o = acc · (1 / l): one correctly rounded reciprocal per row (InverseSum), then one multiply per
// element, where a division per element cost the forward's epilogue about eight instructions each.
// lse = (m + log2 l)·ln 2 (natural log, as the CPU kernel reports it).
__device__ __forceinline__ float InverseSum(float l) { return __frcp_rn(l); }
__device__ __forceinline__ float FinalOutput(float acc, float inv_l) {
  return __fmul_rn(acc, inv_l);
}
__device__ __forceinline__ float Lse(float m, float l) {
  return __fmul_rn(__fadd_rn(m, log2f(l)), kLn2);
}

}  // namespace tandem::kernels::cuda::attention_mma

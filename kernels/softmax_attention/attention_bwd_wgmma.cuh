// Internal to the attention backward (include from softmax_attention_bwd.cu only): the sm_90a
// wgmma building blocks of the split backward at D = 128 (attention_bwd_wgmma_split.cuh): 64-row
// tiles of 128 dims in the forward's 128-byte-swizzled layout, loaded by cp.async; score products
// with both operands in smem; gradient products with P or dS as register A fragments; the lse2 / δ
// row loads and the gradient stores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/softmax_attention/attention_bwd_tiles.cuh"
#include "kernels/softmax_attention/attention_wgmma.cuh"

namespace tandem::kernels::cuda::attention_bwd {

using wgmma::WgmmaSsKk;

using attention_mma::KTileDesc;
using attention_mma::TileDesc;
using attention_mma::VTileDesc;

using bf16 = __nv_bfloat16;

inline constexpr int kWgThreads = 256;  // two warpgroups

// 64 rows × 128 dims into the swizzled layout; row r from src + r·stride, zeros from row `valid`.
// Thread x copies chunk x % 16 of rows x / 16 + 16i: the same swizzle for every i, so the four
// copies differ only by constant offsets.
__device__ __forceinline__ void LoadSwTile(unsigned char* dst, const bf16* src, int64_t stride,
                                           int valid, const bf16* fallback) {
  static_assert(kWgThreads == 256, "16 rows of 16 chunks per pass");
  const int r = threadIdx.x / 16, c = threadIdx.x % 16;
  unsigned char* d = dst + attention_mma::SwizzledOffset(r, c);
  const bf16* p = src + r * stride + c * 8;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const bool ok = r + 16 * i < valid;
    CpAsync16(d + 16 * 128 * i, ok ? p + 16 * i * stride : fallback, ok);
  }
}

// d = A·B over k = 128 dims (8 steps ascending, the first overwriting), A and B K-major swizzled
// 64-row tiles in smem; issued and committed as one group, not waited for.
__device__ __forceinline__ void IssueScore(const unsigned char* a, const unsigned char* b,
                                           float (&d)[8][4]) {
  const TileDesc da = KTileDesc(a), db = KTileDesc(b);
  attention_mma::WgFence();
  WgmmaSsKk<0>(d, da.K(0), db.K(0));
#pragma unroll
  for (int kk = 1; kk < 8; ++kk) WgmmaSsKk<1>(d, da.K(kk), db.K(kk));
  attention_mma::WgCommit();
}

// The lse2 or δ values of a thread's score elements (64 per tile in smem, indexed by the query's
// place in the tile), held in registers: loaded ahead of the wait for the scores, so the softmax
// does not wait for shared memory after it. kKeyRows (dK/dV): columns are queries, 16 per thread;
// else (dQ) rows are, 2 per thread.
template <bool kKeyRows>
struct QueryValues {
  float v[kKeyRows ? 16 : 2];
  __device__ __forceinline__ void Load(const float* tile) {
    const int lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
    if constexpr (kKeyRows) {
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        v[2 * n] = tile[8 * n + 2 * t4];
        v[2 * n + 1] = tile[8 * n + 2 * t4 + 1];
      }
    } else {
      v[0] = tile[g];
      v[1] = tile[g + 8];
    }
  }
  // Element (n, e) of an m16n8 accumulator block: column 8n + 2·t4 + e % 2, row g + 8(e / 2).
  __device__ __forceinline__ float At(int n, int e) const {
    if constexpr (kKeyRows) {
      return v[2 * n + e % 2];
    } else {
      return v[e / 2];
    }
  }
};

// P in place of the scores s (rows: the warp's 16 of the warpgroup's 64, from row0; 64 columns
// from col0), masked to key <= query < len, and P as bf16 A fragments. kKeyRows: rows are keys and
// columns queries (dK/dV), else the reverse (dQ). The mask is computed for every tile (selects, no
// branch near in-flight wgmmas).
template <bool kKeyRows>
__device__ __forceinline__ void ProbsSplit(float (&s)[8][4], int row0, int col0, int len,
                                           const QueryValues<kKeyRows>& lse2, float scale_log2,
                                           uint32_t (&pa)[4][4]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  // Element (n, e) is row row0 + g + 8(e / 2), column col0 + 2·t4 + 8n + e % 2. With the
  // thread's terms gathered into `causal` and `tail`, key <= query and query < len become one
  // compare each against a constant of (n, e).
  const int causal = kKeyRows ? row0 - col0 + g - 2 * t4 : col0 - row0 + 2 * t4 - g;
  const int tail = kKeyRows ? col0 + 2 * t4 - len : row0 + g - len;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      // Row g + dr, column 2·t4 + dc of the tile.
      const int dr = 8 * (e / 2), dc = 8 * n + e % 2;
      const bool live =
          kKeyRows ? causal <= dc - dr && tail < -dc : causal <= dr - dc && tail < -dr;
      const float p = Exp2(__fmaf_rn(s[n][e], scale_log2, -lse2.At(n, e)));
      s[n][e] = live ? p : 0.0f;
    }
  }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) AccToA(pa[kk], s[2 * kk], s[2 * kk + 1]);
}

// dS = P·(dP − δ) in place of dp, and as bf16 A fragments. With ProbsSplit, the operations of
// ProbsAndDs.
template <bool kKeyRows>
__device__ __forceinline__ void DsSplit(const float (&p)[8][4], float (&dp)[8][4],
                                        const QueryValues<kKeyRows>& delta, uint32_t (&dsa)[4][4]) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      dp[n][e] = __fmul_rn(p[n][e], __fsub_rn(dp[n][e], delta.At(n, e)));
    }
  }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) AccToA(dsa[kk], dp[2 * kk], dp[2 * kk + 1]);
}

// acc += A·B (acc = A·B when `first`) with A as four register fragments (16 k each, ascending)
// and B the N-major 64-row tile at b (k rows); issued and committed, not waited for. A gradient's
// first product overwrites its registers, so no instruction but a wgmma ever defines them: ptxas
// then lets the product run on across a loop's back edge (a zeroing move there would serialise
// every wgmma of the kernel).
__device__ __forceinline__ void IssueAccumulate(float (&acc)[16][4], const uint32_t (&a)[4][4],
                                                const unsigned char* b, bool first) {
  const TileDesc db = VTileDesc(b);
  attention_mma::WgmmaN128<true>(acc, a[0], db.V(0), /*accumulate=*/!first);
#pragma unroll
  for (int kk = 1; kk < 4; ++kk) attention_mma::WgmmaN128<true>(acc, a[kk], db.V(kk));
}

// 64 lse2 and δ values from [H, T] offset `first` (zeros from index `valid` on) by threads
// [0, 128): lse2 to lse_dst, δ to delta_dst. `n` values: 64 or 128 (then threads [0, 256)).
__device__ __forceinline__ void LoadLseDelta(float* lse_dst, float* delta_dst, const BwdArgs& b,
                                             int64_t first, int valid, int n) {
  const int r = threadIdx.x % n;
  const bool ok = r < valid;
  if (threadIdx.x < n) {
    CpAsync4(lse_dst + r, ok ? b.lse2 + first + r : b.lse2, ok);
  } else if (threadIdx.x < 2 * n) {
    CpAsync4(delta_dst + r, ok ? b.delta + first + r : b.delta, ok);
  }
}

// This thread's two rows (row0 + g, + 8, stored when < len) × 128 columns of acc·mul into
// dst [.., row_stride] from `base` (the sequence's first row, the head's column offset).
__device__ __forceinline__ void StoreRows(const FloatPtr& dst, const float (&acc)[16][4], int row0,
                                          int len, int64_t base, int64_t row_stride, float mul,
                                          bool scaled) {
  const int lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + g + 8 * r;
    if (row >= len) continue;
    const int64_t off = base + int64_t{row} * row_stride + 2 * t4;
#pragma unroll
    for (int n = 0; n < 16; ++n) {
      const float x = acc[n][2 * r], y = acc[n][2 * r + 1];
      dst.Store(off + 8 * n, scaled ? __fmul_rn(x, mul) : x);
      dst.Store(off + 8 * n + 1, scaled ? __fmul_rn(y, mul) : y);
    }
  }
}

}  // namespace tandem::kernels::cuda::attention_bwd

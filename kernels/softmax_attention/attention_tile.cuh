// Internal to kernels/softmax_attention (include from .cu files only), the fp32 CUDA-core path
// (taken when an operand is f32; bf16 runs on tensor cores, attention_mma.cuh): the ONE device
// routine that folds a KV tile into a warp's query rows with online softmax, the ONE split-merge
// routine and the finalisation, shared by its forward and decode kernels (contract rule 2).
// Every row's arithmetic depends only on that row: its scores are fp32 FMA chains over d
// ascending, its probability sum a fixed butterfly over the warp, its output an FMA chain over the
// tile's keys ascending; the other rows a warp carries (or whether they are live) change nothing.
// All products and sums use explicit round-to-nearest intrinsics, and the file is compiled with
// --fmad=false, so two inlined copies of a routine cannot be contracted differently.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/core/contract.h"

namespace tandem::kernels::cuda::attention {

inline constexpr int kTile = static_cast<int>(kAttentionKvTile);        // keys per tile (64)
inline constexpr int kSplit = static_cast<int>(kAttentionSplitLength);  // keys per split (1024)
inline constexpr int kRowsPerWarp = 8;
static_assert(kTile == 64, "a lane owns keys lane and lane + 32 of a tile");

// A forward block's work: flat rows [row0, row0 + rows) (position-major, then the kv head's group
// of query heads) of the sequence starting at token seq_start, for kv head kv_head.
struct FwdItem {
  int seq_start, seq_len, row0, kv_head;
};

// Online-softmax state of one query row; a lane holds dims lane + 32·i of acc.
template <int kD>
struct RowState {
  static constexpr int kPer = kD / 32;
  float m, l, acc[kPer];
  __device__ __forceinline__ void Reset() {
    m = -INFINITY;
    l = 0.0f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) acc[i] = 0.0f;
  }
};

// Shared memory one block uses: q rows [rows, kD], the K tile [kTile, kD + 4] (padded: lane j
// reads row j with 16-byte loads, conflict-free), the V tile [kTile, kD] and the probabilities of
// each warp's rows [warps, kRowsPerWarp, kTile].
template <int kD>
struct TileSmem {
  static constexpr int kLdk = kD + 4;
  static size_t Bytes(int warps) {
    return sizeof(float) *
           (size_t{8} * warps * kD + kTile * kLdk + kTile * kD + size_t{8} * warps * kTile);
  }
  float *q, *k, *v, *p;
  __device__ static TileSmem Carve(float* base, int warps) {
    TileSmem s;
    s.q = base;
    s.k = s.q + 8 * warps * kD;
    s.v = s.k + kTile * kLdk;
    s.p = s.v + kTile * kD;
    return s;
  }
};

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Butterfly: every lane ends with the same bits (a + b == b + a), in an order fixed by the lane.
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float ExpOrZero(float x, float m) {  // e^(x − m); 0 for m = −inf
  return m == -INFINITY ? 0.0f : expf(__fsub_rn(x, m));
}

// Folds keys [0, n[r]) of the tile in smem into row r of this warp (n[r] = 0: row untouched).
//   s_j = scale · (q·k_j);  m' = max(m, max_j s_j);  p_j = e^(s_j − m');  α = e^(m − m')
//   l' = l·α + Σ_j p_j (lane partials p_lane + p_lane+32, then WarpSum)
//   acc' = acc·α, then acc' = fma(p_j, v_j, acc') for j = 0 .. n − 1
// q: this warp's [kRowsPerWarp, kD] rows; p: its [kRowsPerWarp, kTile] scratch.
template <int kD>
__device__ __forceinline__ void AttendTile(const float* q, const float* k, const float* v, float* p,
                                           const int (&n)[kRowsPerWarp], float scale,
                                           RowState<kD> (&st)[kRowsPerWarp]) {
  constexpr int kLdk = TileSmem<kD>::kLdk, kPer = kD / 32;
  const int lane = threadIdx.x % 32;
  float s[kRowsPerWarp][2];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) s[r][0] = s[r][1] = 0.0f;
  for (int d = 0; d < kD; d += 4) {
    const float4 k0 = *reinterpret_cast<const float4*>(k + lane * kLdk + d);
    const float4 k1 = *reinterpret_cast<const float4*>(k + (lane + 32) * kLdk + d);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float4 qv = *reinterpret_cast<const float4*>(q + r * kD + d);
      s[r][0] = __fmaf_rn(
          qv.w, k0.w, __fmaf_rn(qv.z, k0.z, __fmaf_rn(qv.y, k0.y, __fmaf_rn(qv.x, k0.x, s[r][0]))));
      s[r][1] = __fmaf_rn(
          qv.w, k1.w, __fmaf_rn(qv.z, k1.z, __fmaf_rn(qv.y, k1.y, __fmaf_rn(qv.x, k1.x, s[r][1]))));
    }
  }
  int n_max = 0;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    n_max = max(n_max, n[r]);
    if (n[r] == 0) continue;  // warp-uniform
    const float s0 = lane < n[r] ? __fmul_rn(scale, s[r][0]) : -INFINITY;
    const float s1 = lane + 32 < n[r] ? __fmul_rn(scale, s[r][1]) : -INFINITY;
    const float m_new = fmaxf(st[r].m, WarpMax(fmaxf(s0, s1)));
    const float alpha = ExpOrZero(st[r].m, m_new);
    const float p0 = lane < n[r] ? expf(__fsub_rn(s0, m_new)) : 0.0f;
    const float p1 = lane + 32 < n[r] ? expf(__fsub_rn(s1, m_new)) : 0.0f;
    st[r].l = __fadd_rn(__fmul_rn(st[r].l, alpha), WarpSum(__fadd_rn(p0, p1)));
    st[r].m = m_new;
#pragma unroll
    for (int i = 0; i < kPer; ++i) st[r].acc[i] = __fmul_rn(st[r].acc[i], alpha);
    p[r * kTile + lane] = p0;
    p[r * kTile + lane + 32] = p1;
  }
  __syncwarp();
  for (int j = 0; j < n_max; ++j) {
    float vj[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) vj[i] = v[j * kD + lane + 32 * i];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      if (j >= n[r]) continue;
      const float pj = p[r * kTile + j];
#pragma unroll
      for (int i = 0; i < kPer; ++i) st[r].acc[i] = __fmaf_rn(pj, vj[i], st[r].acc[i]);
    }
  }
  __syncwarp();
}

// Folds one split's partial into the running total (which starts empty: m = −inf):
//   m' = max(m, m_p),  acc' = acc·e^(m − m') + acc_p·e^(m_p − m'),  l' likewise.
template <int kD>
__device__ __forceinline__ void MergeSplit(const RowState<kD>& part, RowState<kD>& total) {
  const float m_new = fmaxf(total.m, part.m);
  const float a = ExpOrZero(total.m, m_new), b = ExpOrZero(part.m, m_new);
#pragma unroll
  for (int i = 0; i < RowState<kD>::kPer; ++i) {
    total.acc[i] = __fadd_rn(__fmul_rn(total.acc[i], a), __fmul_rn(part.acc[i], b));
  }
  total.l = __fadd_rn(__fmul_rn(total.l, a), __fmul_rn(part.l, b));
  total.m = m_new;
}

// o = acc / l (this lane's dims, in o's storage type); returns lse = m + log l.
template <int kD, typename Store>
__device__ __forceinline__ float Finalize(const RowState<kD>& total, const Store& store) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < RowState<kD>::kPer; ++i)
    store(lane + 32 * i, __fdiv_rn(total.acc[i], total.l));
  return __fadd_rn(total.m, logf(total.l));
}

}  // namespace tandem::kernels::cuda::attention

// Internal to kernels/softmax_attention (included by softmax_attention.cu only): the tensor-core
// kernels for bf16 q/k/v. Forward: one block of 8 warps per 128 flat query rows (position-major,
// then the kv head's group of query heads) of one sequence and kv head, K/V tiles double-buffered
// with cp.async, tiles and splits walked in ascending order; tiles folded with AttendTileMma and
// splits merged with MergeWeightsOf/MergeValue. The paged decode (same routines) is in
// attention_mma_decode.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/core/kernel_smem.h"
#include "kernels/softmax_attention/attention_mma.cuh"
#include "kernels/softmax_attention/attention_tile.cuh"

namespace tandem::kernels::cuda::attention_mma {

using attention::FwdItem;  // kFwdRows flat rows here

struct Dims {
  int h, hkv, group;
  float scale_log2;  // scale · log2(e), rounded once on the host
};

inline constexpr int kFwdWarps = 8;
inline constexpr int kFwdRows = kFwdWarps * kWarpRows;
inline constexpr int kFwdThreads = kFwdWarps * 32;

template <int kD>
struct Smem {
  static constexpr int kTileElems = kTile * kLd<kD>;
  static constexpr size_t kKvBytes = size_t{4} * kTileElems * sizeof(bf16);  // 2 stages x K, V
  static constexpr int kTotalFloats = kD / 2 + 4;  // one thread's running total: acc, m[2], l[2]
  // Forward: the K/V ring, then the Q rows, later reused for the threads' totals.
  static constexpr size_t kFwdBytes =
      kKvBytes + std::max(size_t{kFwdRows} * kLd<kD> * sizeof(bf16),
                          size_t{kTotalFloats} * kFwdThreads * sizeof(float));
  __device__ static bf16* K(unsigned char* base, int stage) {
    return reinterpret_cast<bf16*>(base) + (2 * stage) * kTileElems;
  }
  __device__ static bf16* V(unsigned char* base, int stage) {
    return reinterpret_cast<bf16*>(base) + (2 * stage + 1) * kTileElems;
  }
  __device__ static bf16* Q(unsigned char* base) {
    return reinterpret_cast<bf16*>(base + kKvBytes);
  }
};

// Tiles 0 .. n − 1 through a two-stage cp.async ring: load(stage, i) issues tile i's copies,
// compute(stage, i) reads them. Every thread of the block calls it; groups committed before it
// (the Q rows) have landed when compute(·, 0) runs.
template <typename Load, typename Compute>
__device__ __forceinline__ void TilePipeline(int n, Load&& load, Compute&& compute) {
  load(0, 0);
  CpAsyncCommit();
  for (int i = 0; i < n; ++i) {
    if (i + 1 < n) load((i + 1) & 1, i + 1);
    CpAsyncCommit();
    CpAsyncWait<1>();  // all but the newest group: tile i has landed for this thread ...
    __syncthreads();   // ... and for every thread
    compute(i & 1, i);
    __syncthreads();  // stage i & 1 is free for tile i + 2
  }
}

// Attends the tile to the warp's rows; lim[i] = keys of the tile row i sees (0 .. kTile). The
// masked variant is taken whenever a row may see fewer than all keys (same bits for full rows).
template <int kD>
__device__ __forceinline__ void AttendTile(const uint32_t (&qf)[kD / 16][4], const bf16* ks,
                                           const bf16* vs, const int (&lim)[2], bool full,
                                           float scale_log2, WarpState<kD>& st) {
  if (full) {
    AttendTileMma<kD, false>(qf, ks, vs, lim, scale_log2, st);
  } else {
    AttendTileMma<kD, true>(qf, ks, vs, lim, scale_log2, st);
  }
}

// End of the split starting at s0: st := total ⊕ st for the thread's rows that reach the split
// (the others keep the total). The total is empty before the first split, else in smem (this
// thread's words, stride kFwdThreads); it is written back unless this was the last split.
template <int kD>
__device__ __forceinline__ void MergeSplitForward(WarpState<kD>& st, float* tot, int s0,
                                                  const int (&pos)[2], bool last) {
  constexpr int kAcc = kD / 2;
  const bool first = s0 == 0;
  const auto total = [&](int i, float empty) { return first ? empty : tot[i * kFwdThreads]; };
  MergeWeights w[2];
  bool live[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    live[i] = pos[i] >= s0;
    const float tm = total(kAcc + i, -INFINITY), tl = total(kAcc + 2 + i, 0.0f);
    w[i] = MergeWeightsOf(tm, st.m[i]);
    st.l[i] = live[i] ? MergeValue(tl, st.l[i], w[i]) : tl;
    st.m[i] = live[i] ? w[i].m : tm;
  }
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float ta = total(n * 4 + e, 0.0f);
      st.acc[n][e] = live[e >> 1] ? MergeValue(ta, st.acc[n][e], w[e >> 1]) : ta;
    }
  }
  if (last) return;
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) tot[(n * 4 + e) * kFwdThreads] = st.acc[n][e];
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    tot[(kAcc + i) * kFwdThreads] = st.m[i];
    tot[(kAcc + 2 + i) * kFwdThreads] = st.l[i];
  }
}

__device__ __forceinline__ void StorePair(FloatPtr o, int64_t i, float x, float y) {
  if (o.bf16) {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(o.p) + i) = __floats2bfloat162_rn(x, y);
  } else {
    *reinterpret_cast<float2*>(static_cast<float*>(o.p) + i) = make_float2(x, y);
  }
}

// One forward block's rows: flat rows [row0, row0 + 128) of a piece of `tokens` consecutive tokens
// (q rows q_start.., positions pos0..) and one kv head, attending keys [0, position] of each row.
// Key tile i (keys 64i..) lies at element offset tile_base(i) of k and v, rows kv_ld apart.
struct FwdRows {
  int64_t q_start;
  int tokens, pos0, row0, kv_head;
};

template <int kD, typename TileBase>
__device__ __forceinline__ void AttendRows(const Dims& dm, const bf16* q, const bf16* k,
                                           const bf16* v, FloatPtr o, float* lse, const FwdRows& it,
                                           TileBase tile_base) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int live_rows = min(kFwdRows, it.tokens * dm.group - it.row0);  // > 0
  const auto q_row = [&](int f) {  // flat row f of the piece -> row of q [T, H]
    return (it.q_start + f / dm.group) * dm.h + it.kv_head * dm.group + f % dm.group;
  };
  bf16* qs = Smem<kD>::Q(smem);
  for (int idx = threadIdx.x; idx < kFwdRows * (kD / 8); idx += kFwdThreads) {
    const int r = idx / (kD / 8), c = (idx % (kD / 8)) * 8;
    const bool ok = r < live_rows;
    CpAsync16(qs + r * kLd<kD> + c, ok ? q + q_row(it.row0 + r) * kD + c : q, ok);
  }
  CpAsyncCommit();
  int pos[2];  // positions of the thread's rows; −1 past the live rows
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp * kWarpRows + lane / 4 + 8 * i;
    pos[i] = r < live_rows ? it.pos0 + (it.row0 + r) / dm.group : -1;
  }
  const bool warp_live = warp * kWarpRows < live_rows;
  const int pos_lo = it.pos0 + (it.row0 + warp * kWarpRows) / dm.group;
  const int pos_hi =
      it.pos0 + (it.row0 + min(warp * kWarpRows + kWarpRows, live_rows) - 1) / dm.group;
  const int num_keys = it.pos0 + (it.row0 + live_rows - 1) / dm.group + 1;
  const int num_tiles = (num_keys + kTile - 1) / kTile;
  const int64_t kv_ld = int64_t{dm.hkv} * kD;
  float* tot = reinterpret_cast<float*>(qs) + threadIdx.x;  // reuses the Q rows' smem
  uint32_t qf[kD / 16][4];
  WarpState<kD> st;
  const auto load = [&](int stage, int i) {
    const int valid = min(kTile, num_keys - i * kTile);
    const int64_t base = tile_base(i);
    const auto row = [=](int j) { return j * kv_ld; };
    LoadTileAsync<kD>(k + base, valid, row, Smem<kD>::K(smem, stage), kFwdThreads);
    LoadTileAsync<kD>(v + base, valid, row, Smem<kD>::V(smem, stage), kFwdThreads);
  };
  const auto compute = [&](int stage, int i) {
    const int a = i * kTile;
    if (i == 0) LoadQFragments<kD>(qs + warp * kWarpRows * kLd<kD>, qf);
    if (a % kSplit == 0) st.Reset();
    if (warp_live && pos_hi >= a) {  // else no row of the warp sees a key of the tile: skipped
      const int lim[2] = {max(0, min(kTile, pos[0] + 1 - a)), max(0, min(kTile, pos[1] + 1 - a))};
      AttendTile<kD>(qf, Smem<kD>::K(smem, stage), Smem<kD>::V(smem, stage), lim,
                     pos_lo + 1 >= a + kTile, dm.scale_log2, st);
    }
    if ((a + kTile) % kSplit == 0 || i + 1 == num_tiles) {
      MergeSplitForward<kD>(st, tot, a / kSplit * kSplit, pos, i + 1 == num_tiles);
    }
  };
  TilePipeline(num_tiles, load, compute);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (pos[i] < 0) continue;
    const int64_t row = q_row(it.row0 + warp * kWarpRows + lane / 4 + 8 * i);
    const float inv_l = InverseSum(st.l[i]);
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      StorePair(o, row * kD + n * 8 + 2 * (lane % 4), FinalOutput(st.acc[n][2 * i], inv_l),
                FinalOutput(st.acc[n][2 * i + 1], inv_l));
    }
    if (lse != nullptr && lane % 4 == 0) lse[row] = Lse(st.m[i], st.l[i]);
  }
}

// A packed sequence's rows attending its own keys, contiguous in k and v [T, Hkv, D].
template <int kD>
__global__ void __launch_bounds__(kFwdThreads, 1)
    FwdKernel(Dims dm, const bf16* q, const bf16* k, const bf16* v, FloatPtr o, float* lse,
              const FwdItem* items) {
  const FwdItem it = items[blockIdx.x];
  const FwdRows rows{it.seq_start, it.seq_len, 0, it.row0, it.kv_head};
  AttendRows<kD>(dm, q, k, v, o, lse, rows, [&](int i) {
    return (int64_t{it.seq_start + i * kTile} * dm.hkv + it.kv_head) * kD;
  });
}

// A piece of new tokens attending its sequence's paged cache [blocks, kTile, Hkv, D] (key tile i
// = block tables[table_row][i]): the forward's rows and walk, so each row gets its decode's bits.
struct PagedFwdItem {
  int q_start, tokens, pos0, table_row, row0, kv_head;
};

template <int kD>
__global__ void __launch_bounds__(kFwdThreads, 1)
    PagedFwdKernel(Dims dm, const bf16* q, const bf16* k_cache, const bf16* v_cache,
                   const int32_t* tables, int max_blocks, FloatPtr o, const PagedFwdItem* items) {
  const PagedFwdItem it = items[blockIdx.x];
  const int32_t* table = tables + int64_t{it.table_row} * max_blocks;
  const FwdRows rows{it.q_start, it.tokens, it.pos0, it.row0, it.kv_head};
  AttendRows<kD>(dm, q, k_cache, v_cache, o, nullptr, rows,
                 [&](int i) { return (int64_t{table[i]} * kTile * dm.hkv + it.kv_head) * kD; });
}

template <int kD>
cudaError_t LaunchPagedFwd(cudaStream_t stream, const Dims& dm, const bf16* q, const bf16* k_cache,
                           const bf16* v_cache, const int32_t* tables, int max_blocks, FloatPtr o,
                           const PagedFwdItem* items, int num_items) {
  const cudaError_t e = AllowSmem<&PagedFwdKernel<kD>>(static_cast<int>(Smem<kD>::kFwdBytes));
  if (e != cudaSuccess) return e;
  PagedFwdKernel<kD><<<num_items, kFwdThreads, Smem<kD>::kFwdBytes, stream>>>(
      dm, q, k_cache, v_cache, tables, max_blocks, o, items);
  return cudaGetLastError();
}

template <int kD>
cudaError_t LaunchFwd(cudaStream_t stream, const Dims& dm, const bf16* q, const bf16* k,
                      const bf16* v, FloatPtr o, float* lse, const FwdItem* items, int num_items) {
  const cudaError_t e = AllowSmem<&FwdKernel<kD>>(static_cast<int>(Smem<kD>::kFwdBytes));
  if (e != cudaSuccess) return e;
  FwdKernel<kD>
      <<<num_items, kFwdThreads, Smem<kD>::kFwdBytes, stream>>>(dm, q, k, v, o, lse, items);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::attention_mma

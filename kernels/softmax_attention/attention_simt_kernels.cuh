// Internal to kernels/softmax_attention (included by softmax_attention.cu only): the fp32
// CUDA-core kernels, taken when any operand is f32. Forward: one block per 64 flat query rows of
// one sequence and kv head, splits and tiles walked in order; decode: one block per sequence, kv
// head and split, then an in-order merge kernel. Both fold tiles with AttendTile and splits with
// MergeSplit (attention_tile.cuh); decode only reads K/V through the block table.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/softmax_attention/attention_tile.cuh"

namespace tandem::kernels::cuda::attention_simt {

using attention::AttendTile;
using attention::kRowsPerWarp;
using attention::kSplit;
using attention::kTile;
using attention::RowState;
using attention::TileSmem;

constexpr int kFwdWarps = 8;
constexpr int kFwdRows = kFwdWarps * kRowsPerWarp;  // query rows per forward block
constexpr int kDecodeThreads = 128;

struct Dims {
  int h, hkv, group, d;
  float scale;
};

// Flat rows (position-major, then the group's heads) of one sequence and kv head.
using attention::FwdItem;

// Copies rows [0, kTile) of a K or V tile into smem (row stride ld), zeros past `valid` keys.
// row_offset(j) is the element offset of key j's kv-head vector.
template <int kD, typename RowOffset>
__device__ void LoadTile(FloatPtr src, int valid, int ld, RowOffset row_offset, float* dst) {
  for (int idx = threadIdx.x; idx < kTile * kD; idx += blockDim.x) {
    const int j = idx / kD, e = idx % kD;
    dst[j * ld + e] = j < valid ? src.Load(row_offset(j) + e) : 0.0f;
  }
}

template <int kD>
__global__ void __launch_bounds__(kFwdWarps * 32)
    FwdKernel(Dims dm, FloatPtr q, FloatPtr k, FloatPtr v, FloatPtr o, float* lse,
              const FwdItem* items) {
  extern __shared__ __align__(16) float smem[];
  const TileSmem<kD> sm = TileSmem<kD>::Carve(smem, kFwdWarps);
  const FwdItem it = items[blockIdx.x];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int live_rows = it.seq_len * dm.group - it.row0;  // rows of this block that exist (> 0)
  for (int idx = threadIdx.x; idx < kFwdRows * kD; idx += blockDim.x) {
    const int r = idx / kD, e = idx % kD, f = it.row0 + r;
    const int64_t row =
        int64_t{it.seq_start + f / dm.group} * dm.h + it.kv_head * dm.group + f % dm.group;
    sm.q[idx] = r < live_rows ? q.Load(row * kD + e) : 0.0f;
  }
  int t[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr;
    t[rr] = r < live_rows ? (it.row0 + r) / dm.group : -1;
  }
  const int num_keys = (it.row0 + min(live_rows, kFwdRows) - 1) / dm.group + 1;
  RowState<kD> total[kRowsPerWarp], split[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) total[rr].Reset();
  const auto kv_row = [&](int j0) {
    return [=](int j) { return (int64_t{it.seq_start + j0 + j} * dm.hkv + it.kv_head) * kD; };
  };
  for (int s0 = 0; s0 < num_keys; s0 += kSplit) {
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) split[rr].Reset();
    const int s1 = min(num_keys, s0 + kSplit);
    for (int a = s0; a < s1; a += kTile) {
      __syncthreads();  // the previous tile is no longer read (and q is in place)
      LoadTile<kD>(k, min(kTile, num_keys - a), TileSmem<kD>::kLdk, kv_row(a), sm.k);
      LoadTile<kD>(v, min(kTile, num_keys - a), kD, kv_row(a), sm.v);
      __syncthreads();
      int n[kRowsPerWarp];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) n[rr] = max(0, min(kTile, t[rr] + 1 - a));
      AttendTile<kD>(sm.q + warp * kRowsPerWarp * kD, sm.k, sm.v,
                     sm.p + warp * kRowsPerWarp * kTile, n, dm.scale, split);
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      if (t[rr] >= s0) attention::MergeSplit<kD>(split[rr], total[rr]);
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    if (t[rr] < 0) continue;
    const int f = it.row0 + warp * kRowsPerWarp + rr;
    const int64_t row =
        int64_t{it.seq_start + f / dm.group} * dm.h + it.kv_head * dm.group + f % dm.group;
    const float l =
        attention::Finalize<kD>(total[rr], [&](int e, float x) { o.Store(row * kD + e, x); });
    if (lse != nullptr && lane == 0) lse[row] = l;
  }
}

struct DecodeArgs {
  Dims dm;
  FloatPtr q, k_cache, v_cache, o;
  const int32_t* block_tables;
  const int32_t* seq_lens;
  int max_blocks, max_splits;
  float* partial;  // [B, H, max_splits, kD + 2]: acc, then m, l
};

// Block (split, kv head, sequence): the split's tiles for the group's heads, partials to memory.
template <int kD>
__global__ void DecodeSplitKernel(DecodeArgs a) {
  extern __shared__ __align__(16) float smem[];
  const int warps = blockDim.x / 32;
  const TileSmem<kD> sm = TileSmem<kD>::Carve(smem, warps);
  const int split_index = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int pos = a.seq_lens[b] - 1, s0 = split_index * kSplit;
  if (s0 > pos) return;  // uniform over the block
  const Dims& dm = a.dm;
  for (int idx = threadIdx.x; idx < warps * kRowsPerWarp * kD; idx += blockDim.x) {
    const int r = idx / kD, e = idx % kD;
    sm.q[idx] = r < dm.group ? a.q.Load((int64_t{b} * dm.h + g * dm.group + r) * kD + e) : 0.0f;
  }
  RowState<kD> split[kRowsPerWarp];
  int t[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    split[rr].Reset();
    t[rr] = warp * kRowsPerWarp + rr < dm.group ? pos : -1;
  }
  const int32_t* table = a.block_tables + int64_t{b} * a.max_blocks;
  for (int t0 = s0; t0 <= pos && t0 < s0 + kSplit; t0 += kTile) {
    const int64_t block = table[t0 / kTile];
    const auto kv_row = [=](int j) { return ((block * kTile + j) * dm.hkv + g) * kD; };
    __syncthreads();
    LoadTile<kD>(a.k_cache, min(kTile, pos + 1 - t0), TileSmem<kD>::kLdk, kv_row, sm.k);
    LoadTile<kD>(a.v_cache, min(kTile, pos + 1 - t0), kD, kv_row, sm.v);
    __syncthreads();
    int n[kRowsPerWarp];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) n[rr] = max(0, min(kTile, t[rr] + 1 - t0));
    if (warp * kRowsPerWarp < dm.group) {
      AttendTile<kD>(sm.q + warp * kRowsPerWarp * kD, sm.k, sm.v,
                     sm.p + warp * kRowsPerWarp * kTile, n, dm.scale, split);
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    if (t[rr] < 0) continue;
    const int head = g * dm.group + warp * kRowsPerWarp + rr;
    float* out = a.partial + ((int64_t{b} * dm.h + head) * a.max_splits + split_index) * (kD + 2);
#pragma unroll
    for (int i = 0; i < RowState<kD>::kPer; ++i) out[lane + 32 * i] = split[rr].acc[i];
    if (lane == 0) out[kD] = split[rr].m, out[kD + 1] = split[rr].l;
  }
}

// One warp per (sequence, head): merges the splits' partials in ascending order.
template <int kD>
__global__ void DecodeMergeKernel(DecodeArgs a, int num_rows) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= num_rows) return;
  const int b = row / a.dm.h;
  const int num_splits = (a.seq_lens[b] - 1) / kSplit + 1;
  RowState<kD> total, part;
  total.Reset();
  for (int s = 0; s < num_splits; ++s) {
    const float* in = a.partial + (int64_t{row} * a.max_splits + s) * (kD + 2);
#pragma unroll
    for (int i = 0; i < RowState<kD>::kPer; ++i) part.acc[i] = in[lane + 32 * i];
    part.m = in[kD], part.l = in[kD + 1];
    attention::MergeSplit<kD>(part, total);
  }
  attention::Finalize<kD>(total, [&](int e, float x) { a.o.Store(int64_t{row} * kD + e, x); });
}

template <typename Kernel>
cudaError_t Launch(Kernel kernel, dim3 grid, int threads, size_t smem, cudaStream_t stream,
                   auto... args) {
  const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem));
  if (attr != cudaSuccess) return attr;
  kernel<<<grid, threads, smem, stream>>>(args...);
  return cudaGetLastError();
}

template <int kD>
cudaError_t LaunchFwd(cudaStream_t stream, const Dims& dm, FloatPtr q, FloatPtr k, FloatPtr v,
                      FloatPtr o, float* lse, const FwdItem* items, int num_items) {
  return Launch(&FwdKernel<kD>, dim3(num_items), kFwdWarps * 32, TileSmem<kD>::Bytes(kFwdWarps),
                stream, dm, q, k, v, o, lse, items);
}

template <int kD>
cudaError_t LaunchDecode(cudaStream_t stream, const DecodeArgs& a, int batch) {
  const int warps = std::max(kDecodeThreads / 32, (a.dm.group + kRowsPerWarp - 1) / kRowsPerWarp);
  cudaError_t e = Launch(&DecodeSplitKernel<kD>, dim3(a.max_splits, a.dm.hkv, batch), warps * 32,
                         TileSmem<kD>::Bytes(warps), stream, a);
  if (e != cudaSuccess) return e;
  const int rows = batch * a.dm.h, per_block = kDecodeThreads / 32;
  DecodeMergeKernel<kD><<<(rows + per_block - 1) / per_block, kDecodeThreads, 0, stream>>>(a, rows);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::attention_simt

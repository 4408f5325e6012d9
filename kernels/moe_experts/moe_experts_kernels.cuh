// Device kernels of the CUDA routed experts (included by moe_experts.cu only): the deterministic
// counting sort that groups (t, k) rows by expert, row gathers, the per-token rank-order combine
// and the top-k weight gradient. Every sum has a fixed order that depends on nothing but the row it
// produces.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "kernels/core/cuda_device.cuh"

namespace tandem::kernels::cuda::moe {

// Rows per chunk of the counting sort; one block of kSortThreads threads handles one chunk.
inline constexpr int kSortChunk = 256;
inline constexpr int kSortThreads = kSortChunk;
// The expert count the sort kernels hold in shared memory.
inline constexpr int64_t kMaxExperts = 4096;

// The rows of an index outside [0, E) go to an extra bucket E that no GEMM reads, so grouped
// positions stay a permutation of the rows; such an index also sets *bad (a mapped host word).
__device__ __forceinline__ int32_t Bucket(int32_t e, int num_experts) {
  return e >= 0 && e < num_experts ? e : num_experts;
}

// hist[c, b] = number of rows of chunk c in bucket b (E + 1 buckets). The shared-memory counters
// are integers, so the order of the atomic increments cannot change them.
__global__ void ExpertHistogramKernel(const int32_t* idx, int64_t n, int num_experts, int32_t* hist,
                                      volatile int32_t* bad) {
  extern __shared__ int32_t counts[];  // [E + 1]
  for (int e = threadIdx.x; e <= num_experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  const int64_t r = int64_t{blockIdx.x} * kSortChunk + threadIdx.x;
  if (r < n) {
    const int32_t b = Bucket(idx[r], num_experts);
    atomicAdd(&counts[b], 1);
    if (b == num_experts) *bad = 1;
  }
  __syncthreads();
  for (int e = threadIdx.x; e <= num_experts; e += blockDim.x) {
    hist[int64_t{blockIdx.x} * (num_experts + 1) + e] = counts[e];
  }
}

// One block of kScanThreads: base[c, b] = rows of bucket b in chunks before c (exclusive scan
// over chunks, one thread per bucket), then offsets[b] = rows of buckets before b (E + 2 entries)
// and tile_off[e] = tile_rows-row tiles of experts before e (E + 1 entries), by block-wide scans
// (integer sums: exact in any order).
inline constexpr int kScanThreads = 1024;
inline constexpr int kScanPer = static_cast<int>((kMaxExperts + kScanThreads) / kScanThreads);
static_assert(kScanPer * kScanThreads >= kMaxExperts + 1, "every bucket has a scan slot");

__global__ void __launch_bounds__(kScanThreads)
    ExpertScanKernel(int64_t num_chunks, int num_experts, int tile_rows,
                     const int32_t* __restrict__ hist, int32_t* __restrict__ base, int32_t* offsets,
                     int32_t* tile_off) {
  extern __shared__ int32_t totals[];  // [E + 1]
  using Scan = cub::BlockScan<int32_t, kScanThreads>;
  __shared__ typename Scan::TempStorage scan;
  const int buckets = num_experts + 1;
  for (int e = threadIdx.x; e < buckets; e += blockDim.x) {
    int32_t running = 0;
#pragma unroll 8
    for (int64_t c = 0; c < num_chunks; ++c) {  // (restrict: the loads need not wait for stores)
      base[c * buckets + e] = running;
      running += hist[c * buckets + e];
    }
    totals[e] = running;
  }
  __syncthreads();
  int32_t rows[kScanPer], tiles[kScanPer];  // buckets threadIdx.x·kScanPer + i
#pragma unroll
  for (int i = 0; i < kScanPer; ++i) {
    const int e = threadIdx.x * kScanPer + i;
    rows[i] = e < buckets ? totals[e] : 0;
    tiles[i] = e < num_experts ? (totals[e] + tile_rows - 1) / tile_rows : 0;
  }
  int32_t all_rows = 0, all_tiles = 0;
  Scan(scan).ExclusiveSum(rows, rows, all_rows);
  __syncthreads();  // the temporary storage is reused
  Scan(scan).ExclusiveSum(tiles, tiles, all_tiles);
#pragma unroll
  for (int i = 0; i < kScanPer; ++i) {
    const int e = threadIdx.x * kScanPer + i;
    if (e < buckets) offsets[e] = rows[i];
    if (e < num_experts) tile_off[e] = tiles[i];
  }
  if (threadIdx.x == 0) {
    offsets[buckets] = all_rows;
    tile_off[num_experts] = all_tiles;
  }
}

// pos[r] = grouped position of row r, row_of[pos[r]] = r: the bucket's offset, plus its rows in
// earlier chunks, plus its rows earlier in this chunk, so rows stay ascending within an expert.
__global__ void ExpertPlaceKernel(const int32_t* idx, int64_t n, int num_experts,
                                  const int32_t* base, const int32_t* offsets, int32_t* pos,
                                  int32_t* row_of) {
  __shared__ int32_t chunk[kSortChunk];
  const int64_t r0 = int64_t{blockIdx.x} * kSortChunk, r = r0 + threadIdx.x;
  chunk[threadIdx.x] = r < n ? Bucket(idx[r], num_experts) : -1;
  __syncthreads();
  if (r >= n) return;
  const int32_t e = chunk[threadIdx.x];
  int32_t rank = 0;
  for (int j = 0; j < static_cast<int>(threadIdx.x); ++j) rank += chunk[j] == e ? 1 : 0;
  const int32_t p = offsets[e] + base[int64_t{blockIdx.x} * (num_experts + 1) + e] + rank;
  pos[r] = p;
  row_of[p] = static_cast<int32_t>(r);
}

// dst[p, :] = src[index[p] / div, :] (times scale[index[p]] when scale is non-null; one fp32
// multiply, as on the CPU), rounded to dst's storage. Blocks stride over rows, threads over
// columns.
__global__ void GatherRowsKernel(int64_t rows, int64_t width, const int32_t* index, int div,
                                 const float* scale, FloatPtr src, FloatPtr dst) {
  for (int64_t p = blockIdx.x; p < rows; p += gridDim.x) {
    const int64_t i = index[p];
    const int64_t s = (i / div) * width;
    const float f = scale != nullptr ? scale[i] : 1.0f;
    for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
      const float v = src.Load(s + c);
      dst.Store(p * width + c, scale != nullptr ? __fmul_rn(f, v) : v);
    }
  }
}

// out[t, :] = Σ_{k ascending} scale[t·K + k] · y[row, :] in fp32 (scale null: 1), a multiply then
// an add per term like the CPU, with row = pos[t·K + k] (pos null: t·K + k); rows whose expert
// index is out of range are skipped. One block per token, threads over columns.
__global__ void CombineKernel(int64_t tokens, int64_t k_top, int64_t width, const int32_t* idx,
                              int num_experts, const int32_t* pos, const float* scale,
                              const float* y, FloatPtr out) {
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
      float acc = 0.0f;
      for (int64_t k = 0; k < k_top; ++k) {
        const int64_t r = t * k_top + k;
        if (Bucket(idx[r], num_experts) == num_experts) continue;
        const float v = y[(pos != nullptr ? int64_t{pos[r]} : r) * width + c];
        acc = __fadd_rn(acc, scale != nullptr ? __fmul_rn(scale[r], v) : v);
      }
      out.Store(t * width + c, acc);
    }
  }
}

// dtw[r] = Σ_c dout[r / K, c] · y[r, c]: one warp per row, lane j takes c ≡ j (mod 32) in
// ascending order, then a fixed butterfly across the lanes.
inline constexpr int kDotWarps = 8;

__global__ void TopkWeightGradKernel(int64_t n, int64_t k_top, int64_t width, FloatPtr dout,
                                     const float* y, float* dtw) {
  const int lane = threadIdx.x % 32;
  const int64_t warp0 = int64_t{blockIdx.x} * kDotWarps + threadIdx.x / 32;
  for (int64_t r = warp0; r < n; r += int64_t{gridDim.x} * kDotWarps) {
    const int64_t o = (r / k_top) * width;
    float acc = 0.0f;
    for (int64_t c = lane; c < width; c += 32) {
      acc = __fmaf_rn(dout.Load(o + c), y[r * width + c], acc);
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, offset));
    }
    if (lane == 0) dtw[r] = acc;
  }
}

}  // namespace tandem::kernels::cuda::moe

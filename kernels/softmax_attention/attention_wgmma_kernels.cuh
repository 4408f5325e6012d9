// Internal to kernels/softmax_attention (included by softmax_attention.cu only): the sm_90a forward
// for bf16 q/k/v at head dims 64 and 128. One block of two warpgroups per 128 flat query rows (the
// same work items, rows and split/merge walk as attention_mma_kernels.cuh's FwdKernel), K/V tiles
// in a three-stage cp.async ring in the swizzled layout wgmma reads; each warpgroup folds a tile
// with AttendTileWg. Decode keeps the mma.sync routine; the two agree bit for bit because a wgmma
// row equals the chained mma.sync row (softmax_attention_wgmma_cuda_test checks that on the GPU).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/softmax_attention/attention_mma_kernels.cuh"
#include "kernels/softmax_attention/attention_wgmma.cuh"

namespace tandem::kernels::cuda::attention_mma {

inline constexpr int kWgRows = 64;  // query rows per warpgroup
inline constexpr int kWgStages = 3;

template <int kD>
struct WgSmem {
  static constexpr size_t kKvBytes = size_t{2} * kWgStages * kSwTileBytes<kD>;
  static constexpr size_t kQBytes = std::max(size_t{kFwdRows} * kLd<kD> * sizeof(bf16),
                                             size_t{Smem<kD>::kTotalFloats} * kFwdThreads * 4);
  static constexpr size_t kBytes = 1024 + kKvBytes + kQBytes;  // 1024: to align the base
  __device__ static unsigned char* K(unsigned char* base, int stage) {
    return base + (2 * stage) * kSwTileBytes<kD>;
  }
  __device__ static unsigned char* V(unsigned char* base, int stage) {
    return base + (2 * stage + 1) * kSwTileBytes<kD>;
  }
  __device__ static bf16* Q(unsigned char* base) {
    return reinterpret_cast<bf16*>(base + kKvBytes);
  }
};

// Tiles 0 .. n − 1 through a three-stage cp.async ring, one barrier per tile: after it, tile i has
// landed for every thread and every thread is done with tile i − 1, whose stage takes tile i + 2.
template <typename Load, typename Compute>
__device__ __forceinline__ void TilePipeline3(int n, Load&& load, Compute&& compute) {
  load(0, 0);
  CpAsyncCommit();
  if (n > 1) load(1, 1);
  CpAsyncCommit();
  for (int i = 0; i < n; ++i) {
    CpAsyncWait<1>();   // all but the newest group: tile i (and the Q rows) landed for this thread
    FenceProxyAsync();  // ... visible to the tensor cores' reads
    __syncthreads();
    if (i + 2 < n) load((i + 2) % kWgStages, i + 2);
    CpAsyncCommit();
    compute(i % kWgStages, i);
  }
}

template <int kD>
__global__ void __launch_bounds__(kFwdThreads, 1)
    FwdWgmmaKernel(Dims dm, const bf16* q, const bf16* k, const bf16* v, FloatPtr o, float* lse,
                   const FwdItem* items) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u);
  const FwdItem it = items[blockIdx.x];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wg = warp / 4;
  const int live_rows = min(kFwdRows, it.seq_len * dm.group - it.row0);  // > 0
  const auto q_row = [&](int f) {  // flat row f of the sequence -> row of q [T, H]
    return int64_t{it.seq_start + f / dm.group} * dm.h + it.kv_head * dm.group + f % dm.group;
  };
  bf16* qs = WgSmem<kD>::Q(smem);
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
    pos[i] = r < live_rows ? (it.row0 + r) / dm.group : -1;
  }
  const bool warp_live = warp * kWarpRows < live_rows;
  const int pos_lo = (it.row0 + warp * kWarpRows) / dm.group;
  const bool wg_live = wg * kWgRows < live_rows;  // uniform over the warpgroup
  const int wg_pos_hi = (it.row0 + min(wg * kWgRows + kWgRows, live_rows) - 1) / dm.group;
  const int num_keys = (it.row0 + live_rows - 1) / dm.group + 1;
  const int num_tiles = (num_keys + kTile - 1) / kTile;
  const int64_t kv_ld = int64_t{dm.hkv} * kD;
  const bf16* kb = k + (int64_t{it.seq_start} * dm.hkv + it.kv_head) * kD;
  const bf16* vb = v + (int64_t{it.seq_start} * dm.hkv + it.kv_head) * kD;
  float* tot = reinterpret_cast<float*>(qs) + threadIdx.x;  // reuses the Q rows' smem
  uint32_t qf[kD / 16][4];
  WarpState<kD> st;
  const auto load = [&](int stage, int i) {
    const int a = i * kTile, valid = min(kTile, num_keys - a);
    const auto row = [=](int j) { return (a + j) * kv_ld; };
    LoadTileSwizzledAsync<kD>(kb, valid, row, WgSmem<kD>::K(smem, stage), kFwdThreads);
    LoadTileSwizzledAsync<kD>(vb, valid, row, WgSmem<kD>::V(smem, stage), kFwdThreads);
  };
  const auto compute = [&](int stage, int i) {
    const int a = i * kTile;
    if (i == 0) LoadQFragments<kD>(qs + warp * kWarpRows * kLd<kD>, qf);
    if (a % kSplit == 0) st.Reset();
    // A warpgroup none of whose rows sees a key of the tile skips it; inside one that does, a row
    // that sees none keeps its state (lim = 0).
    if (wg_live && wg_pos_hi >= a) {
      const int lim[2] = {max(0, min(kTile, pos[0] + 1 - a)), max(0, min(kTile, pos[1] + 1 - a))};
      AttendTileWg<kD>(qf, WgSmem<kD>::K(smem, stage), WgSmem<kD>::V(smem, stage), lim,
                       warp_live && pos_lo + 1 >= a + kTile, dm.scale_log2, st);
    }
    if ((a + kTile) % kSplit == 0 || i + 1 == num_tiles) {
      MergeSplitForward<kD>(st, tot, a / kSplit * kSplit, pos, i + 1 == num_tiles);
    }
  };
  TilePipeline3(num_tiles, load, compute);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (pos[i] < 0) continue;
    const int64_t row = q_row(it.row0 + warp * kWarpRows + lane / 4 + 8 * i);
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      StorePair(o, row * kD + n * 8 + 2 * (lane % 4), FinalOutput(st.acc[n][2 * i], st.l[i]),
                FinalOutput(st.acc[n][2 * i + 1], st.l[i]));
    }
    if (lse != nullptr && lane % 4 == 0) lse[row] = Lse(st.m[i], st.l[i]);
  }
}

template <int kD>
cudaError_t LaunchFwdWgmma(cudaStream_t stream, const Dims& dm, const bf16* q, const bf16* k,
                           const bf16* v, FloatPtr o, float* lse, const FwdItem* items,
                           int num_items) {
  const cudaError_t e = SetSmem(&FwdWgmmaKernel<kD>, WgSmem<kD>::kBytes);
  if (e != cudaSuccess) return e;
  FwdWgmmaKernel<kD>
      <<<num_items, kFwdThreads, WgSmem<kD>::kBytes, stream>>>(dm, q, k, v, o, lse, items);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::attention_mma

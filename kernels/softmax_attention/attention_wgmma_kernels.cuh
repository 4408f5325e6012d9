// Internal to kernels/softmax_attention (included by softmax_attention.cu only): the sm_90a forward
// for bf16 q/k/v at head dims 64 and 128 (SoftmaxAttentionFwdKernel::kWgmma), warp-specialised.
// The work items are attention_mma_kernels.cuh's (128 flat query rows each, the same rows and
// split/merge walk as its FwdKernel), walked by at most one block per SM: a producer warp fills a
// four-stage K/V ring in the swizzled layout wgmma reads (bulk tensor copies for full tiles,
// zero-filling cp.async for a sequence's last partial tile) behind mbarrier full/empty barriers;
// two consumer warpgroups of 64 rows each issue Q·Kᵀ of tile j + 1 with P·V of tile j, taking turns
// at the tensor cores (two named barriers, FlashAttention-3's ping-pong) so one group's softmax
// runs under the other's products. Each row's operations and their order are AttendTileMma's
// (SoftmaxScores, RescalePack, the wgmma rows == mma.sync rows), so decode == forward bitwise still
// holds (softmax_attention_wgmma_cuda_test checks the instruction half).
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/core/cuda_util.h"
#include "kernels/core/tensor_map.cuh"
#include "kernels/softmax_attention/attention_mma_kernels.cuh"
#include "kernels/softmax_attention/attention_wgmma.cuh"
#include "kernels/softmax_attention/attention_wgmma_consumer.cuh"
#include "kernels/softmax_attention/attention_wgmma_ring.cuh"

namespace tandem::kernels::cuda::attention_mma {

// The block's items. The first is blockIdx.x; each later one the producer draws from a counter the
// grid shares (so a block that finishes early takes the next costliest item, as the hardware's
// block scheduler would when every item was a block of its own) and hands to the consumers through
// two shared slots; an index past the items ends the block. Which block runs an item cannot change
// its bits: a row's operations depend only on the row.
struct ItemQueue {
  int* slot;        // [2]
  uint64_t* full;   // [2]: the producer wrote the slot (1 arrival)
  uint64_t* empty;  // [2]: the 8 consumer warps read it
  // The block's k-th item, from the producer warp.
  __device__ void Post(int k, int item) const {
    const int s = k & 1;
    if (k >= 2) MbarWait(&empty[s], ((k >> 1) - 1) & 1);
    if (threadIdx.x % 32 == 0) {
      slot[s] = item;
      MbarArrive(&full[s]);  // release: the consumers' wait acquires the slot's value
    }
    __syncwarp();
  }
  // The block's k-th item, on a consumer warp.
  __device__ int Take(int k) const {
    const int s = k & 1;
    MbarWait(&full[s], (k >> 1) & 1);
    const int item = slot[s];
    __syncwarp();
    MbarArriveIf(&empty[s], threadIdx.x % 32 == 0);
    return item;
  }
};

// The item's rows that exist (> 0) and its block description.
struct ItemShape {
  int live_rows;
  WsBlock b;
  __device__ static ItemShape Of(const Dims& dm, const FwdItem& it, uint32_t tile0,
                                 uint64_t* bars) {
    const int live_rows = min(kFwdRows, it.seq_len * dm.group - it.row0);
    const int num_keys = (it.row0 + live_rows - 1) / dm.group + 1;
    return {live_rows,
            {it.seq_start, it.kv_head, num_keys, (num_keys + kTile - 1) / kTile, tile0, bars,
             bars + kWgStages}};
  }
};

// Named barrier 3: the 256 consumer threads.
__device__ __forceinline__ void ConsumersSync() {
  asm volatile("bar.sync 3, %0;\n" ::"n"(kFwdThreads) : "memory");
}

// Flat row f of the item's sequence -> row of q [T, H].
__device__ __forceinline__ int64_t QRow(const Dims& dm, const FwdItem& it, int f) {
  return int64_t{it.seq_start + f / dm.group} * dm.h + it.kv_head * dm.group + f % dm.group;
}

// The consumer warp's 16 Q rows of the item into qs by cp.async (zeros past the live rows), one
// commit group.
template <int kD>
__device__ __forceinline__ void IssueQRows(const Dims& dm, const FwdItem& it, int live_rows,
                                           const bf16* q, int cw, bf16* qs) {
  const int lane = threadIdx.x % 32;
  for (int idx = lane; idx < kWarpRows * (kD / 8); idx += 32) {
    const int r = cw * kWarpRows + idx / (kD / 8), c = (idx % (kD / 8)) * 8;
    const bool ok = r < live_rows;
    CpAsync16(qs + (r % kWarpRows) * kLd<kD> + c, ok ? q + QRow(dm, it, it.row0 + r) * kD + c : q,
              ok);
  }
  CpAsyncCommit();
}

// One block per SM at most, each walking its items (ItemQueue); the K/V ring runs on from one item
// into the next, so the producer fills the next item's first stages while the consumers finish the
// last tiles and write the outputs of the current one, and each consumer warp requests its next Q
// rows before that write.
template <int kD>
__global__ void __launch_bounds__(kWsThreads, 1)
    FwdWgmmaKernel(Dims dm, const bf16* q, const bf16* k, const bf16* v, FloatPtr o, float* lse,
                   const FwdItem* items, int num_items, int* item_counter,
                   const __grid_constant__ CUtensorMap tmk,
                   const __grid_constant__ CUtensorMap tmv) {
#if TANDEM_WGMMA_DEVICE  // sm_90a code only; the host never launches it elsewhere
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __shared__ uint64_t bars[2 * kWgStages + 4];
  __shared__ int item_slot[2];
  unsigned char* smem = smem_raw + ((1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u);
  const ItemQueue queue{item_slot, bars + 2 * kWgStages, bars + 2 * kWgStages + 2};
  if (threadIdx.x == 0) {
    for (int s = 0; s < kWgStages; ++s) {
      MbarInit(&bars[s], 1);                      // full
      MbarInit(&bars[kWgStages + s], kFwdWarps);  // empty
    }
    for (int s = 0; s < 2; ++s) {
      MbarInit(&queue.full[s], 1);
      MbarInit(&queue.empty[s], kFwdWarps);
    }
    FenceMbarrierInit();
    FenceProxyAsync();
  }
  __syncthreads();  // the only block-wide barrier
  // Role and warp indices through a shuffle, so that the compiler knows them warp-uniform (no
  // divergent path around the wgmma instructions).
  const int role = __shfl_sync(0xffffffffu, threadIdx.x / kWgThreads, 0);
  if (role == 0) {
    SetMaxRegsDec<kProducerRegs>();
    if (threadIdx.x < 32) {
      uint32_t tile0 = 0;
      int item = blockIdx.x;
      for (int n = 0;; ++n) {
        queue.Post(n, item);
        if (item >= num_items) break;
        const WsBlock b = ItemShape::Of(dm, items[item], tile0, bars).b;
        ProduceTiles<kD>(b, smem, k, v, int64_t{dm.hkv} * kD, &tmk, &tmv);
        tile0 += b.num_tiles;
        int next = 0;
        if (threadIdx.x == 0) next = static_cast<int>(gridDim.x) + atomicAdd(item_counter, 1);
        item = __shfl_sync(0xffffffffu, next, 0);
      }
      CpAsyncWait<0>();
    }
    return;
  }
  SetMaxRegsInc<kConsumerRegs>();
  const int ct = threadIdx.x - kWgThreads, lane = ct % 32;
  const int cw = __shfl_sync(0xffffffffu, ct / 32, 0), wg = cw / 4;
  bf16* qs = WgSmem<kD>::Q(smem) + cw * kWarpRows * kLd<kD>;        // this warp's 16 rows
  float* tot = reinterpret_cast<float*>(WgSmem<kD>::Q(smem)) + ct;  // after the Q rows are read
  uint32_t tile0 = 0;
  int item = queue.Take(0);
  if (item < num_items) {
    const FwdItem it = items[item];
    IssueQRows<kD>(dm, it, ItemShape::Of(dm, it, 0, bars).live_rows, q, cw, qs);
  }
  for (int n = 1; item < num_items; ++n) {
    const FwdItem it = items[item];
    const ItemShape shape = ItemShape::Of(dm, it, tile0, bars);
    const int live_rows = shape.live_rows;
    tile0 += shape.b.num_tiles;
    CpAsyncWait<0>();
    __syncwarp();
    uint32_t qf[kD / 16][4];
    LoadQFragments<kD>(qs, qf);
    int pos[2];  // positions of the thread's rows; −1 past the live rows
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = cw * kWarpRows + lane / 4 + 8 * i;
      pos[i] = r < live_rows ? (it.row0 + r) / dm.group : -1;
    }
    const bool wg_live = wg * kWgRows < live_rows;  // uniform over the warpgroup
    const int wg_pos_hi = (it.row0 + min(wg * kWgRows + kWgRows, live_rows) - 1) / dm.group;
    const int n_att = wg_live ? min(shape.b.num_tiles, wg_pos_hi / kTile + 1) : 0;
    // Tile i is seen whole by every row when all 64 rows are live and the lowest position
    // (it.row0 + 64wg) / group reaches its last key: (i + 1)·kTile <= pos_lo + 1.
    const bool wg_all_live = wg * kWgRows + kWgRows <= live_rows;
    const int n_full = wg_all_live ? ((it.row0 + wg * kWgRows) / dm.group + 1) / kTile : 0;
    WarpState<kD> st;
    ConsumeTiles<kD>(shape.b, smem, dm.scale_log2, qf, pos, n_att, n_full, wg, tot, st);
    // Every consumer warp is past its last merge: the Q rows / totals area takes the next rows.
    ConsumersSync();
    const int next = queue.Take(n);
    if (next < num_items) {
      const FwdItem nit = items[next];
      IssueQRows<kD>(dm, nit, ItemShape::Of(dm, nit, 0, bars).live_rows, q, cw, qs);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (pos[i] < 0) continue;
      const int64_t row = QRow(dm, it, it.row0 + cw * kWarpRows + lane / 4 + 8 * i);
      const float inv_l = InverseSum(st.l[i]);
#pragma unroll
      for (int c = 0; c < kD / 8; ++c) {
        StorePair(o, row * kD + c * 8 + 2 * (lane % 4), FinalOutput(st.acc[c][2 * i], inv_l),
                  FinalOutput(st.acc[c][2 * i + 1], inv_l));
      }
      if (lse != nullptr && lane % 4 == 0) lse[row] = Lse(st.m[i], st.l[i]);
    }
    item = next;
  }
#else
  __trap();
#endif
}

// K or V [t, hkv, kD] bf16 as [64 dims, 1 head, kTile keys] boxes in the 128-byte swizzle (the
// layout SwizzledOffset describes; rows past t read as zeros).
inline bool KvTensorMap(CUtensorMap* map, const bf16* base, int64_t t, int hkv, int d) {
  return HeadRowsTensorMap(map, base, t, hkv, d, kTile);
}

// cudaErrorNotSupported when the tensor maps cannot be built (kDefault then runs FwdKernel).
// item_counter: one int, zero at launch (the items' work counter; see ItemQueue).
template <int kD>
cudaError_t LaunchFwdWgmma(cudaStream_t stream, const Dims& dm, const bf16* q, const bf16* k,
                           const bf16* v, FloatPtr o, float* lse, const FwdItem* items,
                           int num_items, int* item_counter, int64_t t) {
  CUtensorMap tmk, tmv;
  if (!KvTensorMap(&tmk, k, t, dm.hkv, kD) || !KvTensorMap(&tmv, v, t, dm.hkv, kD)) {
    return cudaErrorNotSupported;
  }
  const cudaError_t e = AllowSmem<&FwdWgmmaKernel<kD>>(static_cast<int>(WgSmem<kD>::kBytes));
  if (e != cudaSuccess) return e;
  const int sms = Multiprocessors();
  const int blocks = sms > 0 ? std::min(num_items, sms) : num_items;
  FwdWgmmaKernel<kD><<<blocks, kWsThreads, WgSmem<kD>::kBytes, stream>>>(
      dm, q, k, v, o, lse, items, num_items, item_counter, tmk, tmv);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::attention_mma

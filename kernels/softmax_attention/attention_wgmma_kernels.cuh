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
#include <type_traits>

#include "kernels/core/cuda_util.h"
#include "kernels/core/tensor_map.cuh"
#include "kernels/softmax_attention/attention_mma_kernels.cuh"
#include "kernels/softmax_attention/attention_wgmma.cuh"

namespace tandem::kernels::cuda::attention_mma {

inline constexpr int kWgRows = 64;  // query rows per consumer warpgroup
inline constexpr int kWgStages = 4;
inline constexpr int kWgThreads = 128;
inline constexpr int kWsThreads = kWgThreads + kFwdThreads;    // producer warpgroup + 2 consumers
inline constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // 128·40 + 256·232 <= 64K
// A split ends no earlier than tile kSplit / kTile − 1, by which time every consumer warp has
// released tile kSplit / kTile − 1 − kWgStages >= 0, so it has read its Q rows: the running totals
// may reuse the Q smem.
static_assert(kSplit / kTile > kWgStages,
              "totals overwrite Q rows only after every warp read them");

template <int kD>
struct WgSmem {
  static constexpr size_t kKvBytes = size_t{2} * kWgStages * kSwTileBytes<kD>;
  static constexpr size_t kQBytes = std::max(size_t{kFwdRows} * kLd<kD> * sizeof(bf16),
                                             size_t{Smem<kD>::kTotalFloats} * kFwdThreads * 4);
  static constexpr size_t kBytes = 1024 + kKvBytes + kQBytes;  // 1024: to align the base
  static constexpr uint32_t kTileTx = 2 * kSwTileBytes<kD>;    // K and V bytes of a full tile
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

// What the producer and the consumers of one block agree on about its current item. The ring
// runs on across the block's items: the item's tile i is the block's tile tile0 + i, whose stage
// and mbarrier phase follow from that count.
struct WsBlock {
  int seq_start, kv_head, num_keys, num_tiles;
  uint32_t tile0;
  uint64_t* full;   // [kWgStages]: tile landed (1 arrival + the bulk copies' bytes)
  uint64_t* empty;  // [kWgStages]: the 8 consumer warps are done with the stage
  __device__ int Stage(int i) const { return static_cast<int>((tile0 + i) % kWgStages); }
  __device__ uint32_t Phase(int i) const { return ((tile0 + i) / kWgStages) & 1u; }
  // Whether the stage of tile i held an earlier tile of the block (then it must be released).
  __device__ bool Reused(int i) const { return tile0 + i >= static_cast<uint32_t>(kWgStages); }
};

// Producer warp (threads 0..31): the item's tile i into its stage once every consumer warp
// released the block's tile kWgStages earlier (of this item or an earlier one). A full tile comes
// by bulk tensor copies ([64 dims, 1 head, 64 keys] boxes); a partial one by cp.async with zeros
// past the sequence's keys, so no other row enters.
template <int kD>
__device__ __forceinline__ void ProduceTiles(const WsBlock& b, unsigned char* smem, const bf16* k,
                                             const bf16* v, int64_t kv_ld, const CUtensorMap* tmk,
                                             const CUtensorMap* tmv) {
  const int lane = threadIdx.x;
  const bf16* kb = k + (int64_t{b.seq_start} * kv_ld / kD + b.kv_head) * kD;
  const bf16* vb = v + (int64_t{b.seq_start} * kv_ld / kD + b.kv_head) * kD;
  for (int i = 0; i < b.num_tiles; ++i) {
    const int stage = b.Stage(i), a = i * kTile, valid = min(kTile, b.num_keys - a);
    if (b.Reused(i)) MbarWait(&b.empty[stage], b.Phase(i) ^ 1u);
    unsigned char* ks = WgSmem<kD>::K(smem, stage);
    unsigned char* vs = WgSmem<kD>::V(smem, stage);
    if (valid == kTile) {
      if (lane == 0) {
        MbarArriveExpectTx(&b.full[stage], WgSmem<kD>::kTileTx);
#pragma unroll
        for (int c = 0; c < kD / 64; ++c) {
          TmaLoad3d(ks + c * kSwBlockBytes, tmk, c * 64, b.kv_head, b.seq_start + a,
                    &b.full[stage]);
          TmaLoad3d(vs + c * kSwBlockBytes, tmv, c * 64, b.kv_head, b.seq_start + a,
                    &b.full[stage]);
        }
      }
    } else {
      const auto row = [=](int j) { return (a + j) * kv_ld; };
      LoadTileSwizzledAsync<kD>(kb, valid, row, ks, 32);
      LoadTileSwizzledAsync<kD>(vb, valid, row, vs, 32);
      CpAsyncMbarArrive(&b.full[stage]);
      __syncwarp();
      if (lane == 0) MbarArrive(&b.full[stage]);
    }
  }
}

// The stage-0 K and V tiles as wgmma descriptors; stage s lies 2s tiles further on.
struct StageDescs {
  TileDesc k0, v0;
  template <int kD>
  __device__ static StageDescs Of(unsigned char* smem) {
    return {KTileDesc(WgSmem<kD>::K(smem, 0)), VTileDesc(WgSmem<kD>::V(smem, 0))};
  }
  template <int kD>
  __device__ static TileDesc AtStage(const TileDesc& d0, int stage) {
    return {d0.lo + static_cast<uint32_t>(stage) * (2 * kSwTileBytes<kD> / 16), d0.hi};
  }
};

// Q·Kᵀ of tile i into d, issued and committed, not waited for. The first k step does not read
// d (d = A·B): every score starts from zero, as in ScoreTile, without zeroing the registers.
template <int kD>
__device__ __forceinline__ void IssueScores(const WsBlock& b, const StageDescs& descs, int i,
                                            const uint32_t (&qf)[kD / 16][4], float (&d)[8][4]) {
  const int stage = b.Stage(i);
  MbarWait(&b.full[stage], b.Phase(i));
  if (b.num_keys - i * kTile < kTile) FenceProxyAsync();  // cp.async (generic proxy) wrote it
  const TileDesc kd = StageDescs::AtStage<kD>(descs.k0, stage);
  WgFence();
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) WgmmaN64<false>(d, qf[kk], kd.K(kk), kk > 0);
  WgCommit();
}

// acc += P·V of tile i (in stage b.Stage(i)), issued and committed, not waited for.
template <int kD>
__device__ __forceinline__ void IssuePv(const WsBlock& b, const StageDescs& descs, int i,
                                        const uint32_t (&pa)[4][4], float (&acc)[kD / 8][4]) {
  const TileDesc vd = StageDescs::AtStage<kD>(descs.v0, b.Stage(i));
  WgFence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) WgmmaPv<kD>(acc, pa[kk], vd.V(kk));
  WgCommit();
}

__device__ __forceinline__ void ReleaseTile(const WsBlock& b, int i) {
  __syncwarp();
  MbarArriveIf(&b.empty[b.Stage(i)], threadIdx.x % 32 == 0);
}

// Named barriers 1 and 2 (0 is __syncthreads): "warpgroup 0 / 1 may issue"; both warpgroups'
// 256 threads take part in each (128 sync, 128 arrive).
__device__ __forceinline__ void TurnWait(int wg) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(1 + wg), "n"(kFwdThreads) : "memory");
}
// On the threads with `pred`, without a branch (none around in-flight wgmma registers).
__device__ __forceinline__ void TurnPassIf(int wg, bool pred) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\n@p bar.arrive %0, %1;\n}\n" ::"r"(2 - wg),
               "n"(kFwdThreads), "r"(static_cast<int>(pred))
               : "memory");
}

// The consumer warpgroup's walk over the block's tiles, pipelined: the softmax of tile j + 1 runs
// while P·V of tile j is in flight. A row's operations keep AttendTileMma's order (scores,
// SoftmaxScores, then acc·α after the previous P·V and RescalePack, then P·V); a split's merge and
// the next reset come after all of its P·V (the next split's first softmax, from the empty state
// the reset gives, runs under that P·V into `opened` and is moved into st after). The warpgroup
// attends tiles [0, n_att) (later ones hold no key its rows see) and only releases the others;
// splits reset and merge at the same tiles as FwdKernel. Tiles [0, n_full) are seen whole by every
// row of the warpgroup and skip the causal mask (the same bits as lim = 64). Turns: both warpgroups
// run num_tiles + 1 issue slots (the first tile's scores, then one per tile, empty where nothing is
// issued), each: wait for the turn, issue, pass the turn. Warpgroup 1 passes once before its first
// slot and not after its last, so every barrier phase gets 128 waiting and 128 arriving threads.
template <int kD>
__device__ __forceinline__ void ConsumeTiles(const WsBlock& b, unsigned char* smem,
                                             float scale_log2, const uint32_t (&qf)[kD / 16][4],
                                             const int (&pos)[2], int n_att, int n_full, int wg,
                                             float* tot, WarpState<kD>& st) {
  float s[8][4] = {}, alpha[2];  // s: defined before the first wgmma names it (not read there)
  uint32_t pa[4][4];
  WarpState<kD> opened;  // m, l of the split tile j + 1 opens, while st still holds tile j's
  const StageDescs descs = StageDescs::Of<kD>(smem);
  const auto softmax = [&](int i, auto mask, WarpState<kD>& into) {  // s: tile i's scores
    const int a = i * kTile;
    const int lim[2] = {max(0, min(kTile, pos[0] + 1 - a)), max(0, min(kTile, pos[1] + 1 - a))};
    SoftmaxScores<kD, decltype(mask)::value>(s, lim, scale_log2, into, alpha);
  };
  const auto pass = [&](bool last) { TurnPassIf(wg, !(wg == 1 && last)); };
  // Tile j + 1's scores and tile j's P·V issued together; the softmax of tile j + 1 (into st, or
  // into `opened` when tile j ends a split) runs under the P·V. Straight-line from the first
  // wgmma to the wait for the scores; the wait for the P·V comes after the cases join, so that
  // the softmax stays in front of it.
  const auto overlapped = [&](int j, bool last, auto mask, WarpState<kD>& into) {
    TurnWait(wg);
    IssueScores<kD>(b, descs, j + 1, qf, s);
    IssuePv<kD>(b, descs, j, pa, st.acc);
    pass(last);
    WgWait<1>();
    FenceRegs(s);
    softmax(j + 1, mask, into);
  };
  TurnPassIf(wg, wg == 1);
  TurnWait(wg);
  if (n_att > 0) {  // straight-line from the wgmmas to their wait
    st.Reset();
    IssueScores<kD>(b, descs, 0, qf, s);
    pass(false);  // b.num_tiles >= 1
    WgWait<0>();
    FenceRegs(s);
  } else {
    pass(false);
  }
  if (n_att > 0) {
    if (0 < n_full) {
      softmax(0, std::false_type(), st);
    } else {
      softmax(0, std::true_type(), st);
    }
  }
  // After tile j: the split's merge when tile j ends one (then the next split starts from the
  // softmax of tile j + 1 that `opened` holds, when the warpgroup attends it).
  const auto end_tile = [&](int j, bool next) {
    const int a = j * kTile;
    if ((a + kTile) % kSplit != 0 && j + 1 != b.num_tiles) return;
    MergeSplitForward<kD>(st, tot, a / kSplit * kSplit, pos, j + 1 == b.num_tiles);
    if (next) {
      st.Reset();
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        st.m[i] = opened.m[i];
        st.l[i] = opened.l[i];
      }
    }
  };
  // The attended tiles. A loop of its own: the reset the later tiles need (below) would otherwise
  // be selected into every accumulator register on every tile.
  for (int j = 0; j < n_att; ++j) {
    const int a = j * kTile;
    const bool split_end = (a + kTile) % kSplit == 0 || j + 1 == b.num_tiles;
    const bool next = j + 1 < n_att, last = j + 1 == b.num_tiles;
    RescalePack<kD>(s, alpha, st.acc, pa);
    FenceRegs(st.acc);
    FenceRegs(pa);
    if (next && !split_end && j + 1 < n_full) {
      overlapped(j, last, std::false_type(), st);
    } else if (next && !split_end) {
      overlapped(j, last, std::true_type(), st);
    } else if (next) {
      opened.Reset();  // what st.Reset() leaves: the new split's softmax starts from it
      if (j + 1 < n_full) {
        overlapped(j, last, std::false_type(), opened);
      } else {
        overlapped(j, last, std::true_type(), opened);
      }
    } else {
      TurnWait(wg);
      IssuePv<kD>(b, descs, j, pa, st.acc);
      pass(last);
    }
    WgWait<0>();
    FenceRegs(st.acc);
    FenceRegs(pa);
    ReleaseTile(b, j);
    end_tile(j, next);
  }
  // Tiles past the warpgroup's last key: turns and releases only; a split that starts here merges
  // an empty state (no row of the warpgroup reaches it).
  for (int j = n_att; j < b.num_tiles; ++j) {
    if (j * kTile % kSplit == 0) st.Reset();
    TurnWait(wg);
    pass(j + 1 == b.num_tiles);
    MbarWait(&b.full[b.Stage(j)], b.Phase(j));
    ReleaseTile(b, j);
    end_tile(j, false);
  }
}

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

// Internal to kernels/softmax_attention (included by softmax_attention.cu only): the sm_90a forward
// for bf16 q/k/v at head dims 64 and 128 (SoftmaxAttentionFwdKernel::kWgmma), warp-specialised.
// One block per 128 flat query rows (the same work items, rows and split/merge walk as
// attention_mma_kernels.cuh's FwdKernel): a producer warp fills a four-stage K/V ring in the
// swizzled layout wgmma reads (bulk tensor copies for full tiles, zero-filling cp.async for a
// sequence's last partial tile) behind mbarrier full/empty barriers; two consumer warpgroups of 64
// rows each issue Q·Kᵀ of tile j + 1 with P·V of tile j, taking turns at the tensor cores (two
// named barriers, FlashAttention-3's ping-pong) so one group's softmax runs under the other's
// products. Each row's operations and their order are AttendTileMma's (SoftmaxScores,
// RescalePack, the wgmma rows == mma.sync rows), so decode == forward bitwise still holds
// (softmax_attention_wgmma_cuda_test checks the instruction half).
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

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

// What the producer and the consumers of one block agree on.
struct WsBlock {
  int seq_start, kv_head, num_keys, num_tiles;
  uint64_t* full;   // [kWgStages]: tile landed (1 arrival + the bulk copies' bytes)
  uint64_t* empty;  // [kWgStages]: the 8 consumer warps are done with the stage
};

// Producer warp (threads 0..31): tile i into stage i % kWgStages once every consumer warp released
// tile i − kWgStages. A full tile comes by bulk tensor copies ([64 dims, 1 head, 64 keys] boxes);
// a partial one by cp.async with zeros past the sequence's keys, so no other row enters.
template <int kD>
__device__ __forceinline__ void ProduceTiles(const WsBlock& b, unsigned char* smem, const bf16* k,
                                             const bf16* v, int64_t kv_ld, const CUtensorMap* tmk,
                                             const CUtensorMap* tmv) {
  const int lane = threadIdx.x;
  const bf16* kb = k + (int64_t{b.seq_start} * kv_ld / kD + b.kv_head) * kD;
  const bf16* vb = v + (int64_t{b.seq_start} * kv_ld / kD + b.kv_head) * kD;
  for (int i = 0; i < b.num_tiles; ++i) {
    const int stage = i % kWgStages, a = i * kTile, valid = min(kTile, b.num_keys - a);
    if (i >= kWgStages) MbarWait(&b.empty[stage], ((i / kWgStages) - 1) & 1);
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
  const int stage = i % kWgStages;
  MbarWait(&b.full[stage], (i / kWgStages) & 1);
  if (b.num_keys - i * kTile < kTile) FenceProxyAsync();  // cp.async (generic proxy) wrote it
  const TileDesc kd = StageDescs::AtStage<kD>(descs.k0, stage);
  WgFence();
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) WgmmaN64<false>(d, qf[kk], kd.K(kk), kk > 0);
  WgCommit();
}

// acc += P·V of tile i (stage i % kWgStages), issued and committed, not waited for.
template <int kD>
__device__ __forceinline__ void IssuePv(const StageDescs& descs, int i, const uint32_t (&pa)[4][4],
                                        float (&acc)[kD / 8][4]) {
  const TileDesc vd = StageDescs::AtStage<kD>(descs.v0, i % kWgStages);
  WgFence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) WgmmaPv<kD>(acc, pa[kk], vd.V(kk));
  WgCommit();
}

__device__ __forceinline__ void ReleaseTile(const WsBlock& b, int i) {
  __syncwarp();
  MbarArriveIf(&b.empty[i % kWgStages], threadIdx.x % 32 == 0);
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
    IssuePv<kD>(descs, j, pa, st.acc);
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
      IssuePv<kD>(descs, j, pa, st.acc);
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
    MbarWait(&b.full[j % kWgStages], (j / kWgStages) & 1);
    ReleaseTile(b, j);
    end_tile(j, false);
  }
}

template <int kD>
__global__ void __launch_bounds__(kWsThreads, 1)
    FwdWgmmaKernel(Dims dm, const bf16* q, const bf16* k, const bf16* v, FloatPtr o, float* lse,
                   const FwdItem* items, const __grid_constant__ CUtensorMap tmk,
                   const __grid_constant__ CUtensorMap tmv) {
#if TANDEM_WGMMA_DEVICE  // sm_90a code only; the host never launches it elsewhere
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __shared__ uint64_t bars[2 * kWgStages];
  unsigned char* smem = smem_raw + ((1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u);
  const FwdItem it = items[blockIdx.x];
  const int live_rows = min(kFwdRows, it.seq_len * dm.group - it.row0);  // > 0
  const int num_keys = (it.row0 + live_rows - 1) / dm.group + 1;
  const WsBlock b{it.seq_start, it.kv_head,      num_keys, (num_keys + kTile - 1) / kTile,
                  bars,         bars + kWgStages};
  if (threadIdx.x == 0) {
    for (int s = 0; s < kWgStages; ++s) {
      MbarInit(&b.full[s], 1);
      MbarInit(&b.empty[s], kFwdWarps);
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
      ProduceTiles<kD>(b, smem, k, v, int64_t{dm.hkv} * kD, &tmk, &tmv);
      CpAsyncWait<0>();
    }
    return;
  }
  SetMaxRegsInc<kConsumerRegs>();
  const int ct = threadIdx.x - kWgThreads, lane = ct % 32;
  const int cw = __shfl_sync(0xffffffffu, ct / 32, 0), wg = cw / 4;
  const auto q_row = [&](int f) {  // flat row f of the sequence -> row of q [T, H]
    return int64_t{it.seq_start + f / dm.group} * dm.h + it.kv_head * dm.group + f % dm.group;
  };
  bf16* qs = WgSmem<kD>::Q(smem) + cw * kWarpRows * kLd<kD>;  // this warp's 16 rows
  for (int idx = lane; idx < kWarpRows * (kD / 8); idx += 32) {
    const int r = cw * kWarpRows + idx / (kD / 8), c = (idx % (kD / 8)) * 8;
    const bool ok = r < live_rows;
    CpAsync16(qs + (r % kWarpRows) * kLd<kD> + c, ok ? q + q_row(it.row0 + r) * kD + c : q, ok);
  }
  CpAsyncCommit();
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
  const int n_att = wg_live ? min(b.num_tiles, wg_pos_hi / kTile + 1) : 0;
  // Tile i is seen whole by every row when all 64 rows are live and the lowest position
  // (it.row0 + 64wg) / group reaches its last key: (i + 1)·kTile <= pos_lo + 1.
  const bool wg_all_live = wg * kWgRows + kWgRows <= live_rows;
  const int n_full = wg_all_live ? ((it.row0 + wg * kWgRows) / dm.group + 1) / kTile : 0;
  float* tot = reinterpret_cast<float*>(WgSmem<kD>::Q(smem)) + ct;  // after the Q rows are read
  WarpState<kD> st;
  ConsumeTiles<kD>(b, smem, dm.scale_log2, qf, pos, n_att, n_full, wg, tot, st);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (pos[i] < 0) continue;
    const int64_t row = q_row(it.row0 + cw * kWarpRows + lane / 4 + 8 * i);
    const float inv_l = InverseSum(st.l[i]);
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      StorePair(o, row * kD + n * 8 + 2 * (lane % 4), FinalOutput(st.acc[n][2 * i], inv_l),
                FinalOutput(st.acc[n][2 * i + 1], inv_l));
    }
    if (lse != nullptr && lane % 4 == 0) lse[row] = Lse(st.m[i], st.l[i]);
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
template <int kD>
cudaError_t LaunchFwdWgmma(cudaStream_t stream, const Dims& dm, const bf16* q, const bf16* k,
                           const bf16* v, FloatPtr o, float* lse, const FwdItem* items,
                           int num_items, int64_t t) {
  CUtensorMap tmk, tmv;
  if (!KvTensorMap(&tmk, k, t, dm.hkv, kD) || !KvTensorMap(&tmv, v, t, dm.hkv, kD)) {
    return cudaErrorNotSupported;
  }
  const cudaError_t e = AllowSmem<&FwdWgmmaKernel<kD>>(static_cast<int>(WgSmem<kD>::kBytes));
  if (e != cudaSuccess) return e;
  FwdWgmmaKernel<kD>
      <<<num_items, kWsThreads, WgSmem<kD>::kBytes, stream>>>(dm, q, k, v, o, lse, items, tmk, tmv);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::attention_mma

// Internal to kernels/softmax_attention (included by attention_wgmma_kernels.cuh only): the sm_90a
// forward's consumer warpgroup — its products issued from the ring's stages, the turns the two
// warpgroups take at the tensor cores, and its walk over an item's tiles (ConsumeTiles).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/softmax_attention/attention_mma_kernels.cuh"
#include "kernels/softmax_attention/attention_wgmma.cuh"
#include "kernels/softmax_attention/attention_wgmma_ring.cuh"

namespace tandem::kernels::cuda::attention_mma {

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

}  // namespace tandem::kernels::cuda::attention_mma

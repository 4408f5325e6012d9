// Internal to kernels/softmax_attention (included by softmax_attention.cu only): the second sm_90a
// wgmma forward (SoftmaxAttentionFwdKernel::kWgmmaV2). Same blocks, producer warp, K/V ring and
// per-row operations as FwdWgmmaKernel (attention_wgmma_kernels.cuh), so the same bits; only the
// scheduling differs: the two consumer warpgroups take turns issuing their wgmmas (two named
// barriers, FlashAttention-3's ping-pong) so one group's softmax runs under the other's products,
// and tiles every row of a warpgroup sees whole skip the causal mask (same bits for lim = 64).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/softmax_attention/attention_wgmma_kernels.cuh"

namespace tandem::kernels::cuda::attention_mma {

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

// The warpgroup's walk, ConsumeTiles with turns. Both warpgroups run num_tiles + 1 issue slots
// (the first tile's scores, then one per tile, empty where nothing is issued), each: wait for the
// turn, issue, pass the turn. Warpgroup 1 passes once before its first slot and not after its
// last, so every barrier phase gets 128 waiting and 128 arriving threads. n_full: tiles [0,
// n_full) are seen whole by every row of the warpgroup.
template <int kD>
__device__ __forceinline__ void ConsumeTilesV2(const WsBlock& b, unsigned char* smem,
                                               float scale_log2, const uint32_t (&qf)[kD / 16][4],
                                               const int (&pos)[2], int n_att, int n_full, int wg,
                                               float* tot, WarpState<kD>& st) {
  float s[8][4], alpha[2];
  uint32_t pa[4][4];
  const auto softmax = [&](int i, auto mask) {  // s holds tile i's finished scores
    const int a = i * kTile;
    const int lim[2] = {max(0, min(kTile, pos[0] + 1 - a)), max(0, min(kTile, pos[1] + 1 - a))};
    SoftmaxScores<kD, decltype(mask)::value>(s, lim, scale_log2, st, alpha);
  };
  const auto softmax_any = [&](int i) {  // outside any in-flight wgmma
    if (i < n_full) {
      softmax(i, std::false_type());
    } else {
      softmax(i, std::true_type());
    }
  };
  const auto pass = [&](bool last) { TurnPassIf(wg, !(wg == 1 && last)); };
  TurnPassIf(wg, wg == 1);
  TurnWait(wg);
  if (n_att > 0) {  // straight-line from the wgmmas to their wait
    st.Reset();
    IssueScores<kD>(b, smem, 0, qf, s);
    pass(false);  // b.num_tiles >= 1
    WgWait<0>();
    FenceRegs(s);
  } else {
    pass(false);
  }
  if (n_att > 0) softmax_any(0);
  for (int j = 0; j < b.num_tiles; ++j) {
    const int a = j * kTile;
    if (a % kSplit == 0 && j >= n_att) st.Reset();
    const bool split_end = (a + kTile) % kSplit == 0 || j + 1 == b.num_tiles;
    const bool next = j + 1 < n_att, last = j + 1 == b.num_tiles;
    if (j < n_att) {
      RescalePack<kD>(s, alpha, st.acc, pa);
      FenceRegs(st.acc);
      FenceRegs(pa);
      // Each case is straight-line code from its first wgmma to its last wait.
      if (next && !split_end && j + 1 < n_full) {
        TurnWait(wg);
        IssueScores<kD>(b, smem, j + 1, qf, s);
        IssuePv<kD>(smem, j, pa, st.acc);
        pass(last);
        WgWait<1>();
        FenceRegs(s);
        softmax(j + 1, std::false_type());
        WgWait<0>();
      } else if (next && !split_end) {
        TurnWait(wg);
        IssueScores<kD>(b, smem, j + 1, qf, s);
        IssuePv<kD>(smem, j, pa, st.acc);
        pass(last);
        WgWait<1>();
        FenceRegs(s);
        softmax(j + 1, std::true_type());
        WgWait<0>();
      } else if (next) {
        TurnWait(wg);
        IssueScores<kD>(b, smem, j + 1, qf, s);
        IssuePv<kD>(smem, j, pa, st.acc);
        pass(last);
        WgWait<0>();
        FenceRegs(s);
      } else {
        TurnWait(wg);
        IssuePv<kD>(smem, j, pa, st.acc);
        pass(last);
        WgWait<0>();
      }
      FenceRegs(st.acc);
      FenceRegs(pa);
      ReleaseTile(b, j);
    } else {
      TurnWait(wg);
      pass(last);
      MbarWait(&b.full[j % kWgStages], (j / kWgStages) & 1);
      ReleaseTile(b, j);
    }
    if (split_end) {
      MergeSplitForward<kD>(st, tot, a / kSplit * kSplit, pos, last);
      if (next) {
        st.Reset();
        softmax_any(j + 1);
      }
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(kWsThreads, 1)
    FwdWgmmaV2Kernel(Dims dm, const bf16* q, const bf16* k, const bf16* v, FloatPtr o, float* lse,
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
  ConsumeTilesV2<kD>(b, smem, dm.scale_log2, qf, pos, n_att, n_full, wg, tot, st);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (pos[i] < 0) continue;
    const int64_t row = q_row(it.row0 + cw * kWarpRows + lane / 4 + 8 * i);
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      StorePair(o, row * kD + n * 8 + 2 * (lane % 4), FinalOutput(st.acc[n][2 * i], st.l[i]),
                FinalOutput(st.acc[n][2 * i + 1], st.l[i]));
    }
    if (lse != nullptr && lane % 4 == 0) lse[row] = Lse(st.m[i], st.l[i]);
  }
#else
  __trap();
#endif
}

// cudaErrorNotSupported when the tensor maps cannot be built.
template <int kD>
cudaError_t LaunchFwdWgmmaV2(cudaStream_t stream, const Dims& dm, const bf16* q, const bf16* k,
                             const bf16* v, FloatPtr o, float* lse, const FwdItem* items,
                             int num_items, int64_t t) {
  CUtensorMap tmk, tmv;
  if (!KvTensorMap(&tmk, k, t, dm.hkv, kD) || !KvTensorMap(&tmv, v, t, dm.hkv, kD)) {
    return cudaErrorNotSupported;
  }
  const cudaError_t e = SetSmem(&FwdWgmmaV2Kernel<kD>, WgSmem<kD>::kBytes);
  if (e != cudaSuccess) return e;
  FwdWgmmaV2Kernel<kD>
      <<<num_items, kWsThreads, WgSmem<kD>::kBytes, stream>>>(dm, q, k, v, o, lse, items, tmk, tmv);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::attention_mma

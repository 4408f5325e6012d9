// Internal to the attention backward (include from softmax_attention_bwd.cu only): the sm_90a
// wgmma backward kernel at D = 128 (building blocks in attention_bwd_wgmma.cuh). A block takes an
// item by ticket, loads its 128 keys of K and V, walks the query tiles from the diagonal on, and
// per tile adds dV, dK in registers and (one step later) its dQ partial to the tile's running sum
// in key-tile order.
// At the end the block adds its dK, dV to the kv head's running sums in query-head order. The last
// contributor of each sum scales and stores the gradient in its own dtype.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/softmax_attention/attention_bwd_wgmma.cuh"

namespace tandem::kernels::cuda::attention_bwd {

// P and dS for the warpgroup's Sᵀ, dPᵀ (this warp's 16 keys from key0, the step's 64 queries from
// i0, sequence-relative), packed as bf16 A fragments of the gradient products.
__device__ __forceinline__ void ProbsWg(float (&st)[8][4], float (&dpt)[8][4], int key0, int i0,
                                        int len, const float* slse, const float* sdelta,
                                        float scale_log2, uint32_t (&pa)[4][4],
                                        uint32_t (&dsa)[4][4]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + g + 8 * (e / 2), qc = 8 * n + 2 * t4 + e % 2, q = i0 + qc;
      ProbsAndDs(st[n][e], dpt[n][e], key <= q && q < len, slse[qc], sdelta[qc], scale_log2);
    }
  }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    AccToA(pa[kk], st[2 * kk], st[2 * kk + 1]);
    AccToA(dsa[kk], dpt[2 * kk], dpt[2 * kk + 1]);
  }
}

// This thread's dQ partial into the staging smem in fragment order. Each thread reads back only
// its own slots (AddDqOrdered), so no barrier orders the two.
__device__ __forceinline__ void StageDq(const float (&dq)[8][4], float4* stage) {
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    stage[c * kWgThreads + threadIdx.x] = make_float4(dq[c][0], dq[c][1], dq[c][2], dq[c][3]);
  }
}

// Adds the staged dQ partial of query tile qt to the tile's running sum after key tiles 0 .. j − 1
// did; key tile qt / 2, the tile's last, stores dq·scale. The running sums are kept in the
// staging's fragment order, so a warp reads and writes 512 contiguous bytes per access.
__device__ __forceinline__ void AddDqOrdered(const WgArgs& a, const WgItem& it, int qt,
                                             const float4* stage) {
  const int wg = threadIdx.x / 128, wi = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4, j = it.k_tile, last = qt / 2;
  const int tile = it.head * a.q_tiles_total + it.q_tile_base + qt;
  int* cnt = a.dq_count + tile;
  if (threadIdx.x == 0) WaitCount(cnt, j);
  __syncthreads();
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int at = c * kWgThreads + threadIdx.x;
    float4* acc = reinterpret_cast<float4*>(a.dq_acc) + int64_t{tile} * (kWgQRows * 128 / 4) + at;
    float4 x = stage[at];
    if (j > 0) {
      const float4 prev = __ldcg(acc);
      x.x = __fadd_rn(prev.x, x.x), x.y = __fadd_rn(prev.y, x.y);
      x.z = __fadd_rn(prev.z, x.z), x.w = __fadd_rn(prev.w, x.w);
    }
    if (j != last) {
      __stcg(acc, x);
    } else {
      // Offsets fit in 32 bits (the entry point checks T·H·D < 2³¹). Rows q0 (.x, .y), q0 + 8.
      const int q0 = qt * kWgQRows + 16 * wi + g;
      const int row0 = ((it.seq_start + q0) * a.base.h + it.head) * 128 + 64 * wg + 2 * t4;
      const int row1 = row0 + 8 * a.base.h * 128;
      if (q0 < it.seq_len) {
        a.base.dq.Store(row0 + 8 * c, __fmul_rn(x.x, a.base.scale));
        a.base.dq.Store(row0 + 8 * c + 1, __fmul_rn(x.y, a.base.scale));
      }
      if (q0 + 8 < it.seq_len) {
        a.base.dq.Store(row1 + 8 * c, __fmul_rn(x.z, a.base.scale));
        a.base.dq.Store(row1 + 8 * c + 1, __fmul_rn(x.w, a.base.scale));
      }
    }
  }
  __syncthreads();  // every thread's stores precede the release
  if (threadIdx.x == 0 && j != last) {
    __threadfence();
    ReleaseCount(cnt, j + 1);
  }
}

// Adds this block's dK, dV (its query head's share) to the kv head's running sums after the
// group's heads before it did; the group's last head stores dk·scale and dv.
__device__ __forceinline__ void StoreDkDvOrdered(const WgArgs& a, const WgItem& it,
                                                 const float (&dk)[16][4],
                                                 const float (&dv)[16][4]) {
  const int wg = threadIdx.x / 128, wi = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4, group = a.base.group;
  const int rank = it.head % group, kvh = it.head / group, last = group - 1;
  int* cnt = a.dk_count + int64_t{kvh} * a.k_tiles_total + it.k_tile_base + it.k_tile;
  if (threadIdx.x == 0) WaitCount(cnt, rank);
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = it.k_tile * kWgKeys + 64 * wg + 16 * wi + g + 8 * r;
    if (key >= it.seq_len) continue;
    const int64_t row = (int64_t{it.seq_start + key} * a.base.hkv + kvh) * 128 + 2 * t4;
#pragma unroll
    for (int n = 0; n < 16; ++n) {
      const int64_t off = row + 8 * n;
      float kx = dk[n][2 * r], ky = dk[n][2 * r + 1], vx = dv[n][2 * r], vy = dv[n][2 * r + 1];
      if (rank > 0) {
        const float2 pk = __ldcg(reinterpret_cast<const float2*>(a.dk_acc + off));
        const float2 pv = __ldcg(reinterpret_cast<const float2*>(a.dv_acc + off));
        kx = __fadd_rn(pk.x, kx), ky = __fadd_rn(pk.y, ky);
        vx = __fadd_rn(pv.x, vx), vy = __fadd_rn(pv.y, vy);
      }
      if (rank == last) {
        a.base.dk.Store(off, __fmul_rn(kx, a.base.scale));
        a.base.dk.Store(off + 1, __fmul_rn(ky, a.base.scale));
        a.base.dv.Store(off, vx);
        a.base.dv.Store(off + 1, vy);
      } else {
        __stcg(reinterpret_cast<float2*>(a.dk_acc + off), make_float2(kx, ky));
        __stcg(reinterpret_cast<float2*>(a.dv_acc + off), make_float2(vx, vy));
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && rank != last) {
    __threadfence();
    ReleaseCount(cnt, rank + 1);
  }
}

// One query tile (step `step`, smem stage `stage`): the score wgmmas, and while they run the
// previous step's ordered dQ add (so a predecessor's late release costs no tensor-core time); then
// P and dS, dV/dK wgmmas, dS to smem, dQ = dS·K for the warpgroup's 64 dims into the staging.
__device__ __forceinline__ void StepWg(const WgArgs& a, const WgItem& it, unsigned char* sm,
                                       int stage, int step, float (&dk)[16][4],
                                       float (&dv)[16][4]) {
  using attention_mma::VDesc;
  using S = WgBwdSmem;
  const int wg = threadIdx.x / 128, wi = threadIdx.x / 32 % 4;
  const int qt = 2 * it.k_tile + step, i0 = qt * kWgQRows;
  const unsigned char *qs = S::Q(sm, stage), *dos = S::Do(sm, stage);
  float st[8][4], dpt[8][4];
  IssueScoresWg(S::K(sm, wg), S::V(sm, wg), qs, dos, st, dpt);
  if (step > 0) AddDqOrdered(a, it, qt - 1, S::DqStage(sm));
  attention_mma::WgWait<0>();
  attention_mma::FenceRegs(st);
  attention_mma::FenceRegs(dpt);
  uint32_t pa[4][4], dsa[4][4];
  ProbsWg(st, dpt, it.k_tile * kWgKeys + 64 * wg + 16 * wi, i0, it.seq_len, S::Lse(sm, stage),
          S::Delta(sm, stage), a.base.scale_log2, pa, dsa);
  attention_mma::WgFence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) attention_mma::WgmmaPv<128>(dv, pa[kk], VDesc(dos, kk));
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) attention_mma::WgmmaPv<128>(dk, dsa[kk], VDesc(qs, kk));
  attention_mma::WgCommit();
  StoreDsT(dsa, S::Ds(sm, wg));
  attention_mma::FenceProxyAsync();
  __syncthreads();  // both warpgroups' dSᵀ in smem (the loop's barrier frees them again)
  float dq[8][4];
#pragma unroll
  for (int n = 0; n < 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
  attention_mma::WgFence();
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
    WgmmaSsN64<1, 1>(dq, VDesc(S::Ds(sm, kk / 4), kk % 4),
                     VDesc(S::K(sm, kk / 4) + wg * attention_mma::kSwBlockBytes, kk % 4));
  }
  attention_mma::WgCommit();
  attention_mma::WgWait<0>();
  attention_mma::FenceRegs(dq);
  attention_mma::FenceRegs(dk);
  attention_mma::FenceRegs(dv);
  StageDq(dq, S::DqStage(sm));
}

// Q, dO, lse2 and δ of query tile 2·k_tile + step into stage `stage`.
__device__ __forceinline__ void LoadStep(const WgArgs& a, const WgItem& it, unsigned char* sm,
                                         int stage, int step) {
  const BwdArgs& b = a.base;
  const int i0 = (2 * it.k_tile + step) * kWgQRows, valid = it.seq_len - i0;
  const int64_t q_off = (int64_t{it.seq_start + i0} * b.h + it.head) * 128;
  LoadSwTile(WgBwdSmem::Q(sm, stage), b.q + q_off, int64_t{b.h} * 128, valid, b.q);
  LoadSwTile(WgBwdSmem::Do(sm, stage), b.d_o + q_off, int64_t{b.h} * 128, valid, b.d_o);
  const int r = threadIdx.x % kWgQRows;
  const bool ok = r < valid;
  const int64_t v_off = int64_t{it.head} * b.t + it.seq_start + i0 + r;
  if (threadIdx.x < kWgQRows) {
    CpAsync4(WgBwdSmem::Lse(sm, stage) + r, ok ? b.lse2 + v_off : b.lse2, ok);
  } else if (threadIdx.x < 2 * kWgQRows) {
    CpAsync4(WgBwdSmem::Delta(sm, stage) + r, ok ? b.delta + v_off : b.delta, ok);
  }
}

__global__ void __launch_bounds__(kWgThreads, 1) BwdWgmmaKernel(WgArgs a, const WgItem* items) {
#if TANDEM_WGMMA_DEVICE  // sm_90a code only; the host never launches it elsewhere
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __shared__ int ticket;
  unsigned char* sm = smem_raw + ((1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u);
  // Items by ticket, not blockIdx: a block only ever waits on items with smaller tickets, which
  // are running or done, so the ordered adds cannot deadlock whatever order blocks start in.
  if (threadIdx.x == 0) ticket = atomicAdd(a.ticket, 1);
  __syncthreads();
  const WgItem it = items[ticket];
  const BwdArgs& b = a.base;
  const int kvh = it.head / b.group, len = it.seq_len;
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    const int first = it.k_tile * kWgKeys + 64 * w;
    const int64_t off = (int64_t{it.seq_start + first} * b.hkv + kvh) * 128;
    const bool any = first < len;
    LoadSwTile(WgBwdSmem::K(sm, w), any ? b.k + off : b.k, int64_t{b.hkv} * 128, len - first, b.k);
    LoadSwTile(WgBwdSmem::V(sm, w), any ? b.v + off : b.v, int64_t{b.hkv} * 128, len - first, b.v);
  }
  const int steps = (len + kWgQRows - 1) / kWgQRows - 2 * it.k_tile;  // >= 1
  LoadStep(a, it, sm, 0, 0);
  CpAsyncCommit();
  if (steps > 1) LoadStep(a, it, sm, 1, 1);
  CpAsyncCommit();
  float dk[16][4] = {}, dv[16][4] = {};
  for (int s = 0; s < steps; ++s) {
    CpAsyncWait<1>();  // step s (and K, V) landed for this thread ...
    attention_mma::FenceProxyAsync();
    __syncthreads();  // ... and for all; every thread is done with step s − 1's stage
    if (s + 2 < steps) LoadStep(a, it, sm, (s + 2) % kWgStagesBwd, s + 2);
    CpAsyncCommit();
    StepWg(a, it, sm, s % kWgStagesBwd, s, dk, dv);
  }
  AddDqOrdered(a, it, 2 * it.k_tile + steps - 1, WgBwdSmem::DqStage(sm));
  StoreDkDvOrdered(a, it, dk, dv);
#else
  __trap();
#endif
}

}  // namespace tandem::kernels::cuda::attention_bwd

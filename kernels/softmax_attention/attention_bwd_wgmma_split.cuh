// Internal to the attention backward (include from softmax_attention_bwd.cu only): the sm_90a
// wgmma backward at D = 128 with dQ split from dK/dV (SoftmaxAttentionBwdKernel::kWgmmaSplit).
// One launch of two block kinds, longest first, 256 threads = two warpgroups each:
//   dK/dV block (128 keys of one kv head; 64 per warpgroup, K and V kept in smem): the group's
//     query heads ascending, then 64-row query tiles from the diagonal on, ascending; per tile
//     Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (both operands from smem), then dV += Pᵀ·dO and dK += dSᵀ·Q with
//     Pᵀ and dSᵀ as register A fragments. No dQ.
//   dQ block (128 query rows of one head; 64 per warpgroup, Q and dO kept in smem): 64-key tiles
//     0 .. diagonal ascending; S = Q·Kᵀ, dP = dO·Vᵀ, then dQ += dS·K.
// Each gradient element is accumulated in one thread's registers in that fixed order and stored
// once: no atomics, no hand-off between blocks, and the bits do not depend on the grid or on the
// other sequences of the pack (tiles are sequence-relative, rows past a sequence load as zeros).
// Streamed tiles (Q/dO or K/V, 64 rows) go through a four-stage cp.async ring two steps ahead, so
// a step's gradient products (dK, dV or dQ) may still run when the next step's scores are issued:
// the tensor cores go from one step to the next without waiting for the warps. Within a step a
// warpgroup overlaps its softmax work with its own products (P's exponentials under dP, dS under
// dV); the two warpgroups of a block overlap each other.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/softmax_attention/attention_bwd_wgmma.cuh"

namespace tandem::kernels::cuda::attention_bwd {

inline constexpr int kSplitThreads = 256;
inline constexpr int kSplitStages = 4;
inline constexpr int kSplitAhead = 2;  // steps in flight ahead of the current one
static_assert(kSplitAhead + 2 <= kSplitStages, "steps s − 1 .. s + kSplitAhead have stages");
static_assert(kSplitThreads == kWgThreads, "LoadSwTile strides by kWgThreads");

// Shared memory (from a 1024-aligned base): four fixed 64-row swizzled tiles (0, 1: K or Q of
// warpgroup 0, 1; 2, 3: V or dO), kSplitStages stages of two streamed tiles (Q, dO or K, V), the
// stages' lse2 and δ (dK/dV blocks), then the fixed rows' lse2 and δ (dQ blocks).
struct SplitSmem {
  static constexpr int kSub = 64 * 128 * 2;
  static constexpr int kStreamOff = 4 * kSub;
  static constexpr int kVecOff = kStreamOff + kSplitStages * 2 * kSub;
  static constexpr int kFixedVecOff = kVecOff + kSplitStages * 2 * 64 * 4;
  static constexpr size_t kBytes = 1024 + kFixedVecOff + 2 * 128 * 4;
  static __device__ unsigned char* Fixed(unsigned char* b, int i) { return b + i * kSub; }
  static __device__ unsigned char* Stream(unsigned char* b, int s, int i) {
    return b + kStreamOff + (2 * s + i) * kSub;
  }
  static __device__ float* Lse(unsigned char* b, int s) {
    return reinterpret_cast<float*>(b + kVecOff) + 2 * s * 64;
  }
  static __device__ float* Delta(unsigned char* b, int s) { return Lse(b, s) + 64; }
  static __device__ float* FixedLse(unsigned char* b) {
    return reinterpret_cast<float*>(b + kFixedVecOff);
  }
  static __device__ float* FixedDelta(unsigned char* b) { return FixedLse(b) + 128; }
};
static_assert(SplitSmem::kBytes <= 227 * 1024, "dynamic smem of one block");

// Steps [0, kSplitAhead) into their stages (one commit group each, empty past `steps`).
template <typename Issue>
__device__ __forceinline__ void FirstStages(int steps, Issue issue) {
#pragma unroll
  for (int i = 0; i < kSplitAhead; ++i) {
    if (i < steps) issue(i);
    CpAsyncCommit();
  }
}

// Waits for step s's stage (and the fixed tiles) in every thread, then issues step
// s + kSplitAhead into the stage step s + kSplitAhead − kSplitStages used (s − 2).
template <typename Issue>
__device__ __forceinline__ void NextStage(int s, int steps, Issue issue) {
  CpAsyncWait<kSplitAhead - 1>();
  attention_mma::FenceProxyAsync();
  // Every thread's step s landed. Step s − 1's gradient products may still run, but every
  // warpgroup waited in step s − 1 (for its scores) on all its products of step s − 2, the last
  // readers of the stage the loads below refill.
  __syncthreads();
  if (s + kSplitAhead < steps) issue(s + kSplitAhead);
  CpAsyncCommit();
}

// The dK/dV block: `it.tile` is the 128-key tile, `it.head` the kv head.
__device__ __forceinline__ void SplitDkDv(const BwdArgs& b, const WorkItem& it, unsigned char* sm) {
  using S = SplitSmem;
  const int wg = threadIdx.x / 128, wi = threadIdx.x / 32 % 4;
  const int len = it.seq_len, j0 = it.tile * 128, kvh = it.head;
  const int n_q = (len + 63) / 64 - 2 * it.tile, steps = b.group * n_q;  // n_q >= 1
  const int64_t kv_stride = int64_t{b.hkv} * 128, q_stride = int64_t{b.h} * 128;
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    const int first = j0 + 64 * w;
    const int64_t off = (int64_t{it.seq_start + first} * b.hkv + kvh) * 128;
    const bool any = first < len;
    LoadSwTile(S::Fixed(sm, w), any ? b.k + off : b.k, kv_stride, len - first, b.k);
    LoadSwTile(S::Fixed(sm, 2 + w), any ? b.v + off : b.v, kv_stride, len - first, b.v);
  }
  const auto issue = [&](int s) {
    const int head = kvh * b.group + s / n_q, i0 = j0 + 64 * (s % n_q), st = s % kSplitStages;
    const int64_t q_off = (int64_t{it.seq_start + i0} * b.h + head) * 128;
    LoadSwTile(S::Stream(sm, st, 0), b.q + q_off, q_stride, len - i0, b.q);
    LoadSwTile(S::Stream(sm, st, 1), b.d_o + q_off, q_stride, len - i0, b.d_o);
    LoadLseDelta(S::Lse(sm, st), S::Delta(sm, st), b, int64_t{head} * b.t + it.seq_start + i0,
                 len - i0, 64);
  };
  FirstStages(steps, issue);
  float dk[16][4], dv[16][4];     // defined by the first step's products (steps >= 1)
  const int key0 = j0 + 64 * wg;  // the warpgroup's first key
  for (int s = 0; s < steps; ++s) {
    NextStage(s, steps, issue);
    const int st = s % kSplitStages, i0 = j0 + 64 * (s % n_q);
    const unsigned char *qs = S::Stream(sm, st, 0), *dos = S::Stream(sm, st, 1);
    // Straight-line from the first wgmma to the last wait: P's exponentials run under the dPᵀ
    // product, dS under dV's. The step's lse2 and δ are read from smem ahead of the waits.
    float sc[8][4], dp[8][4];
    uint32_t pa[4][4], dsa[4][4];
    QueryValues<true> lse2, delta;
    IssueScore(S::Fixed(sm, wg), qs, sc);
    IssueScore(S::Fixed(sm, 2 + wg), dos, dp);
    lse2.Load(S::Lse(sm, st));
    attention_mma::WgWait<1>();  // Sᵀ, and (issued before it) step s − 1's dK
    attention_mma::FenceRegs(sc);
    attention_mma::FenceRegs(dk);
    ProbsSplit<true>(sc, key0 + 16 * wi, i0, len, lse2, b.scale_log2, pa);
    attention_mma::WgFence();
    IssueAccumulate(dv, pa, dos, s == 0);
    attention_mma::WgCommit();
    delta.Load(S::Delta(sm, st));
    attention_mma::WgWait<1>();
    attention_mma::FenceRegs(dp);
    DsSplit<true>(sc, dp, delta, dsa);
    attention_mma::WgFence();
    IssueAccumulate(dk, dsa, qs, s == 0);
    attention_mma::WgCommit();   // dK finishes under the next step's scores
    attention_mma::WgWait<1>();  // dV, long done by now: pa's registers are free again
    attention_mma::FenceRegs(dv);
  }
  attention_mma::WgWait<0>();
  attention_mma::FenceRegs(dk);
  attention_mma::FenceRegs(dv);
  const int64_t base = (int64_t{it.seq_start} * b.hkv + kvh) * 128;
  StoreRows(b.dk, dk, key0 + 16 * wi, len, base, kv_stride, b.scale, true);
  StoreRows(b.dv, dv, key0 + 16 * wi, len, base, kv_stride, 1.0f, false);
}

// The dQ block: `it.tile` is the 128-row query tile, `it.head` the query head.
__device__ __forceinline__ void SplitDq(const BwdArgs& b, const WorkItem& it, unsigned char* sm) {
  using S = SplitSmem;
  const int wg = threadIdx.x / 128, wi = threadIdx.x / 32 % 4;
  const int len = it.seq_len, i0 = it.tile * 128, head = it.head, kvh = head / b.group;
  const int steps = min(2 * it.tile + 2, (len + 63) / 64);  // 64-key tiles up to the diagonal
  const int64_t kv_stride = int64_t{b.hkv} * 128, q_stride = int64_t{b.h} * 128;
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    const int first = i0 + 64 * w;
    const int64_t off = (int64_t{it.seq_start + first} * b.h + head) * 128;
    const bool any = first < len;
    LoadSwTile(S::Fixed(sm, w), any ? b.q + off : b.q, q_stride, len - first, b.q);
    LoadSwTile(S::Fixed(sm, 2 + w), any ? b.d_o + off : b.d_o, q_stride, len - first, b.d_o);
  }
  LoadLseDelta(S::FixedLse(sm), S::FixedDelta(sm), b, int64_t{head} * b.t + it.seq_start + i0,
               len - i0, 128);
  const auto issue = [&](int s) {
    const int st = s % kSplitStages;
    const int64_t kv_off = (int64_t{it.seq_start + 64 * s} * b.hkv + kvh) * 128;
    LoadSwTile(S::Stream(sm, st, 0), b.k + kv_off, kv_stride, len - 64 * s, b.k);
    LoadSwTile(S::Stream(sm, st, 1), b.v + kv_off, kv_stride, len - 64 * s, b.v);
  };
  FirstStages(steps, issue);
  float dq[16][4];  // defined by the first step's product (steps >= 1)
  const int q0 = i0 + 64 * wg, row0 = q0 + 16 * wi;  // the warpgroup's, the warp's first row
  for (int s = 0; s < steps; ++s) {
    NextStage(s, steps, issue);
    // The warp's rows' lse2 and δ (the same for every step), read ahead of the waits.
    QueryValues<false> lse2, delta;
    lse2.Load(S::FixedLse(sm) + 64 * wg + 16 * wi);
    delta.Load(S::FixedDelta(sm) + 64 * wg + 16 * wi);
    const int st = s % kSplitStages, k0 = 64 * s;
    const unsigned char* ks = S::Stream(sm, st, 0);
    float sc[8][4], dp[8][4];
    uint32_t pa[4][4], dsa[4][4];
    IssueScore(S::Fixed(sm, wg), ks, sc);
    IssueScore(S::Fixed(sm, 2 + wg), S::Stream(sm, st, 1), dp);
    attention_mma::WgWait<1>();  // S, and (issued before it) step s − 1's dQ
    attention_mma::FenceRegs(sc);
    attention_mma::FenceRegs(dq);
    ProbsSplit<false>(sc, row0, k0, len, lse2, b.scale_log2, pa);  // pa unused: P·dO is dV's
    attention_mma::WgWait<0>();
    attention_mma::FenceRegs(dp);
    DsSplit<false>(sc, dp, delta, dsa);
    attention_mma::WgFence();
    IssueAccumulate(dq, dsa, ks, s == 0);
    attention_mma::WgCommit();  // finishes under the next step's scores
  }
  attention_mma::WgWait<0>();
  attention_mma::FenceRegs(dq);
  const int64_t base = (int64_t{it.seq_start} * b.h + head) * 128;
  StoreRows(b.dq, dq, row0, len, base, q_stride, b.scale, true);
}

__global__ void __launch_bounds__(kSplitThreads, 1)
    BwdWgmmaSplitKernel(BwdArgs a, const WorkItem* items) {
#if TANDEM_WGMMA_DEVICE  // sm_90a code only; the host never launches it elsewhere
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* sm = smem_raw + ((1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u);
  const WorkItem it = items[blockIdx.x];
  if (it.kind == kDkDv) {
    SplitDkDv(a, it, sm);
  } else {
    SplitDq(a, it, sm);
  }
#else
  __trap();
#endif
}

}  // namespace tandem::kernels::cuda::attention_bwd

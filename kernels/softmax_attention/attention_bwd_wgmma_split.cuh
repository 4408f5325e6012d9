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
// Streamed tiles (Q/dO or K/V, 64 rows) go through a four-stage cp.async ring three steps ahead.
// Within a step a warpgroup overlaps its softmax work with its own products (P's exponentials
// under dP, dS under dV); the two warpgroups of a block overlap each other.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/softmax_attention/attention_bwd_wgmma.cuh"

namespace tandem::kernels::cuda::attention_bwd {

inline constexpr int kSplitThreads = 256;
inline constexpr int kSplitStages = 4;
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

// d = A·B (kAccumulate = 0) or d += A·B (1) for 64 × 64 × 16, both operands K-major from smem
// descriptors. The first k step of a score overwrites d, so no instruction zeroes the
// accumulators while another product is in flight (that would serialise the wgmma pipeline).
template <int kAccumulate>
__device__ __forceinline__ void WgmmaSsKk(float (&d)[8][4], uint64_t da, uint64_t db) {
#if TANDEM_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(da), "l"(db), "r"(kAccumulate));
#else
  __trap();
#endif
}

// d = A·B over k = 128 dims (8 steps ascending, the first overwriting), A and B K-major swizzled
// 64-row tiles in smem; issued and committed as one group, not waited for.
__device__ __forceinline__ void IssueScore(const unsigned char* a, const unsigned char* b,
                                           float (&d)[8][4]) {
  using attention_mma::KDesc;
  attention_mma::WgFence();
  WgmmaSsKk<0>(d, KDesc(a, 0), KDesc(b, 0));
#pragma unroll
  for (int kk = 1; kk < 8; ++kk) WgmmaSsKk<1>(d, KDesc(a, kk), KDesc(b, kk));
  attention_mma::WgCommit();
}

// P in place of the scores s (rows: the warp's 16 of the warpgroup's 64, from row0; 64 columns
// from col0), masked to key <= query < len, and P as bf16 A fragments. kKeyRows: rows are keys and
// columns queries (dK/dV), else the reverse (dQ); lse2 is indexed by the query's place in the
// tile. The mask is computed for every tile (selects, no branch near in-flight wgmmas).
template <bool kKeyRows>
__device__ __forceinline__ void ProbsSplit(float (&s)[8][4], int row0, int col0, int len,
                                           const float* slse, float scale_log2,
                                           uint32_t (&pa)[4][4]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int rr = g + 8 * (e / 2), cc = 8 * n + 2 * t4 + e % 2;
      const int key = kKeyRows ? row0 + rr : col0 + cc, q = kKeyRows ? col0 + cc : row0 + rr;
      const float p = Exp2(__fmaf_rn(s[n][e], scale_log2, -slse[kKeyRows ? cc : rr]));
      s[n][e] = key <= q && q < len ? p : 0.0f;
    }
  }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) AccToA(pa[kk], s[2 * kk], s[2 * kk + 1]);
}

// dS = P·(dP − δ) in place of dp, and as bf16 A fragments (δ indexed as lse2 in ProbsSplit).
// With ProbsSplit, the operations of ProbsAndDs.
template <bool kKeyRows>
__device__ __forceinline__ void DsSplit(const float (&p)[8][4], float (&dp)[8][4],
                                        const float* sdelta, uint32_t (&dsa)[4][4]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int rr = g + 8 * (e / 2), cc = 8 * n + 2 * t4 + e % 2;
      dp[n][e] = __fmul_rn(p[n][e], __fsub_rn(dp[n][e], sdelta[kKeyRows ? cc : rr]));
    }
  }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) AccToA(dsa[kk], dp[2 * kk], dp[2 * kk + 1]);
}

// acc += A·B with A as four register fragments (16 k each, ascending) and B the N-major 64-row
// tile at b (k rows); issued and committed, not waited for.
__device__ __forceinline__ void IssueAccumulate(float (&acc)[16][4], const uint32_t (&a)[4][4],
                                                const unsigned char* b) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    attention_mma::WgmmaN128<true>(acc, a[kk], attention_mma::VDesc(b, kk));
}

// 64 lse2 and δ values from [H, T] offset `first` (zeros from index `valid` on) by threads
// [0, 128): lse2 to lse_dst, δ to delta_dst. `n` values: 64 or 128 (then threads [0, 256)).
__device__ __forceinline__ void LoadLseDelta(float* lse_dst, float* delta_dst, const BwdArgs& b,
                                             int64_t first, int valid, int n) {
  const int r = threadIdx.x % n;
  const bool ok = r < valid;
  if (threadIdx.x < n) {
    CpAsync4(lse_dst + r, ok ? b.lse2 + first + r : b.lse2, ok);
  } else if (threadIdx.x < 2 * n) {
    CpAsync4(delta_dst + r, ok ? b.delta + first + r : b.delta, ok);
  }
}

// This thread's two rows (row0 + g, + 8, stored when < len) × 128 columns of acc·mul into
// dst [.., row_stride] from `base` (the sequence's first row, the head's column offset).
__device__ __forceinline__ void StoreRows(const FloatPtr& dst, const float (&acc)[16][4], int row0,
                                          int len, int64_t base, int64_t row_stride, float mul,
                                          bool scaled) {
  const int lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + g + 8 * r;
    if (row >= len) continue;
    const int64_t off = base + int64_t{row} * row_stride + 2 * t4;
#pragma unroll
    for (int n = 0; n < 16; ++n) {
      const float x = acc[n][2 * r], y = acc[n][2 * r + 1];
      dst.Store(off + 8 * n, scaled ? __fmul_rn(x, mul) : x);
      dst.Store(off + 8 * n + 1, scaled ? __fmul_rn(y, mul) : y);
    }
  }
}

// Steps [0, kSplitStages − 1) into their stages (one commit group each, empty past `steps`).
template <typename Issue>
__device__ __forceinline__ void FirstStages(int steps, Issue issue) {
#pragma unroll
  for (int i = 0; i < kSplitStages - 1; ++i) {
    if (i < steps) issue(i);
    CpAsyncCommit();
  }
}

// Waits for step s's stage (and the fixed tiles) in every thread, then issues step
// s + kSplitStages − 1 into the stage step s − 1 used.
template <typename Issue>
__device__ __forceinline__ void NextStage(int s, int steps, Issue issue) {
  CpAsyncWait<kSplitStages - 2>();
  attention_mma::FenceProxyAsync();
  // Every thread's step s landed; every thread also waited (at the end of step s − 1) for the
  // wgmmas of step s − 1, the last readers of the stage the loads below refill.
  __syncthreads();
  if (s + kSplitStages - 1 < steps) issue(s + kSplitStages - 1);
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
  float dk[16][4] = {}, dv[16][4] = {};
  const int key0 = j0 + 64 * wg;  // the warpgroup's first key
  for (int s = 0; s < steps; ++s) {
    NextStage(s, steps, issue);
    const int st = s % kSplitStages, i0 = j0 + 64 * (s % n_q);
    const unsigned char *qs = S::Stream(sm, st, 0), *dos = S::Stream(sm, st, 1);
    // Straight-line from the first wgmma to the last wait: P's exponentials run under the dPᵀ
    // product, dS under dV's.
    float sc[8][4], dp[8][4];
    uint32_t pa[4][4], dsa[4][4];
    IssueScore(S::Fixed(sm, wg), qs, sc);
    IssueScore(S::Fixed(sm, 2 + wg), dos, dp);
    attention_mma::WgWait<1>();
    attention_mma::FenceRegs(sc);
    ProbsSplit<true>(sc, key0 + 16 * wi, i0, len, S::Lse(sm, st), b.scale_log2, pa);
    attention_mma::WgFence();
    IssueAccumulate(dv, pa, dos);
    attention_mma::WgCommit();
    attention_mma::WgWait<1>();
    attention_mma::FenceRegs(dp);
    DsSplit<true>(sc, dp, S::Delta(sm, st), dsa);
    attention_mma::WgFence();
    IssueAccumulate(dk, dsa, qs);
    attention_mma::WgCommit();
    attention_mma::WgWait<0>();
    attention_mma::FenceRegs(dk);
    attention_mma::FenceRegs(dv);
  }
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
  float dq[16][4] = {};
  const int q0 = i0 + 64 * wg, row0 = q0 + 16 * wi;  // the warpgroup's, the warp's first row
  const float* slse = S::FixedLse(sm) + 64 * wg + 16 * wi;
  const float* sdelta = S::FixedDelta(sm) + 64 * wg + 16 * wi;
  for (int s = 0; s < steps; ++s) {
    NextStage(s, steps, issue);
    const int st = s % kSplitStages, k0 = 64 * s;
    const unsigned char* ks = S::Stream(sm, st, 0);
    float sc[8][4], dp[8][4];
    uint32_t pa[4][4], dsa[4][4];
    IssueScore(S::Fixed(sm, wg), ks, sc);
    IssueScore(S::Fixed(sm, 2 + wg), S::Stream(sm, st, 1), dp);
    attention_mma::WgWait<1>();
    attention_mma::FenceRegs(sc);
    ProbsSplit<false>(sc, row0, k0, len, slse, b.scale_log2, pa);  // pa unused: P·dO is dV's
    attention_mma::WgWait<0>();
    attention_mma::FenceRegs(dp);
    DsSplit<false>(sc, dp, sdelta, dsa);
    attention_mma::WgFence();
    IssueAccumulate(dq, dsa, ks);
    attention_mma::WgCommit();
    attention_mma::WgWait<0>();
    attention_mma::FenceRegs(dq);
  }
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

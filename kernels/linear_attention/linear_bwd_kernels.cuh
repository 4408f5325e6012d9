// Internal to kernels/linear_attention (include from linear_attention_bwd.cu only): the three
// launches of the chunked backward on tensor cores. For chunk c with start state S_c, dS the
// gradient of the state after the chunk, and weighted scores P = λ^{i−j}·(do_i·v_j),
// Ps = λ^{i−j}·(q_i·k_j) for j ≤ i (0 above the diagonal):
//   (1) G_c = Σ_i (s·λ^{i+1}·q_i)ᵀ do_i                     one block per (chunk, head)
//   (2) dS walks the chunks of a sequence backwards:          one thread per (seq, head, element)
//       dS_end[last] = 0, dS_end[c−1] = λ^C·dS_end[c] + G_c, d_initial_state = λ^C·dS_end[0] + G_0
//   (3) dq = s·(λ^{i+1}·do S_cᵀ + P k), dk = s·Pᵀq + λ^{C−1−j}·v dSᵀ,
//       dv = s·Psᵀdo + λ^{C−1−j}·k dS                        one block per (chunk, head)
// Every GEMM is bf16 mma.sync with fp32 accumulation in a fixed k order; a block's result depends
// only on its chunk's rows, so neither the packing nor the launch shape can change a bit.
#pragma once

#include "kernels/core/contract.h"
#include "kernels/linear_attention/linear_bwd_mma.cuh"

namespace tandem::kernels::cuda::linear_bwd {

inline constexpr int kC = static_cast<int>(kLinearAttentionChunk);
inline constexpr int kThreads = 256;  // 8 warps
static_assert(kC == 64, "the warp layouts below tile a 64-row chunk as 4 m16 tiles");

struct ChunkItem {
  int row0;   // packed row of the chunk's first token
  int n;      // tokens in the chunk (C except a sequence's last)
  int chunk;  // global chunk index (sequence by sequence)
};

struct BwdArgs {
  int h;
  float scale;
  FloatPtr q, k, v, d_o, dq, dk, dv;
  const float* pow;        // [H, C + 1]
  const ChunkItem* items;  // [NC]
  const int* seq_chunk;    // [B + 1]
  const float* states;     // [NC, H, D, D] chunk-start states
  float* sums;             // [NC, H, D, D] G_c, from (1)
  bf16* ds;                // [NC, H, D, D] dS_end[c] from (2), rounded to bf16 as (3) uses it
  float* d_init;           // [B, H, D, D] or null
};

// Shared-memory layout (bf16): rows padded by 8 elements, so the 8 rows an ldmatrix reads sit in
// distinct 16-byte bank groups.
template <int kD>
struct Smem {
  static constexpr int kLd = kD + 8, kLdp = kC + 8;
  static constexpr int kRows = kC * kLd, kState = kD * kLd, kP = kC * kLdp;
  static constexpr size_t kSumBytes = sizeof(bf16) * 2 * kRows;
  static constexpr size_t kGradBytes = sizeof(bf16) * (4 * kRows + 2 * kState + 2 * kP);
};

// (1) G_c for one (chunk, head). A = (s·λ^{i+1}·q)ᵀ, B = do, k = the chunk's rows.
template <int kD>
__global__ void __launch_bounds__(kThreads) StateGradSumKernel(BwdArgs a) {
  using L = Smem<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* dob = qs + L::kRows;
  const ChunkItem it = a.items[blockIdx.x];
  const int head = blockIdx.y, ld = a.h * kD;
  const float* pow = a.pow + head * (kC + 1);
  for (int idx = threadIdx.x; idx < kC * kD / 8; idx += kThreads) {
    const int r = idx / (kD / 8), e = idx % (kD / 8) * 8;
    float x[8] = {};
    if (r < it.n) Load8Floats(a.q, (it.row0 + int64_t{r}) * ld + head * kD + e, x);
    const float w = __fmul_rn(a.scale, pow[r + 1]);
    *reinterpret_cast<uint4*>(qs + r * L::kLd + e) =
        uint4{PackBf16(__fmul_rn(w, x[0]), __fmul_rn(w, x[1])),
              PackBf16(__fmul_rn(w, x[2]), __fmul_rn(w, x[3])),
              PackBf16(__fmul_rn(w, x[4]), __fmul_rn(w, x[5])),
              PackBf16(__fmul_rn(w, x[6]), __fmul_rn(w, x[7]))};
  }
  StageRows<kD, kThreads>(a.d_o, it.row0, ld, head, it.n, kC, dob, L::kLd);
  __syncthreads();
  // Warps tile G [kD, kD]: kWM row tiles of 16 by kWN column ranges (some warps idle at D = 32).
  constexpr int kWM = kD / 16 < 8 ? kD / 16 : 8;
  constexpr int kWN = 8 / kWM < kD / 16 ? 8 / kWM : kD / 16;
  constexpr int kNT = kD / kWN / 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp >= kWM * kWN) return;
  const int m0 = warp % kWM * 16, n0 = warp / kWM * (kD / kWN);
  float acc[kNT][4];
  ZeroAcc(acc);
  // Rows past n are zeros: skipping their k steps changes no value.
  WarpGemm<kNT, true, true>(acc, qs, L::kLd, m0, dob, L::kLd, n0, 0, (it.n + 15) / 16 * 16);
  float* out = a.sums + (int64_t{it.chunk} * a.h + head) * kD * kD;
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = m0 + lane / 4 + 8 * half, col = n0 + 8 * nt + 2 * (lane % 4);
      *reinterpret_cast<float2*>(out + row * kD + col) =
          make_float2(acc[nt][2 * half], acc[nt][2 * half + 1]);
    }
  }
}

// (2) The reverse scan in fp32; each thread owns one element e of one (sequence, head).
template <int kD>
__global__ void __launch_bounds__(kThreads) StateGradScanKernel(BwdArgs a) {
  constexpr int kAhead = 8;  // loads in flight before the dependent chain consumes them
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h;
  const int e = blockIdx.y * kThreads + threadIdx.x;
  const float pow_c = a.pow[head * (kC + 1) + kC];
  const int first = a.seq_chunk[seq], last = a.seq_chunk[seq + 1];
  const int64_t stride = int64_t{a.h} * kD * kD;
  const float* g_in = a.sums + int64_t{head} * kD * kD + e;
  bf16* ds_out = a.ds + int64_t{head} * kD * kD + e;
  float acc = 0.0f;
  for (int c = last - 1; c >= first; c -= kAhead) {
    float g[kAhead];
#pragma unroll
    for (int i = 0; i < kAhead; ++i) g[i] = c - i >= first ? g_in[(c - i) * stride] : 0.0f;
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      if (c - i >= first) {
        ds_out[(c - i) * stride] = __float2bfloat16_rn(acc);  // dS at the end of chunk c − i
        acc = __fadd_rn(__fmul_rn(pow_c, acc), g[i]);
      }
    }
  }
  if (a.d_init != nullptr) a.d_init[(int64_t{seq} * a.h + head) * kD * kD + e] = acc;
}

// Writes rows m0 + lane/4 (+8) < n of a warp's [16, 8·kNT] tile: out = combine(row, y, x).
template <int kD, int kNT, typename Combine>
__device__ __forceinline__ void StoreTile(FloatPtr out, const ChunkItem& it, int ld, int head,
                                          int m0, int n0, const float (&y)[kNT][4],
                                          const float (&x)[kNT][4], Combine&& combine) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = m0 + lane / 4 + 8 * half;
    if (row >= it.n) continue;
    const int64_t base = (it.row0 + int64_t{row}) * ld + head * kD + n0 + 2 * (lane % 4);
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      StorePair(out, base + 8 * nt, combine(row, y[nt][2 * half], x[nt][2 * half]),
                combine(row, y[nt][2 * half + 1], x[nt][2 * half + 1]));
    }
  }
}

// P and Ps of the warp's [16, 32] tile (rows m0.., columns n0..), masked and weighted, to bf16.
template <int kD>
__device__ __forceinline__ void WeightedScores(const bf16* q, const bf16* k, const bf16* v,
                                               const bf16* dob, const float* pow, int m0, int n0,
                                               bf16* p, bf16* ps) {
  using L = Smem<kD>;
  const int lane = threadIdx.x % 32;
  float sv[4][4], sk[4][4];  // do·vᵀ and q·kᵀ
  ZeroAcc(sv);
  ZeroAcc(sk);
  if (n0 <= m0 + 15) {  // tiles wholly above the diagonal stay zero
    WarpGemm<4, false, false>(sv, dob, L::kLd, m0, v, L::kLd, n0, 0, kD);
    WarpGemm<4, false, false>(sk, q, L::kLd, m0, k, L::kLd, n0, 0, kD);
  }
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = m0 + lane / 4 + 8 * half, j = n0 + 8 * nt + 2 * (lane % 4);
      float w[2][2];
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const bool on = j + c <= i;
        w[0][c] = on ? __fmul_rn(pow[on ? i - j - c : 0], sv[nt][2 * half + c]) : 0.0f;
        w[1][c] = on ? __fmul_rn(pow[on ? i - j - c : 0], sk[nt][2 * half + c]) : 0.0f;
      }
      *reinterpret_cast<__nv_bfloat162*>(p + i * L::kLdp + j) =
          __floats2bfloat162_rn(w[0][0], w[0][1]);
      *reinterpret_cast<__nv_bfloat162*>(ps + i * L::kLdp + j) =
          __floats2bfloat162_rn(w[1][0], w[1][1]);
    }
  }
}

// (3) dq, dk, dv of one (chunk, head). Warp w owns rows 16·(w % 4).. and half of the columns.
template <int kD>
__global__ void __launch_bounds__(kThreads) ChunkGradKernel(BwdArgs a) {
  using L = Smem<kD>;
  constexpr int kNT = kD / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* q = reinterpret_cast<bf16*>(smem_raw);
  bf16 *k = q + L::kRows, *v = k + L::kRows, *dob = v + L::kRows;
  bf16 *st = dob + L::kRows, *dst = st + L::kState;
  bf16 *p = dst + L::kState, *ps = p + L::kP;
  const ChunkItem it = a.items[blockIdx.x];
  const int head = blockIdx.y, ld = a.h * kD;
  const float* pow = a.pow + head * (kC + 1);
  const int64_t state_off = (int64_t{it.chunk} * a.h + head) * kD * kD;
  StageRows<kD, kThreads>(a.q, it.row0, ld, head, it.n, kC, q, L::kLd);
  StageRows<kD, kThreads>(a.k, it.row0, ld, head, it.n, kC, k, L::kLd);
  StageRows<kD, kThreads>(a.v, it.row0, ld, head, it.n, kC, v, L::kLd);
  StageRows<kD, kThreads>(a.d_o, it.row0, ld, head, it.n, kC, dob, L::kLd);
  StageState<kD, kThreads>(FloatPtr{const_cast<float*>(a.states + state_off), false}, st, L::kLd);
  StageState<kD, kThreads>(FloatPtr{a.ds + state_off, true}, dst, L::kLd);
  __syncthreads();
  const int warp = threadIdx.x / 32;
  const int m0 = warp % 4 * 16;
  WeightedScores<kD>(q, k, v, dob, pow, m0, warp / 4 * 32, p, ps);
  __syncthreads();
  const int n0 = warp / 4 * (kD / 2);
  const float s = a.scale;
  float y[kNT][4], x[kNT][4];
  // dq_i = s·(λ^{i+1}·(do_i S_cᵀ) + Σ_{j≤i} P[i][j]·k_j)
  ZeroAcc(y);
  ZeroAcc(x);
  WarpGemm<kNT, false, true>(y, p, L::kLdp, m0, k, L::kLd, n0, 0, m0 + 16);
  WarpGemm<kNT, false, false>(x, dob, L::kLd, m0, st, L::kLd, n0, 0, kD);
  StoreTile<kD>(a.dq, it, ld, head, m0, n0, y, x, [&](int i, float yv, float xv) {
    return __fmul_rn(s, __fadd_rn(__fmul_rn(pow[i + 1], xv), yv));
  });
  // dk_j = s·Σ_{i≥j} P[i][j]·q_i + λ^{C−1−j}·(v_j dSᵀ)
  ZeroAcc(y);
  ZeroAcc(x);
  WarpGemm<kNT, true, true>(y, p, L::kLdp, m0, q, L::kLd, n0, m0, kC);
  WarpGemm<kNT, false, false>(x, v, L::kLd, m0, dst, L::kLd, n0, 0, kD);
  const auto anti_causal = [&](int j, float yv, float xv) {
    return __fadd_rn(__fmul_rn(s, yv), __fmul_rn(pow[kC - 1 - j], xv));
  };
  StoreTile<kD>(a.dk, it, ld, head, m0, n0, y, x, anti_causal);
  // dv_j = s·Σ_{i≥j} Ps[i][j]·do_i + λ^{C−1−j}·(k_j dS)
  ZeroAcc(y);
  ZeroAcc(x);
  WarpGemm<kNT, true, true>(y, ps, L::kLdp, m0, dob, L::kLd, n0, m0, kC);
  WarpGemm<kNT, false, true>(x, k, L::kLd, m0, dst, L::kLd, n0, 0, kD);
  StoreTile<kD>(a.dv, it, ld, head, m0, n0, y, x, anti_causal);
}

}  // namespace tandem::kernels::cuda::linear_bwd

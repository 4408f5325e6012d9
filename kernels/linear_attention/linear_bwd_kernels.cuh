// Internal to kernels/linear_attention (include from linear_attention_bwd.cu only): the two
// launches of the chunked backward on tensor cores. For chunk c with start state S_c, dS the
// gradient of the state after the chunk, and weighted scores P = λ^{i−j}·(do_i·v_j),
// Ps = λ^{i−j}·(q_i·k_j) for j ≤ i (0 above the diagonal):
//   (1) G_c = Σ_i (s·λ^{i+1}·q_i)ᵀ do_i and the reverse scan dS_end[last] = 0,
//       dS_end[c−1] = λ^C·dS_end[c] + G_c, d_initial_state = λ^C·dS_end[0] + G_0, fused: one
//       block per (sequence, head, 32x32 tile of the state) walks the chunks backwards, so G never
//       reaches memory; q/do slices stream in by cp.async, kScanGroup chunks per pipeline stage
//   (2) dq = s·(λ^{i+1}·do S_cᵀ + P k), dk = s·Pᵀq + λ^{C−1−j}·v dSᵀ,
//       dv = s·Psᵀdo + λ^{C−1−j}·k dS                        one block per (chunk, head)
// Every GEMM is bf16 mma.sync with fp32 accumulation in a fixed k order; a block's result depends
// only on its chunk's rows (or its sequence's), so neither the packing nor the launch shape can
// change a bit.
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
  bf16* ds;                // [NC, H, D, D] dS_end[c] from (1), rounded to bf16 as (2) uses it
  float* d_init;           // [B, H, D, D] or null
};

// Shared-memory layout of (2) (bf16): rows padded by 8 elements, so the 8 rows an ldmatrix reads
// sit in distinct 16-byte bank groups.
template <int kD>
struct Smem {
  static constexpr int kLd = kD + 8, kLdp = kC + 8;
  static constexpr int kRows = kC * kLd, kState = kD * kLd, kP = kC * kLdp;
  static constexpr size_t kGradBytes = sizeof(bf16) * (4 * kRows + 2 * kState + 2 * kP);
};

// (1)'s layout: per stage kScanGroup chunks x (q slice, do slice), each [kC, kScanTile] bf16,
// unpadded; the four 16-byte units of row i are XOR-swizzled by (i/2)%4 so that the 8 rows an
// ldmatrix reads hit distinct bank groups. Then the weights s·λ^{i+1}, fp32.
inline constexpr int kScanThreads = 128, kScanTile = 32, kScanGroup = 4, kScanStages = 3;
inline constexpr int kSlice = kC * kScanTile, kStageElems = kScanGroup * 2 * kSlice;
inline constexpr size_t kScanBytes = sizeof(bf16) * kScanStages * kStageElems + sizeof(float) * kC;

__device__ __forceinline__ int Swz(int i, int unit) {
  return i * kScanTile + ((unit ^ ((i >> 1) & 3)) << 3);
}

// Stages chunks c_top, c_top − 1, .. (kScanGroup of them; those before `first` as zeros): the q
// columns a0.. and do columns b0.. of the tile. bf16 sources go raw by cp.async (q is weighted in
// the fragments); f32 sources are weighted and rounded here, as the bf16 path does it.
template <int kD>
__device__ void StageScanGroup(const BwdArgs& a, int head, int a0, int b0, int first, int c_top,
                               bf16* stage, const float* w) {
  const int64_t ld = int64_t{a.h} * kD;
  for (int idx = threadIdx.x; idx < kScanGroup * 2 * kC * 4; idx += kScanThreads) {
    const int unit = idx & 3, i = (idx >> 2) & (kC - 1), is_do = (idx >> 8) & 1, j = idx >> 9;
    const int c = c_top - j;
    const int n = c >= first ? a.items[c].n : 0;
    const bool valid = i < n;
    const FloatPtr src = is_do ? a.d_o : a.q;
    const int64_t off =
        valid ? (a.items[c].row0 + int64_t{i}) * ld + head * kD + (is_do ? b0 : a0) + unit * 8 : 0;
    bf16* dst = stage + (2 * j + is_do) * kSlice + Swz(i, unit);
    if (src.bf16) {
      CpAsync16(dst, static_cast<const bf16*>(src.p) + off, valid);
      continue;
    }
    float x[8] = {};
    if (valid) Load8Floats(src, off, x);
    const float s = w[i];
    uint32_t u[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      u[e] = is_do ? PackBf16(x[2 * e], x[2 * e + 1])
                   : PackBf16(__fmul_rn(s, x[2 * e]), __fmul_rn(s, x[2 * e + 1]));
    }
    *reinterpret_cast<uint4*>(dst) = uint4{u[0], u[1], u[2], u[3]};
  }
}

// G of the group's chunks for the warp's [16, 16] sub-tile (rows m0.., columns n0.. of the block's
// tile): g[j] += Σ_{i < kend[j]} (w_i·q_i)ᵀ do_i, i ascending in steps of 16 (rows past a chunk's
// n are zeros, so skipping their steps changes no value).
__device__ __forceinline__ void GroupStateGrads(const bf16* stage, const float* w, bool weigh_q,
                                                int m0, int n0, const int (&kend)[kScanGroup],
                                                float (&g)[kScanGroup][2][4]) {
  const int lane = threadIdx.x % 32, quad = lane >> 3, r = lane & 7, t = lane & 3;
#pragma unroll
  for (int k = 0; k < kC; k += 16) {
#pragma unroll
    for (int j = 0; j < kScanGroup; ++j) {
      if (k >= kend[j]) continue;
      const bf16* qs = stage + 2 * j * kSlice;
      uint32_t af[4], bf[4];
      // A = qᵀ (stored [i][a]); B = do (stored [i][b]): both by ldmatrix.trans.
      LdMatrixX4<true>(af, qs + Swz(k + (quad >> 1) * 8 + r, (m0 >> 3) + (quad & 1)));
      LdMatrixX4<true>(bf, qs + kSlice + Swz(k + (quad & 1) * 8 + r, (n0 >> 3) + (quad >> 1)));
      if (weigh_q) {  // register e holds k index k + 2t + 8·(e/2) and the next one
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = k + 2 * t + 8 * (e >> 1);
          const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&af[e]));
          af[e] = PackBf16(__fmul_rn(w[i], f.x), __fmul_rn(w[i + 1], f.y));
        }
      }
      Mma(g[j][0], af, bf[0], bf[1]);
      Mma(g[j][1], af, bf[2], bf[3]);
    }
  }
}

// Element e of the warp's accumulator tile nt: row m0 + lane/4 + 8·(e/2), column
// n0 + 8·nt + 2·(lane%4) + e%2 (within the block's tile at a0, b0).
template <int kD>
__device__ __forceinline__ void StoreDsTile(bf16* out, int row0, int col0,
                                            const float (&acc)[2][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + lane / 4 + 8 * half, col = col0 + 8 * nt + 2 * (lane % 4);
      *reinterpret_cast<__nv_bfloat162*>(out + row * kD + col) =
          __floats2bfloat162_rn(acc[nt][2 * half], acc[nt][2 * half + 1]);
    }
  }
}

// (1) One block per (sequence, head, tile); 4 warps own 16x16 sub-tiles, each its own fp32 scan.
template <int kD>
__global__ void __launch_bounds__(kScanThreads, 2) StateGradScanKernel(BwdArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* stages = reinterpret_cast<bf16*>(smem_raw);
  float* w = reinterpret_cast<float*>(stages + kScanStages * kStageElems);
  constexpr int kTiles = kD / kScanTile;
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h;
  const int a0 = blockIdx.y / kTiles * kScanTile, b0 = blockIdx.y % kTiles * kScanTile;
  const float* pow = a.pow + head * (kC + 1);
  for (int i = threadIdx.x; i < kC; i += kScanThreads) w[i] = __fmul_rn(a.scale, pow[i + 1]);
  __syncthreads();
  const float pow_c = pow[kC];
  const int first = a.seq_chunk[seq], last = a.seq_chunk[seq + 1];
  const int groups = (last - first + kScanGroup - 1) / kScanGroup;
#pragma unroll
  for (int s = 0; s < kScanStages - 1; ++s) {
    if (s < groups) {
      StageScanGroup<kD>(a, head, a0, b0, first, last - 1 - s * kScanGroup,
                         stages + s * kStageElems, w);
    }
    CpAsyncCommit();
  }
  const int warp = threadIdx.x / 32;
  const int m0 = warp % 2 * 16, n0 = warp / 2 * 16;
  const int64_t head_off = int64_t{head} * kD * kD + (a0 + m0) * kD + b0 + n0;
  float acc[2][4];
  ZeroAcc(acc);
  for (int gi = 0; gi < groups; ++gi) {
    CpAsyncWait<kScanStages - 2>();
    __syncthreads();  // the group has landed; every warp is done with the stage refilled next
    const int next = gi + kScanStages - 1;
    if (next < groups) {
      StageScanGroup<kD>(a, head, a0, b0, first, last - 1 - next * kScanGroup,
                         stages + next % kScanStages * kStageElems, w);
    }
    CpAsyncCommit();
    const int c_top = last - 1 - gi * kScanGroup;
    int kend[kScanGroup];
#pragma unroll
    for (int j = 0; j < kScanGroup; ++j) {
      kend[j] = c_top - j >= first ? (a.items[c_top - j].n + 15) / 16 * 16 : 0;
    }
    float g[kScanGroup][2][4];
#pragma unroll
    for (int j = 0; j < kScanGroup; ++j) ZeroAcc(g[j]);
    GroupStateGrads(stages + gi % kScanStages * kStageElems, w, a.q.bf16, m0, n0, kend, g);
#pragma unroll
    for (int j = 0; j < kScanGroup; ++j) {
      const int c = c_top - j;
      if (c < first) break;
      StoreDsTile<kD>(a.ds + int64_t{c} * a.h * kD * kD + head_off, 0, 0, acc);  // dS_end[c]
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e)
          acc[nt][e] = __fadd_rn(__fmul_rn(pow_c, acc[nt][e]), g[j][nt][e]);
      }
    }
  }
  if (a.d_init == nullptr) return;
  float* out = a.d_init + (int64_t{seq} * a.h) * kD * kD + head_off;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = lane / 4 + 8 * half, col = 8 * nt + 2 * (lane % 4);
      *reinterpret_cast<float2*>(out + row * kD + col) =
          make_float2(acc[nt][2 * half], acc[nt][2 * half + 1]);
    }
  }
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
__global__ void __launch_bounds__(kThreads, kD == 128 ? 1 : 2) ChunkGradKernel(BwdArgs a) {
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
  // Every load is in flight before the first wait: rows and dS by cp.async, the f32 start state
  // into registers, stored as bf16 only after the scores (which do not need it) are computed.
  StageRowsAsync<kD, kThreads>(a.q, it.row0, ld, head, it.n, kC, q, L::kLd);
  StageRowsAsync<kD, kThreads>(a.k, it.row0, ld, head, it.n, kC, k, L::kLd);
  StageRowsAsync<kD, kThreads>(a.v, it.row0, ld, head, it.n, kC, v, L::kLd);
  StageRowsAsync<kD, kThreads>(a.d_o, it.row0, ld, head, it.n, kC, dob, L::kLd);
  StageStateAsync<kD, kThreads>(a.ds + state_off, dst, L::kLd);
  CpAsyncCommit();
  StateInRegs<kD, kThreads> start_state;
  start_state.Load(a.states + state_off);
  CpAsyncWait<0>();
  __syncthreads();
  const int warp = threadIdx.x / 32;
  const int m0 = warp % 4 * 16;
  WeightedScores<kD>(q, k, v, dob, pow, m0, warp / 4 * 32, p, ps);
  start_state.Store(st, L::kLd);
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

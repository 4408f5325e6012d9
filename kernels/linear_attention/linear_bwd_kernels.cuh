// Internal to kernels/linear_attention (include from linear_attention_bwd.cu only): the two
// launches of the chunked backward on tensor cores. For chunk c with start state S_c, dS the
// gradient of the state after the chunk, and weighted scores P = λ^{i−j}·(do_i·v_j),
// Ps = λ^{i−j}·(q_i·k_j) for j ≤ i (0 above the diagonal):
//   (1) G_c = Σ_i (s·λ^{i+1}·q_i)ᵀ do_i and the reverse scan dS_end[last] = 0,
//       dS_end[c−1] = λ^C·dS_end[c] + G_c, d_initial_state = λ^C·dS_end[0] + G_0, fused: one
//       block per (sequence, head, 32x32 tile of the state) walks the chunks backwards, so G never
//       reaches memory; q/do slices stream in by cp.async, kScanGroup chunks per pipeline stage;
//       per stage the warps form the chunks' G side by side, then each thread scans 4 elements
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
  const float* pow;         // [H, C + 1]
  const ChunkItem* items;   // [NC]
  const int* seq_chunk;     // [B + 1]
  const float* states;      // [NC, H, D, D] chunk-start states (f32), or null
  const bf16* states_bf16;  // the same rounded to bf16 (what (2) multiplies with), or null
  bf16* ds;                 // [NC, H, D, D] dS_end[c] from (1), rounded to bf16 as (2) uses it
  float* d_init;            // [B, H, D, D] or null
};

// Shared-memory layout of (2) (bf16, unpadded tiles swizzled by SwzOff): q, k, v, do [kC, kD];
// one [kD, kD] state buffer (S_c for dq's do·S_cᵀ, then dS for dk and dv); P and Ps [kC, kC].
// 112 KB at D = 128, so two blocks share an SM and one's loads overlap the other's MMAs.
template <int kD>
struct Smem {
  static constexpr int kRows = kC * kD, kState = kD * kD, kP = kC * kC;
  static constexpr size_t kGradBytes = sizeof(bf16) * (4 * kRows + kState + 2 * kP);
};

// (1)'s layout: per stage kScanGroup chunks x (q slice, do slice), each [kC, kScanTile] bf16
// swizzled by SwzOff; then G of the group's chunks, fp32 [kScanTile, kScanTile] each (GOff);
// then the weights s·λ^{i+1}, fp32. 112 KB: two blocks per SM.
inline constexpr int kScanThreads = 256, kScanTile = 32, kScanGroup = 4, kScanStages = 3;
inline constexpr int kSlice = kC * kScanTile, kStageElems = kScanGroup * 2 * kSlice;
inline constexpr int kGElems = kScanTile * kScanTile;
inline constexpr size_t kScanBytes =
    sizeof(bf16) * kScanStages * kStageElems + sizeof(float) * (kScanGroup * kGElems + kC);
static_assert(kScanThreads == 2 * kScanGroup * 32, "a warp per (chunk, 16-row half of the tile)");
static_assert(kScanThreads * 4 == kGElems, "the scan phase: 4 state elements per thread");
static_assert(kScanThreads * 8 == kC * kScanTile, "staging: one 16-byte unit per (thread, slice)");

// fp32 G tile offset: the 4-float units of row r XOR-swizzled by 2·(r%4), so that both the
// MMA-layout float2 writes (a half-warp: rows r..r+3, 16 columns) and the row-wise float4 reads
// (8 lanes: one row) are free of bank conflicts.
__device__ __forceinline__ int GOff(int row, int col) {
  return row * kScanTile + ((((col >> 2) ^ ((row & 3) << 1))) << 2) + (col & 3);
}

// A sequence's chunks [first, last) cover its rows [row0, end), kC rows each but the last.
struct SeqSpan {
  int first, row0, end;
  __device__ __forceinline__ int ChunkRow0(int c) const { return row0 + (c - first) * kC; }
  __device__ __forceinline__ int ChunkRows(int c) const { return min(kC, end - ChunkRow0(c)); }
};

// Stages chunks c_top, c_top − 1, .. (kScanGroup of them; those before `first` as zeros): the q
// columns a0.. and do columns b0.. of the tile; thread x moves row x/4, unit x%4 of every slice.
// bf16 sources go raw by cp.async (q is weighted in the fragments); f32 sources are weighted and
// rounded here, as the bf16 path does it.
template <int kD>
__device__ void StageScanGroup(const BwdArgs& a, const SeqSpan& span, int head, int a0, int b0,
                               int c_top, bf16* stage, const float* w) {
  const int64_t ld = int64_t{a.h} * kD;
  const int i = threadIdx.x >> 2, unit = threadIdx.x & 3;
#pragma unroll
  for (int j = 0; j < kScanGroup; ++j) {
    const int c = c_top - j;
    const bool valid = c >= span.first && i < span.ChunkRows(c);
    const int64_t row_off =
        valid ? (span.ChunkRow0(c) + int64_t{i}) * ld + head * kD + unit * 8 : 0;
#pragma unroll
    for (int is_do = 0; is_do < 2; ++is_do) {
      const FloatPtr src = is_do ? a.d_o : a.q;
      const int64_t off = valid ? row_off + (is_do ? b0 : a0) : 0;
      bf16* dst = stage + (2 * j + is_do) * kSlice + SwzOff<kScanTile>(i, unit * 8);
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
}

// G of one chunk for the warp's [16, 32] sub-tile (rows m0.. of the block's tile): g[nt] +=
// Σ_{i < kend} (w_i·q_i)ᵀ do_i, i ascending in steps of 16 (rows past a chunk's n are zeros, so
// skipping their steps changes no value). A = qᵀ and B = do are both read by ldmatrix.trans.
__device__ __forceinline__ void ChunkStateGrad(const bf16* qs, const float* w, bool weigh_q, int m0,
                                               int kend, float (&g)[4][4]) {
  const int t = threadIdx.x & 3;
#pragma unroll
  for (int k = 0; k < kC; k += 16) {
    if (k >= kend) break;
    uint32_t af[4];
    LoadA<true, kScanTile>(af, qs, m0, k);
    if (weigh_q) {  // register e holds k index k + 2t + 8·(e/2) and the next one
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = k + 2 * t + 8 * (e >> 1);
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&af[e]));
        af[e] = PackBf16(__fmul_rn(w[i], f.x), __fmul_rn(w[i + 1], f.y));
      }
    }
#pragma unroll
    for (int n0 = 0; n0 < kScanTile; n0 += 16) {
      uint32_t bf[4];
      LoadB<true, kScanTile>(bf, qs + kSlice, n0, k);
      Mma(g[n0 / 8], af, bf[0], bf[1]);
      Mma(g[n0 / 8 + 1], af, bf[2], bf[3]);
    }
  }
}

// (1) One block per (sequence, head, tile). Per group of kScanGroup chunks: warp w forms G of
// chunk c_top − w/2 for rows 16·(w%2).. of the tile into shared memory; then thread x walks the
// group's chunks in order for its 4 elements (row x/8, columns 4·(x%8)..) of the fp32 scan.
template <int kD>
__global__ void __launch_bounds__(kScanThreads, 2) StateGradScanKernel(BwdArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* stages = reinterpret_cast<bf16*>(smem_raw);
  float* gs = reinterpret_cast<float*>(stages + kScanStages * kStageElems);
  float* w = gs + kScanGroup * kGElems;
  constexpr int kTiles = kD / kScanTile;
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h;
  const int a0 = blockIdx.y / kTiles * kScanTile, b0 = blockIdx.y % kTiles * kScanTile;
  const float* pow = a.pow + head * (kC + 1);
  for (int i = threadIdx.x; i < kC; i += kScanThreads) w[i] = __fmul_rn(a.scale, pow[i + 1]);
  const float pow_c = pow[kC];
  const int first = a.seq_chunk[seq], last = a.seq_chunk[seq + 1];
  SeqSpan span{first, 0, 0};
  if (last > first)
    span.row0 = a.items[first].row0, span.end = a.items[last - 1].row0 + a.items[last - 1].n;
  __syncthreads();
  const int groups = (last - first + kScanGroup - 1) / kScanGroup;
#pragma unroll
  for (int s = 0; s < kScanStages - 1; ++s) {
    if (s < groups) {
      StageScanGroup<kD>(a, span, head, a0, b0, last - 1 - s * kScanGroup, stages + s * kStageElems,
                         w);
    }
    CpAsyncCommit();
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wj = warp >> 1, m0 = (warp & 1) * 16;
  const int er = threadIdx.x >> 3, ec = (threadIdx.x & 7) * 4;  // the thread's scan elements
  const int64_t tile_off = int64_t{head} * kD * kD + (a0 + er) * kD + b0 + ec;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int gi = 0; gi < groups; ++gi) {
    CpAsyncWait<kScanStages - 2>();
    __syncthreads();  // the group has landed; every thread is done with the G tiles and with
                      // the stage refilled next
    const int next = gi + kScanStages - 1;
    if (next < groups) {
      StageScanGroup<kD>(a, span, head, a0, b0, last - 1 - next * kScanGroup,
                         stages + next % kScanStages * kStageElems, w);
    }
    CpAsyncCommit();
    const int c_top = last - 1 - gi * kScanGroup;
    if (c_top - wj >= first) {
      float g[4][4];
      ZeroAcc(g);
      const int kend = (span.ChunkRows(c_top - wj) + 15) / 16 * 16;
      ChunkStateGrad(stages + gi % kScanStages * kStageElems + 2 * wj * kSlice, w, a.q.bf16, m0,
                     kend, g);
      float* gt = gs + wj * kGElems;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = m0 + lane / 4 + 8 * half, col = 8 * nt + 2 * (lane % 4);
          *reinterpret_cast<float2*>(gt + GOff(row, col)) =
              make_float2(g[nt][2 * half], g[nt][2 * half + 1]);
        }
      }
    }
    __syncthreads();  // the group's G tiles are complete
#pragma unroll
    for (int j = 0; j < kScanGroup; ++j) {
      const int c = c_top - j;
      if (c < first) break;
      *reinterpret_cast<uint2*>(a.ds + int64_t{c} * a.h * kD * kD + tile_off) =  // dS_end[c]
          uint2{PackBf16(acc[0], acc[1]), PackBf16(acc[2], acc[3])};
      const float4 gv = *reinterpret_cast<const float4*>(gs + j * kGElems + GOff(er, ec));
      acc[0] = __fadd_rn(__fmul_rn(pow_c, acc[0]), gv.x);
      acc[1] = __fadd_rn(__fmul_rn(pow_c, acc[1]), gv.y);
      acc[2] = __fadd_rn(__fmul_rn(pow_c, acc[2]), gv.z);
      acc[3] = __fadd_rn(__fmul_rn(pow_c, acc[3]), gv.w);
    }
  }
  if (a.d_init == nullptr) return;
  *reinterpret_cast<float4*>(a.d_init + int64_t{seq} * a.h * kD * kD + tile_off) =
      make_float4(acc[0], acc[1], acc[2], acc[3]);
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
  const int lane = threadIdx.x % 32;
  float sv[4][4], sk[4][4];  // do·vᵀ and q·kᵀ
  ZeroAcc(sv);
  ZeroAcc(sk);
  if (n0 <= m0 + 15) {  // tiles wholly above the diagonal stay zero
    WarpGemm<4, false, false, kD, kD>(sv, dob, m0, v, n0, 0, kD);
    WarpGemm<4, false, false, kD, kD>(sk, q, m0, k, n0, 0, kD);
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
      *reinterpret_cast<__nv_bfloat162*>(p + SwzOff<kC>(i, j)) =
          __floats2bfloat162_rn(w[0][0], w[0][1]);
      *reinterpret_cast<__nv_bfloat162*>(ps + SwzOff<kC>(i, j)) =
          __floats2bfloat162_rn(w[1][0], w[1][1]);
    }
  }
}

// (2) dq, dk, dv of one (chunk, head). Warp w owns rows 16·(w % 4).. and half of the columns.
// dq's state term do·S_cᵀ comes first, so that dS can then replace S_c in the state buffer while
// the scores are formed.
template <int kD>
__global__ void __launch_bounds__(kThreads, 2) ChunkGradKernel(BwdArgs a) {
  using L = Smem<kD>;
  constexpr int kNT = kD / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* q = reinterpret_cast<bf16*>(smem_raw);
  bf16 *k = q + L::kRows, *v = k + L::kRows, *dob = v + L::kRows;
  bf16 *st = dob + L::kRows, *p = st + L::kState, *ps = p + L::kP;
  const ChunkItem it = a.items[blockIdx.x];
  const int head = blockIdx.y, ld = a.h * kD;
  const float* pow = a.pow + head * (kC + 1);
  const int64_t state_off = (int64_t{it.chunk} * a.h + head) * kD * kD;
  StageRowsAsync<kD, kThreads>(a.q, it.row0, ld, head, it.n, kC, q);
  StageRowsAsync<kD, kThreads>(a.k, it.row0, ld, head, it.n, kC, k);
  StageRowsAsync<kD, kThreads>(a.v, it.row0, ld, head, it.n, kC, v);
  StageRowsAsync<kD, kThreads>(a.d_o, it.row0, ld, head, it.n, kC, dob);
  if (a.states_bf16 != nullptr) StageStateAsync<kD, kThreads>(a.states_bf16 + state_off, st);
  CpAsyncCommit();
  if (a.states_bf16 == nullptr) {  // the f32 start state, in flight together with the rows
    StateInRegs<kD, kThreads> start_state;
    start_state.Load(a.states + state_off);
    start_state.Store(st);
  }
  CpAsyncWait<0>();
  __syncthreads();
  const int warp = threadIdx.x / 32;
  const int m0 = warp % 4 * 16, n0 = warp / 4 * (kD / 2);
  const float s = a.scale;
  float y[kNT][4], x[kNT][4];
  ZeroAcc(x);
  WarpGemm<kNT, false, false, kD, kD>(x, dob, m0, st, n0, 0, kD);  // do_i S_cᵀ
  __syncthreads();                                                 // every warp is done with S_c
  StageStateAsync<kD, kThreads>(a.ds + state_off, st);
  CpAsyncCommit();
  WeightedScores<kD>(q, k, v, dob, pow, m0, warp / 4 * 32, p, ps);
  __syncthreads();
  // dq_i = s·(λ^{i+1}·(do_i S_cᵀ) + Σ_{j≤i} P[i][j]·k_j)
  ZeroAcc(y);
  WarpGemm<kNT, false, true, kC, kD>(y, p, m0, k, n0, 0, m0 + 16);
  StoreTile<kD>(a.dq, it, ld, head, m0, n0, y, x, [&](int i, float yv, float xv) {
    return __fmul_rn(s, __fadd_rn(__fmul_rn(pow[i + 1], xv), yv));
  });
  CpAsyncWait<0>();
  __syncthreads();  // dS has landed
  // dk_j = s·Σ_{i≥j} P[i][j]·q_i + λ^{C−1−j}·(v_j dSᵀ)
  ZeroAcc(y);
  ZeroAcc(x);
  WarpGemm<kNT, true, true, kC, kD>(y, p, m0, q, n0, m0, kC);
  WarpGemm<kNT, false, false, kD, kD>(x, v, m0, st, n0, 0, kD);
  const auto anti_causal = [&](int j, float yv, float xv) {
    return __fadd_rn(__fmul_rn(s, yv), __fmul_rn(pow[kC - 1 - j], xv));
  };
  StoreTile<kD>(a.dk, it, ld, head, m0, n0, y, x, anti_causal);
  // dv_j = s·Σ_{i≥j} Ps[i][j]·do_i + λ^{C−1−j}·(k_j dS)
  ZeroAcc(y);
  ZeroAcc(x);
  WarpGemm<kNT, true, true, kC, kD>(y, ps, m0, dob, n0, m0, kC);
  WarpGemm<kNT, false, true, kD, kD>(x, k, m0, st, n0, 0, kD);
  StoreTile<kD>(a.dv, it, ld, head, m0, n0, y, x, anti_causal);
}

}  // namespace tandem::kernels::cuda::linear_bwd

// Internal to kernels/linear_attention (include from .cu files only): the device pieces of the
// chunked linear attention (contract rule 3), each written once and called by the chunked forward
// kernels and by the decode kernel alike: the score of (row r, key j), the inter term of rows
// against the chunk-start state, one output element (intra term + combination), the boundary
// accumulation Σ_j (λ^{C−1−j} k_j)ᵀ v_j and the state update. Every element is one fp32 FMA chain
// over an ascending index started at +0, written with explicit intrinsics (and the file compiled
// with --fmad=false), so which rows or elements a thread handles never changes a bit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/contract.h"

namespace tandem::kernels::cuda::linear {

inline constexpr int kC = static_cast<int>(kLinearAttentionChunk);
inline constexpr int kThreads = 256;

// One chunk of the packed input.
struct ChunkItem {
  int row0;   // packed row of the chunk's first token
  int n;      // tokens in the chunk (C except a sequence's last)
  int chunk;  // global chunk index (sequence by sequence)
};

// Shared memory of one (chunk, head) block: qT [kD, kC] (q transposed: row r of q is column r),
// k [kC, kD + 1] (k, or λ-weighted k for the boundary), v [kC, kD], w [kC, kC + 1] (weighted
// scores λ^{r−j}·(q_r·k_j)).
template <int kD>
struct ChunkSmem {
  static constexpr int kLdk = kD + 1, kLdw = kC + 1;
  static constexpr size_t kBytes = sizeof(float) * (kD * kC + kC * kLdk + kC * kD + kC * kLdw);
  float *qt, *k, *v, *w;
  __device__ static ChunkSmem Carve(float* base) {
    ChunkSmem s;
    s.qt = base;
    s.k = s.qt + kD * kC;
    s.v = s.k + kC * kLdk;
    s.w = s.v + kC * kD;
    return s;
  }
};

// w[r][j] = λ^{r−j} · Σ_d q_r[d]·k_j[d]  (d ascending).
template <int kD>
__device__ __forceinline__ void WeightedScore(const ChunkSmem<kD>& s, const float* pow, int r,
                                              int j) {
  float acc = 0.0f;
  for (int d = 0; d < kD; ++d)
    acc = __fmaf_rn(s.qt[d * kC + r], s.k[j * ChunkSmem<kD>::kLdk + d], acc);
  s.w[r * ChunkSmem<kD>::kLdw + j] = __fmul_rn(pow[r - j], acc);
}

// inter[rr] = Σ_a q_{r0+rr}[a] · state[a][b]  (a ascending) for kRows rows; state [kD, kD].
template <int kD, int kRows>
__device__ __forceinline__ void InterRows(const ChunkSmem<kD>& s, int r0, const float* state, int b,
                                          float (&inter)[kRows]) {
#pragma unroll
  for (int rr = 0; rr < kRows; ++rr) inter[rr] = 0.0f;
  for (int a = 0; a < kD; ++a) {
    const float sab = state[a * kD + b];
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr)
      inter[rr] = __fmaf_rn(s.qt[a * kC + r0 + rr], sab, inter[rr]);
  }
}

// o_r[b] = scale · (λ^{r+1} · inter + Σ_{j=0..r} w[r][j] · v_j[b])  (j ascending).
template <int kD>
__device__ __forceinline__ float OutputElement(const ChunkSmem<kD>& s, const float* pow,
                                               float scale, int r, int b, float inter) {
  float intra = 0.0f;
  for (int j = 0; j <= r; ++j) {
    intra = __fmaf_rn(s.w[r * ChunkSmem<kD>::kLdw + j], s.v[j * kD + b], intra);
  }
  return __fmul_rn(scale, __fadd_rn(__fmul_rn(pow[r + 1], inter), intra));
}

// The boundary sum Σ_{j=0..C−1} kw_j[a] · v_j[b] (j ascending; s.k holds kw = λ^{C−1−j}·k_j)
// for this thread's kD·kD / kThreads elements, handed to emit(a, b, value).
template <int kD, typename Emit>
__device__ __forceinline__ void BoundarySum(const ChunkSmem<kD>& s, Emit&& emit) {
  constexpr int kGroups = kThreads / kD, kA = kD / kGroups;
  static_assert(kThreads % kD == 0 && kD % kGroups == 0, "whole element groups per thread");
  const int b = threadIdx.x % kD, a0 = threadIdx.x / kD * kA;
  float acc[kA];
#pragma unroll
  for (int i = 0; i < kA; ++i) acc[i] = 0.0f;
  for (int j = 0; j < kC; ++j) {
    const float vb = s.v[j * kD + b];
#pragma unroll
    for (int i = 0; i < kA; ++i)
      acc[i] = __fmaf_rn(s.k[j * ChunkSmem<kD>::kLdk + a0 + i], vb, acc[i]);
  }
#pragma unroll
  for (int i = 0; i < kA; ++i) emit(a0 + i, b, acc[i]);
}

// S_{c0+C}[e] = λ^C · S_c0[e] + boundary_sum[e].
__device__ __forceinline__ float NextState(float pow_c, float state, float boundary_sum) {
  return __fadd_rn(__fmul_rn(pow_c, state), boundary_sum);
}

// A decode step's open_len [B] i32 holds the open chunk's length in its low 16 bits; during the
// step the high bits count the sequence's head blocks that are done reading it. Every block reads
// the length (OpenLenOf) before it counts itself in (call after a barrier that follows the read, on
// one thread), and the last of the h blocks writes the next length with the count cleared, so the
// step advances open_len in its own launch and leaves it as 0 ≤ open_len < C between steps.
__device__ __forceinline__ int OpenLenOf(const int32_t* open_len) { return *open_len & 0xffff; }
__device__ __forceinline__ void CountInAndAdvance(int32_t* open_len, int h, int i) {
  const int32_t before = atomicAdd(open_len, int32_t{1} << 16);
  if ((before >> 16) == h - 1) atomicExch(open_len, (i + 1) % kC);
}

}  // namespace tandem::kernels::cuda::linear

// Internal to kernels/linear_attention (include from .cu files only): the tensor-core pieces of the
// chunked linear attention for bf16 q, k, v (contract rule 3), each written once and called by the
// forward kernels and by decode alike:
//   ChunkPTile   decayed causal weights bf16(λ^{i−j} q_i·k_j) of a 16 × 8 tile (mma over d);
//                ChunkP runs it over the key tiles of a 16-row tile.
//   OutputTile   o_i = s·(λ^{i+1}·(q_i·bf16(S)) + Σ_j P_ij v_j) for a 16-row tile and kN column
//                tiles: intra = P·V (IntraTile, mma over keys), inter = q·bf16(S) (InterTile,
//                mma over d), then EmitOutputs; the fused forward calls IntraTile and
//                EmitOutputs with P and inter from its own wgmma.
//   BoundaryTile Σ_j k_jᵀ bf16(λ^{C−1−j}·v_j) for 16-row × kN·8-column state tiles (mma over the
//                chunk's 64 keys).
// Every mma is m16n8k16 bf16 → fp32 with the same placement on every path: query row i at tile
// row i % 16, key j at k-position j % 16 (scores: n-position j % 8), head dim d at k-position
// d % 16, output / state column b at n-position b % 8, state row a at tile row a % 16; each output
// a chain over k-steps ascending from +0. An mma row depends only on its own A row, so decode runs
// the routines with its one live row placed where the forward has it and gets the forward's bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear_attention/linear_attention_chunk.cuh"

namespace tandem::kernels::cuda::linear {

using bf16 = __nv_bfloat16;

// Shared-memory strides (bf16 elements) of the chunk operands: 16 bytes of padding per row keeps
// the fragment loads and ldmatrix rows conflict-free.
template <int kD>
struct TcLayout {
  static_assert(kD == 32 || kD == 64 || kD == 128, "head dims 32, 64, 128");
  static constexpr int kLdr = kD + 8;  // q, k, v, S row-major [rows][kLdr]
  static constexpr int kLdp = kC + 8;  // P [kC][kLdp]
  static constexpr int kKs = kD / 16;  // mma k-steps over d
};

// Shared memory of one (chunk, head) for OutputTile: q, k [kC, kLdr]; v [kC, ldv]; s [kD, lds] =
// bf16(S) row-major; p [kC, kLdp]; pw [kC + 1] the decay powers. Carve lays out full-width v and
// s (ldv = lds = kLdr), which the output kernel and decode use.
template <int kD>
struct TcSmem {
  using L = TcLayout<kD>;
  static constexpr size_t kBf16 = 3 * kC * L::kLdr + kD * L::kLdr + kC * L::kLdp;
  static constexpr size_t kBytes = sizeof(bf16) * kBf16 + sizeof(float) * (kC + 4);
  bf16 *q, *k, *v, *s, *p;
  float* pw;
  int ldv, lds;
  __device__ static TcSmem Carve(void* base) {
    TcSmem m;
    m.ldv = m.lds = L::kLdr;
    m.q = static_cast<bf16*>(base);
    m.k = m.q + kC * L::kLdr;
    m.v = m.k + kC * L::kLdr;
    m.s = m.v + kC * L::kLdr;
    m.p = m.s + kD * L::kLdr;
    m.pw = reinterpret_cast<float*>(m.p + kC * L::kLdp);
    return m;
  }
};

__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ float Lo(uint32_t x) { return __uint_as_float(x << 16); }
__device__ __forceinline__ float Hi(uint32_t x) { return __uint_as_float(x & 0xffff0000u); }

// d += a · b, m16n8k16, bf16 inputs, fp32 accumulate.
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8×8 bf16 matrices, transposed: lane l gives the address of row l % 8 of matrix l / 8 and
// receives, of matrix i, elements (row 2·(l%4), col l/4) and (row 2·(l%4)+1, col l/4) in r[i].
__device__ __forceinline__ void LdsmT(const bf16* row, uint32_t (&r)[4]) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Where element (row, col) of a chunk's q or k rows lives in shared memory. PaddedRows: row-major,
// ld elements apart (cp.async staging). SwizzledRows: as the bulk tensor copy lays out a box of
// [64 columns, kC rows] in the 128-byte swizzle, two boxes kBoxStride elements apart for 128
// columns: the 16-byte chunk c of row j at chunk c ^ (j % 8) (ld unused). Both keep the fragment
// loads free of bank conflicts.
struct PaddedRows {
  __device__ static __forceinline__ const bf16* At(const bf16* m, int ld, int row, int col) {
    return m + row * ld + col;
  }
};
template <int kBoxStride = kC * 64>
struct SwizzledRows {
  // Written so that the row part (loop-invariant per lane) and the column part (a constant once
  // unrolled) meet in one XOR: the chunk bits of row·64 + (row % 8)·8 are (row % 8)·8.
  __device__ static __forceinline__ const bf16* At(const bf16* m, int, int row, int col) {
    return m + (col / 64) * kBoxStride + ((row * 64 + (row % 8) * 8) ^ (((col % 64) / 8) * 8)) +
           col % 8;
  }
};

// Four 8×8 bf16 matrices: lane l gives the address of row l % 8 of matrix l / 8 and receives, of
// matrix i, elements (row l/4, cols 2·(l%4), 2·(l%4)+1) in r[i].
__device__ __forceinline__ void Ldsm(const bf16* row, uint32_t (&r)[4]) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// A fragment: rows r0..r0+15, cols c0..c0+15 of a row-major matrix: matrices rows 0-7 / cols
// 0-7, rows 8-15 / cols 0-7, rows 0-7 / cols 8-15, rows 8-15 / cols 8-15.
__device__ __forceinline__ void LoadA(const bf16* m, int ld, int r0, int c0, uint32_t (&a)[4]) {
  const int lane = threadIdx.x % 32;
  Ldsm(m + (r0 + lane % 16) * ld + c0 + 8 * (lane / 16), a);
}

// B fragments of two k-steps (k = c0..c0+31) for n = n0..n0+7 from a row-major matrix stored as
// [n][k]: b[0], b[1] of k-step c0, b[2], b[3] of k-step c0 + 16.
__device__ __forceinline__ void LoadB2(const bf16* m, int ld, int n0, int c0, uint32_t (&b)[4]) {
  const int lane = threadIdx.x % 32;
  Ldsm(m + (n0 + lane % 8) * ld + c0 + 8 * (lane / 8), b);
}

// B fragments of two n-tiles (n0.., n0+8..) for k = k0..k0+15 from a matrix stored [k][n]
// row-major (v, S): b[0], b[1] of n-tile n0, b[2], b[3] of n-tile n0 + 8.
__device__ __forceinline__ void LoadBPairT(const bf16* m, int ld, int k0, int n0,
                                           uint32_t (&b)[4]) {
  const int lane = threadIdx.x % 32, q = lane / 8;
  LdsmT(m + (k0 + (q % 2) * 8 + lane % 8) * ld + n0 + (q / 2) * 8, b);
}

// One B fragment (n-tile n0, k = k0..k0+15) from a [k][n] row-major matrix, for kN == 1 tiles.
__device__ __forceinline__ void LoadBOneT(const bf16* m, int ld, int k0, int n0, uint32_t& b0,
                                          uint32_t& b1) {
  const int lane = threadIdx.x % 32, t = lane % 4, n = n0 + lane / 4;
  const bf16* p = m + (k0 + 2 * t) * ld + n;
  const __nv_bfloat162 x0 = __halves2bfloat162(p[0], p[ld]);
  const __nv_bfloat162 x1 = __halves2bfloat162(p[8 * ld], p[9 * ld]);
  b0 = *reinterpret_cast<const uint32_t*>(&x0);
  b1 = *reinterpret_cast<const uint32_t*>(&x1);
}

// bf16x2 of P_ij and P_i,j+1 from their scores q_i·k_j and q_i·k_j+1: λ^{i−j}·score where j ≤ i,
// else 0 (pw: the decay powers). Every path that forms P (ChunkPTile, the fused forward's wgmma
// scores) rounds it here.
__device__ __forceinline__ uint32_t DecayedPair(const float* pw, int i, int j, float s0, float s1) {
  const float p0 = j <= i ? __fmul_rn(pw[i - j], s0) : 0.0f;
  const float p1 = j + 1 <= i ? __fmul_rn(pw[i - j - 1], s1) : 0.0f;
  return Pack(p0, p1);
}

// The decayed causal weights of rows 16m..16m+15 and keys 8nt..8nt+7 (nt < 2(m + 1)):
//   P_ij = bf16(λ^{i−j} · Σ_d q_i[d] k_j[d]) for j ≤ i, else 0,
// handed to emit(i, j, bf16x2 of P_ij and P_i,j+1) for the lane's two (i, j) pairs.
template <int kD, typename Emit>
__device__ __forceinline__ void ChunkPTile(const TcSmem<kD>& s, int m, int nt, Emit&& emit) {
  using L = TcLayout<kD>;
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  static_assert(L::kKs % 2 == 0, "k-steps in pairs");
#pragma unroll
  for (int ks = 0; ks < L::kKs; ks += 2) {
    uint32_t a[4], b[4];
    LoadB2(s.k, L::kLdr, 8 * nt, 16 * ks, b);
    LoadA(s.q, L::kLdr, 16 * m, 16 * ks, a);
    Mma(sc, a, b[0], b[1]);
    LoadA(s.q, L::kLdr, 16 * m, 16 * ks + 16, a);
    Mma(sc, a, b[2], b[3]);
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int i = 16 * m + g + 8 * rr, j = 8 * nt + 2 * t;
    emit(i, j, DecayedPair(s.pw, i, j, sc[2 * rr], sc[2 * rr + 1]));
  }
}

// ChunkPTile for the key tiles nt < 2(m + 1) with nt % stride == sel, written to p [kC, kLdp].
template <int kD>
__device__ __forceinline__ void ChunkP(const TcSmem<kD>& s, int m, int sel, int stride) {
  for (int nt = sel; nt < 2 * (m + 1); nt += stride) {
    ChunkPTile(s, m, nt, [&](int i, int j, uint32_t pair) {
      *reinterpret_cast<uint32_t*>(s.p + i * TcLayout<kD>::kLdp + j) = pair;
    });
  }
}

// acc[nt] += a · B for one k-step, B = rows k0 .. k0 + 15 and columns c0 .. c0 + 8·kN − 1 of a
// [k][n] row-major matrix (v, bf16(S)).
template <int kN>
__device__ __forceinline__ void MmaStepT(const bf16* mat, int ld, int k0, int c0,
                                         const uint32_t (&a)[4], float (&acc)[kN][4]) {
  static_assert(kN == 1 || kN % 2 == 0, "one n-tile or pairs");
  if constexpr (kN == 1) {
    uint32_t b0, b1;
    LoadBOneT(mat, ld, k0, c0, b0, b1);
    Mma(acc[0], a, b0, b1);
  } else {
#pragma unroll
    for (int np = 0; np < kN / 2; ++np) {
      uint32_t b[4];
      LoadBPairT(mat, ld, k0, c0 + 16 * np, b);
      Mma(acc[2 * np], a, b[0], b[1]);
      Mma(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// intra = Σ_{j≤i} P_ij v_j[b] for rows 16m.. and columns c0 .. c0 + 8·kN − 1 of v [kC][ldv]: key
// steps 0..m ascending from +0 (the steps past the tile's last row hold only zeros of P), P's A
// fragment of key step kk from p_frag(kk, a).
template <int kN, typename PFrag>
__device__ __forceinline__ void IntraTile(const bf16* v, int ldv, int m, int c0, PFrag&& p_frag,
                                          float (&intra)[kN][4]) {
#pragma unroll
  for (int nt = 0; nt < kN; ++nt) intra[nt][0] = intra[nt][1] = intra[nt][2] = intra[nt][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < kC / 16; ++kk) {
    if (kk > m) break;
    uint32_t a[4];
    p_frag(kk, a);
    MmaStepT<kN>(v, ldv, 16 * kk, c0, a, intra);
  }
}

// inter = q_i · bf16(S) for rows 16m.. and columns c0 .. c0 + 8·kN − 1 of s [kD][lds]: d steps
// ascending from +0 (the fused forward gets the same sums from its score wgmma).
template <int kD, int kN>
__device__ __forceinline__ void InterTile(const bf16* q, const bf16* s, int lds, int m, int c0,
                                          float (&inter)[kN][4]) {
#pragma unroll
  for (int nt = 0; nt < kN; ++nt) inter[nt][0] = inter[nt][1] = inter[nt][2] = inter[nt][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < TcLayout<kD>::kKs; ++ks) {
    uint32_t a[4];
    LoadA(q, TcLayout<kD>::kLdr, 16 * m, 16 * ks, a);
    MmaStepT<kN>(s, lds, 16 * ks, c0, a, inter);
  }
}

// emit(i, b, o_i[b], o_i[b+1]) for rows 16m.. and columns c0..: o_i[b] = scale · (λ^{i+1} ·
// inter[b] + intra[b]), inter = (q_i · bf16(S)) over d ascending from +0.
template <int kN, typename Emit>
__device__ __forceinline__ void EmitOutputs(const float* pw, float scale, int m, int c0,
                                            const float (&inter)[kN][4],
                                            const float (&intra)[kN][4], Emit&& emit) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < kN; ++nt) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int i = 16 * m + g + 8 * rr, b = c0 + 8 * nt + 2 * t;
      const float pi = pw[i + 1];
      emit(
          i, b, __fmul_rn(scale, __fadd_rn(__fmul_rn(pi, inter[nt][2 * rr]), intra[nt][2 * rr])),
          __fmul_rn(scale, __fadd_rn(__fmul_rn(pi, inter[nt][2 * rr + 1]), intra[nt][2 * rr + 1])));
    }
  }
}

// Rows 16m..16m+15, columns c0 .. c0 + 8·kN − 1 of s.v and s.s (P of the tile in s.p):
// emit(i, b, o_i[b], o_i[b+1]) with o_i[b] = scale · (λ^{i+1} · (q_i · bf16(S))[b] + Σ_{j≤i} P_ij
// v_j[b]).
template <int kD, int kN, typename Emit>
__device__ __forceinline__ void OutputTile(const TcSmem<kD>& s, float scale, int m, int c0,
                                           Emit&& emit) {
  using L = TcLayout<kD>;
  float intra[kN][4], inter[kN][4];
  IntraTile<kN>(
      s.v, s.ldv, m, c0, [&](int kk, uint32_t(&a)[4]) { LoadA(s.p, L::kLdp, 16 * m, 16 * kk, a); },
      intra);
  InterTile<kD, kN>(s.q, s.s, s.lds, m, c0, inter);
  EmitOutputs<kN>(s.pw, scale, m, c0, inter, intra, emit);
}

// The chunk's per-lane key scales for BoundaryTile: ps[kk][h] = pow[C − 1 − j] for the keys
// j = 16kk + 2t + (h / 2)·8 + h % 2 this lane's fragments hold (A's k columns and B's k rows
// alike).
__device__ __forceinline__ void KeyScales(const float* pow, float (&ps)[kC / 16][4]) {
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int kk = 0; kk < kC / 16; ++kk) {
#pragma unroll
    for (int h = 0; h < 4; ++h) ps[kk][h] = pow[kC - 1 - (16 * kk + 2 * t + (h / 2) * 8 + h % 2)];
  }
}

// bf16(pow[C−1−j]·v_j[b]) of a B fragment pair: x holds keys j, j + 1 with scales s0, s1.
__device__ __forceinline__ uint32_t ScaledPair(uint32_t x, float s0, float s1) {
  return Pack(__fmul_rn(s0, Lo(x)), __fmul_rn(s1, Hi(x)));
}

// acc[r][nt][e] = Σ_{j=0..C−1} k_j[a] · bf16(pow[C−1−j]·v_j[b]) (4 key steps ascending, from +0)
// for a = a0 + 16r + g + 8·(e / 2), b = b0 + 8·nt + 2t + e % 2, from the chunk's raw keys
// k [kC][ldk] (rows as Layout keeps them; a0 its first column) and values v [kC][ldv] (row-major,
// the column offset b0 already applied to the pointer), each scaled by its key scales ps
// (KeyScales) here; with ps = nullptr v already holds the scaled values bf16(pow[C−1−j]·v_j). The
// kRows row tiles share each step's B fragments.
template <int kN, typename Layout = PaddedRows, int kRows = 1>
__device__ __forceinline__ void BoundaryTile(const bf16* k, int ldk, int a0, const bf16* v, int ldv,
                                             const float (*ps)[4], float (&acc)[kRows][kN][4]) {
  static_assert(kN == 1 || kN % 2 == 0, "one n-tile or pairs");
  const int lane = threadIdx.x % 32, q = lane / 8;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int nt = 0; nt < kN; ++nt)
      acc[r][nt][0] = acc[r][nt][1] = acc[r][nt][2] = acc[r][nt][3] = 0.0f;
  }
#pragma unroll
  for (int kk = 0; kk < kC / 16; ++kk) {
    // The step's B fragments b[nt] (keys 2t, 2t + 1 and 2t + 8, 2t + 9), scaled here unless v
    // holds the scaled values.
    uint32_t b[kN][2];
    if constexpr (kN == 1) {
      LoadBOneT(v, ldv, 16 * kk, 0, b[0][0], b[0][1]);
    } else {
#pragma unroll
      for (int np = 0; np < kN / 2; ++np) {
        uint32_t x[4];
        LoadBPairT(v, ldv, 16 * kk, 16 * np, x);
        b[2 * np][0] = x[0], b[2 * np][1] = x[1], b[2 * np + 1][0] = x[2], b[2 * np + 1][1] = x[3];
      }
    }
    if (ps != nullptr) {
#pragma unroll
      for (int nt = 0; nt < kN; ++nt) {
        b[nt][0] = ScaledPair(b[nt][0], ps[kk][0], ps[kk][1]);
        b[nt][1] = ScaledPair(b[nt][1], ps[kk][2], ps[kk][3]);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      // Matrices: keys 0-7 / cols 0-7, keys 0-7 / cols 8-15, keys 8-15 / cols 0-7, keys 8-15 /
      // cols 8-15, which transposed are a[0..3] of kᵀ.
      uint32_t a[4];
      LdsmT(Layout::At(k, ldk, 16 * kk + (q / 2) * 8 + lane % 8, a0 + 16 * r + (q % 2) * 8), a);
#pragma unroll
      for (int nt = 0; nt < kN; ++nt) Mma(acc[r][nt], a, b[nt][0], b[nt][1]);
    }
  }
}

}  // namespace tandem::kernels::cuda::linear

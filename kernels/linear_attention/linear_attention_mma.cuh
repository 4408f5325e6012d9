// Internal to kernels/linear_attention (include from .cu files only): the tensor-core pieces of the
// chunked linear attention for bf16 q, k, v (contract rule 3). Two warp routines, each written
// once and called by the forward kernels and by decode alike:
//   OutputWarp    16 query rows × D/2 columns of one chunk: scores q·kᵀ (mma over d), the decayed
//                 causal weights rounded to bf16 in registers, intra = P·V (mma over keys) and
//                 inter = q·bf16(S) (mma over d), combined in fp32 as the CPU does.
//   BoundaryWarp  one warp tile of Σ_j bf16(λ^{C−1−j}·k_j)ᵀ v_j (mma over the chunk's keys).
// All mma are m16n8k16 bf16 → fp32, each output a chain over k-steps ascending from +0. An mma row
// depends only on its own A row, so decode runs OutputWarp with one live row placed where the
// forward has it (row i of the chunk, tile i / 16) and gets the forward's bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear_attention/linear_attention_chunk.cuh"

namespace tandem::kernels::cuda::linear {

using bf16 = __nv_bfloat16;
inline constexpr int kTcWarps = 8, kTcThreads = 32 * kTcWarps;

// Shapes of the warp tiles and the padded shared-memory strides (in bf16 elements; a row stride
// of 4 words mod 32 banks makes every fragment load conflict-free).
template <int kD>
struct TcLayout {
  static_assert(kD == 32 || kD == 64 || kD == 128, "head dims 32, 64, 128");
  static constexpr int kLdr = kD + 8;  // q, k row-major [kC, kLdr]
  static constexpr int kLdt = kC + 8;  // vᵀ, scaled kᵀ [kD, kLdt]
  static constexpr int kKs = kD / 16;  // mma k-steps over d
  // OutputWarp: warp w takes row tile w % 4 and column half w / 4.
  static constexpr int kOc = kD / 2, kOn = kOc / 8;
  // BoundaryWarp: warp tile kBr × kBc; tile w covers rows (w % kRowTiles)·kBr, cols (w /
  // kRowTiles)·kBc. Eight tiles cover the [kD, kD] state.
  static constexpr int kBr = kD == 128 ? 32 : 16;
  static constexpr int kBc = kD * kD / kTcWarps / kBr;
  static constexpr int kBm = kBr / 16, kBn = kBc / 8, kRowTiles = kD / kBr;
  static_assert(kRowTiles * (kD / kBc) == kTcWarps, "eight boundary tiles");
};

// Shared memory of one (chunk, head): q, k [kC, kLdr]; vt [kD, kLdt] (vᵀ); kt [kD, kLdt] (the
// scaled keys transposed); st [kD, kLdr] (bf16(S)ᵀ: st[b][a] = bf16(S[a][b])); pw [kC + 1].
template <int kD>
struct TcSmem {
  using L = TcLayout<kD>;
  static constexpr size_t kBf16 = 2 * kC * L::kLdr + 2 * kD * L::kLdt + kD * L::kLdr;
  static constexpr size_t kBytes = sizeof(bf16) * kBf16 + sizeof(float) * (kC + 4);
  bf16 *q, *k, *vt, *kt, *st;
  float* pw;
  __device__ static TcSmem Carve(void* base) {
    TcSmem s;
    s.q = static_cast<bf16*>(base);
    s.k = s.q + kC * L::kLdr;
    s.vt = s.k + kC * L::kLdr;
    s.kt = s.vt + kD * L::kLdt;
    s.st = s.kt + kD * L::kLdt;
    s.pw = reinterpret_cast<float*>(s.st + kD * L::kLdr);
    return s;
  }
};

__device__ __forceinline__ uint32_t Ld2(const bf16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  return *reinterpret_cast<const uint32_t*>(&h);
}

// d += a · b, m16n8k16, bf16 inputs, fp32 accumulate.
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A fragment: rows r0..r0+15, cols c0..c0+15 of a row-major matrix.
__device__ __forceinline__ void LoadA(const bf16* m, int ld, int r0, int c0, uint32_t (&a)[4]) {
  const int lane = threadIdx.x % 32;
  const bf16* p = m + (r0 + lane / 4) * ld + c0 + 2 * (lane % 4);
  a[0] = Ld2(p);
  a[1] = Ld2(p + 8 * ld);
  a[2] = Ld2(p + 8);
  a[3] = Ld2(p + 8 * ld + 8);
}

// B fragment: k = c0..c0+15, n = n0..n0+7, from a matrix stored as [n][k] row-major.
__device__ __forceinline__ void LoadB(const bf16* m, int ld, int n0, int c0, uint32_t& b0,
                                      uint32_t& b1) {
  const int lane = threadIdx.x % 32;
  const bf16* p = m + (n0 + lane / 4) * ld + c0 + 2 * (lane % 4);
  b0 = Ld2(p);
  b1 = Ld2(p + 8);
}

// The key as the boundary sum's mma sees it: bf16(λ^{C−1−j} · k_j[a]), scaled in fp32, rounded
// once. pw_j = pow[C − 1 − j].
__device__ __forceinline__ bf16 ScaledKey(float pw_j, float k) {
  return __float2bfloat16_rn(__fmul_rn(pw_j, k));
}

// Rows 16m..16m+15 of the chunk, columns half·kD/2 .. +kD/2: emit(i, b, o_i[b], o_i[b+1]) with
//   o_i[b] = scale · (λ^{i+1} · (q_i · bf16(S))[b] + Σ_{j≤i} bf16(λ^{i−j} (q_i·k_j)) v_j[b]).
// Keys past the chunk's last row must be zero rows in s.k / s.vt or masked (j > i) anyway.
template <int kD, typename Emit>
__device__ __forceinline__ void OutputWarp(const TcSmem<kD>& s, float scale, int m, int half,
                                           Emit&& emit) {
  using L = TcLayout<kD>;
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  float sc[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < L::kKs; ++ks) {
    uint32_t a[4];
    LoadA(s.q, L::kLdr, 16 * m, 16 * ks, a);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      if (nt >= 2 * (m + 1)) continue;  // keys past the tile's last row: masked for every row
      uint32_t b0, b1;
      LoadB(s.k, L::kLdr, 8 * nt, 16 * ks, b0, b1);
      Mma(sc[nt], a, b0, b1);
    }
  }
  // The decayed, masked scores as A fragments of P·V: step kk takes key tiles 2kk and 2kk + 1.
  uint32_t pa[4][4];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int i = 16 * m + g + 8 * rr, j = 8 * nt + 2 * t;
      const float p0 = j <= i ? __fmul_rn(s.pw[i - j], sc[nt][2 * rr]) : 0.0f;
      const float p1 = j + 1 <= i ? __fmul_rn(s.pw[i - j - 1], sc[nt][2 * rr + 1]) : 0.0f;
      pa[nt / 2][(nt % 2) * 2 + rr] = Pack(p0, p1);
    }
  }
  const int c0 = half * L::kOc;
  float intra[L::kOn][4], inter[L::kOn][4];
#pragma unroll
  for (int nt = 0; nt < L::kOn; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) intra[nt][e] = inter[nt][e] = 0.0f;
  }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    if (kk > m) continue;  // all keys of the step lie past every row of the tile
#pragma unroll
    for (int nt = 0; nt < L::kOn; ++nt) {
      uint32_t b0, b1;
      LoadB(s.vt, L::kLdt, c0 + 8 * nt, 16 * kk, b0, b1);
      Mma(intra[nt], pa[kk], b0, b1);
    }
  }
#pragma unroll
  for (int ks = 0; ks < L::kKs; ++ks) {
    uint32_t a[4];
    LoadA(s.q, L::kLdr, 16 * m, 16 * ks, a);
#pragma unroll
    for (int nt = 0; nt < L::kOn; ++nt) {
      uint32_t b0, b1;
      LoadB(s.st, L::kLdr, c0 + 8 * nt, 16 * ks, b0, b1);
      Mma(inter[nt], a, b0, b1);
    }
  }
#pragma unroll
  for (int nt = 0; nt < L::kOn; ++nt) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int i = 16 * m + g + 8 * rr, b = c0 + 8 * nt + 2 * t;
      const float pi = s.pw[i + 1];
      emit(
          i, b, __fmul_rn(scale, __fadd_rn(__fmul_rn(pi, inter[nt][2 * rr]), intra[nt][2 * rr])),
          __fmul_rn(scale, __fadd_rn(__fmul_rn(pi, inter[nt][2 * rr + 1]), intra[nt][2 * rr + 1])));
    }
  }
}

// Boundary-sum fragments of one warp tile: acc[mi][nt][e] = Σ_j kt[a][j] · vt[b][j] over the 64
// keys (4 k-steps ascending) for a = 16·mi + g + 8·(e / 2), b = 8·nt + 2t + e % 2, relative to
// kt_rows (row a0 of the scaled kᵀ) and vt_rows (row b0 of vᵀ), both with row stride kLdt.
template <int kD>
__device__ __forceinline__ void BoundaryWarp(
    const bf16* kt_rows, const bf16* vt_rows,
    float (&acc)[TcLayout<kD>::kBm][TcLayout<kD>::kBn][4]) {
  using L = TcLayout<kD>;
#pragma unroll
  for (int mi = 0; mi < L::kBm; ++mi) {
#pragma unroll
    for (int nt = 0; nt < L::kBn; ++nt)
      acc[mi][nt][0] = acc[mi][nt][1] = acc[mi][nt][2] = acc[mi][nt][3] = 0.0f;
  }
#pragma unroll
  for (int kk = 0; kk < kC / 16; ++kk) {
    uint32_t a[L::kBm][4];
#pragma unroll
    for (int mi = 0; mi < L::kBm; ++mi) LoadA(kt_rows, L::kLdt, 16 * mi, 16 * kk, a[mi]);
#pragma unroll
    for (int nt = 0; nt < L::kBn; ++nt) {
      uint32_t b0, b1;
      LoadB(vt_rows, L::kLdt, 8 * nt, 16 * kk, b0, b1);
#pragma unroll
      for (int mi = 0; mi < L::kBm; ++mi) Mma(acc[mi][nt], a[mi], b0, b1);
    }
  }
}

// Where fragment element (mi, nt, e) of boundary tile `tile` sits in the [kD, kD] state.
template <int kD>
__device__ __forceinline__ int StateIndex(int tile, int mi, int nt, int e) {
  using L = TcLayout<kD>;
  const int lane = threadIdx.x % 32;
  const int a = (tile % L::kRowTiles) * L::kBr + 16 * mi + lane / 4 + 8 * (e / 2);
  const int b = (tile / L::kRowTiles) * L::kBc + 8 * nt + 2 * (lane % 4) + e % 2;
  return a * kD + b;
}

// The state of this warp's tile (held as boundary fragments) into st as bf16(S)ᵀ.
template <int kD>
__device__ __forceinline__ void StoreStateBf16(
    const float (&st)[TcLayout<kD>::kBm][TcLayout<kD>::kBn][4], int tile, bf16* dst) {
  using L = TcLayout<kD>;
#pragma unroll
  for (int mi = 0; mi < L::kBm; ++mi) {
#pragma unroll
    for (int nt = 0; nt < L::kBn; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int idx = StateIndex<kD>(tile, mi, nt, e), a = idx / kD, b = idx % kD;
        dst[b * L::kLdr + a] = __float2bfloat16_rn(st[mi][nt][e]);
      }
    }
  }
}

}  // namespace tandem::kernels::cuda::linear

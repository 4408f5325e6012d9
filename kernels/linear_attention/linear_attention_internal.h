// Internal pieces of the CPU linear attention, shared by the forward/decode file and the backward
// file. Everything is built on one primitive, VecMat, whose every output element is one fp32
// fused-multiply-add chain started at +0 over an ascending index; how rows and columns are blocked
// therefore never changes a bit, and the scalar and AVX2 versions agree bitwise.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "kernels/linear_attention/linear_attention.h"

namespace tandem::kernels::cpu {

inline constexpr int64_t kChunk = kLinearAttentionChunk;  // C
static_assert(kChunk % 8 == 0, "Scores pads columns to whole 8-lane vectors within the chunk");

// out[r·ldo + c] = Σ_{k=0..m−1} x[r·ldx + k] · mat[k·ldm + c]  for r < rows, c < n;
// each element is acc = fma(x, mat, acc) from acc = +0 with k ascending.
using VecMatFn = void (*)(int64_t rows, int64_t m, int64_t n, const float* x, int64_t ldx,
                          const float* mat, int64_t ldm, float* out, int64_t ldo);
void VecMatScalar(int64_t rows, int64_t m, int64_t n, const float* x, int64_t ldx, const float* mat,
                  int64_t ldm, float* out, int64_t ldo);
void VecMatAvx2(int64_t rows, int64_t m, int64_t n, const float* x, int64_t ldx, const float* mat,
                int64_t ldm, float* out, int64_t ldo);
// The VecMat this machine uses: AVX2 when the CPU has AVX2+FMA, else scalar; never size-dependent.
VecMatFn ActiveVecMat();

// dst[a·ldd + j] = src[j·ld + a] for j < n, a < d: n rows of one head, transposed.
void TransposeRows(int64_t n, int64_t d, const float* src, int64_t ld, float* dst, int64_t ldd);

// Piece (a), unweighted: inter[r·d + b] = Σ_a q_r[a] · state[a·d + b], a ascending, r < rows.
// The λ^{i+1} factor is applied by OutputRow. state is [D, D].
void InterTerm(int64_t rows, int64_t d, const float* q, int64_t ldq, const float* state,
               float* inter);

// scores[r·kChunk + j] = q_r · k_j (d ascending) for r < rows, j < cols; kt = keys as [D, C].
// May also write columns up to the next multiple of 8 (≤ C).
void Scores(int64_t rows, int64_t cols, int64_t d, const float* q, int64_t ldq, const float* kt,
            float* scores);

// Piece (b) and the combination for the query at chunk offset i:
//   intra[b] = Σ_{j=0..i} (pow[i−j] · scores[j]) · v_j[b]   (j ascending)
//   o[b]     = scale · (pow[i+1] · inter[b] + intra[b])
// w [C] and intra [D] are scratch.
void OutputRow(int64_t i, int64_t d, const float* scores, const float* v, int64_t ldv,
               const float* inter, const float* pow, float scale, float* w, float* intra, float* o);

// Piece (c): state = pow[C] · state + Σ_{j=0..C−1} (pow[C−1−j] · k_j)ᵀ v_j  (j ascending).
// kwt [D, C] and acc [D, D] are scratch.
void BoundaryUpdate(int64_t d, const float* k, int64_t ldk, const float* v, int64_t ldv,
                    const float* pow, float* kwt, float* acc, float* state);

// Scratch for ChunkOutputs, sized for head_dim d.
struct ChunkScratch {
  explicit ChunkScratch(int64_t d);
  std::unique_ptr<float[]> kt, inter, scores, w, intra;  // [D,C] [C,D] [C,C] [C] [D]
};

// Outputs for chunk offsets i = r0..n−1 (n ≤ C) of one head from the state before the chunk:
// (a) for those rows, their q·k scores against keys 0..n−1, then (b) and the combination row by
// row. The chunked forward calls it with r0 = 0; decode with r0 = open_len, n = open_len + 1.
// q and o point at row r0 (row stride ldq, ldo); k and v at chunk row 0 (row stride ldkv).
void ChunkOutputs(int64_t r0, int64_t n, int64_t d, const float* q, int64_t ldq, const float* k,
                  const float* v, int64_t ldkv, const float* state, const float* pow, float scale,
                  ChunkScratch& scratch, float* o, int64_t ldo);

// Asks for n rows of one head of three [T, H, D] tensors ahead of use: rows are ld = H·D floats
// apart, too far for the hardware prefetcher to follow.
inline void PrefetchRows(int64_t n, int64_t d, int64_t ld, const float* a, const float* b,
                         const float* c) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t x = 0; x < d; x += 16) {
      __builtin_prefetch(a + j * ld + x);
      __builtin_prefetch(b + j * ld + x);
      __builtin_prefetch(c + j * ld + x);
    }
  }
}

// Argument checks shared by the three entry points; errors name the argument.
absl::Status CheckQkv(const LinearAttentionParams& p, const Tensor& q, const Tensor& k,
                      const Tensor& v, const Tensor& decay);
absl::Status CheckCuSeqlens(const Tensor& cu_seqlens, int64_t t);
absl::Status CheckStateOrUndefined(const Tensor& s, const char* name, int64_t n, int64_t h,
                                   int64_t d);

// Number of chunks of each sequence before it, and the total: chunk_start[b] for b ≤ B.
std::vector<int64_t> ChunkStarts(const int32_t* cu, int64_t b);

}  // namespace tandem::kernels::cpu

// AVX2/FMA VecMat for the CPU linear attention. Vectorised over output columns and blocked over
// rows only, so each output element is the same fma chain (k ascending from +0) as the scalar
// VecMat computes: bits do not depend on the blocking, the problem size or this file.
#include <immintrin.h>

#include <cmath>

#include "kernels/linear_attention/linear_attention_internal.h"

namespace tandem::kernels::cpu {
namespace {

// R rows × 8V columns held in registers for the whole k loop.
template <int R, int V>
inline void Tile(int64_t m, const float* x, int64_t ldx, const float* mat, int64_t ldm, float* out,
                 int64_t ldo) {
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < V; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < m; ++k) {
    __m256 b[V];
    for (int c = 0; c < V; ++c) b[c] = _mm256_loadu_ps(mat + k * ldm + 8 * c);
    for (int r = 0; r < R; ++r) {
      __m256 a = _mm256_broadcast_ss(x + r * ldx + k);
      for (int c = 0; c < V; ++c) acc[r][c] = _mm256_fmadd_ps(a, b[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < V; ++c) _mm256_storeu_ps(out + r * ldo + 8 * c, acc[r][c]);
  }
}

// Columns [c0, n) of `rows` rows, one scalar fma chain each (the same chain as a vector lane).
inline void TailColumns(int64_t rows, int64_t m, int64_t c0, int64_t n, const float* x, int64_t ldx,
                        const float* mat, int64_t ldm, float* out, int64_t ldo) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = c0; c < n; ++c) {
      float acc = 0.0f;
      for (int64_t k = 0; k < m; ++k) acc = std::fma(x[r * ldx + k], mat[k * ldm + c], acc);
      out[r * ldo + c] = acc;
    }
  }
}

// R rows at once, columns in blocks of 16 and 8, then scalar tail columns.
template <int R>
inline void RowBlock(int64_t m, int64_t n, const float* x, int64_t ldx, const float* mat,
                     int64_t ldm, float* out, int64_t ldo) {
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) Tile<R, 2>(m, x, ldx, mat + c, ldm, out + c, ldo);
  for (; c + 8 <= n; c += 8) Tile<R, 1>(m, x, ldx, mat + c, ldm, out + c, ldo);
  TailColumns(R, m, c, n, x, ldx, mat, ldm, out, ldo);
}

}  // namespace

// 6×16 tiles keep 12 accumulators in registers (the fastest shape measured on AVX2); leftover
// rows take 4-row, then single-row tiles.
void VecMatAvx2(int64_t rows, int64_t m, int64_t n, const float* x, int64_t ldx, const float* mat,
                int64_t ldm, float* out, int64_t ldo) {
  int64_t r = 0;
  for (; r + 6 <= rows; r += 6) RowBlock<6>(m, n, x + r * ldx, ldx, mat, ldm, out + r * ldo, ldo);
  for (; r + 4 <= rows; r += 4) RowBlock<4>(m, n, x + r * ldx, ldx, mat, ldm, out + r * ldo, ldo);
  for (; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* outr = out + r * ldo;
    int64_t c = 0;
    for (; c + 64 <= n; c += 64) Tile<1, 8>(m, xr, ldx, mat + c, ldm, outr + c, ldo);
    for (; c + 32 <= n; c += 32) Tile<1, 4>(m, xr, ldx, mat + c, ldm, outr + c, ldo);
    for (; c + 8 <= n; c += 8) Tile<1, 1>(m, xr, ldx, mat + c, ldm, outr + c, ldo);
    TailColumns(1, m, c, n, xr, ldx, mat, ldm, outr, ldo);
  }
}

}  // namespace tandem::kernels::cpu

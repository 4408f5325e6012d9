// The three pieces of the chunked linear attention (inter term, intra term, boundary update), the
// decay table and the argument checks. The forward, decode and backward all call these, so the
// chunked prefill and decode paths share every floating-point operation (contract rule 3).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/core/cpu_features.h"
#include "kernels/core/status_macros.h"
#include "kernels/linear_attention/linear_attention_internal.h"

namespace tandem::kernels {

void LinearAttentionDecayPowers(float x, float* pow) {
  for (int64_t n = 0; n <= kLinearAttentionChunk; ++n) {
    pow[n] = std::exp(-(static_cast<float>(n) * x));
  }
}

namespace cpu {

void VecMatScalar(int64_t rows, int64_t m, int64_t n, const float* x, int64_t ldx, const float* mat,
                  int64_t ldm, float* out, int64_t ldo) {
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + r * ldo;
    std::fill(o, o + n, 0.0f);
    // k outer keeps the per-element chain (k ascending from +0) while streaming rows of mat.
    for (int64_t k = 0; k < m; ++k) {
      const float xk = x[r * ldx + k];
      const float* row = mat + k * ldm;
      for (int64_t c = 0; c < n; ++c) o[c] = std::fma(xk, row[c], o[c]);
    }
  }
}

VecMatFn ActiveVecMat() {
  static const VecMatFn fn = CpuHasAvx2Fma() ? &VecMatAvx2 : &VecMatScalar;
  return fn;
}

void TransposeRows(int64_t n, int64_t d, const float* src, int64_t ld, float* dst, int64_t ldd) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t a = 0; a < d; ++a) dst[a * ldd + j] = src[j * ld + a];
  }
}

void InterTerm(int64_t rows, int64_t d, const float* q, int64_t ldq, const float* state,
               float* inter) {
  ActiveVecMat()(rows, d, d, q, ldq, state, d, inter, d);
}

void Scores(int64_t rows, int64_t cols, int64_t d, const float* q, int64_t ldq, const float* kt,
            float* scores) {
  // Columns rounded up to whole 8-lane vectors (kt has C, a multiple of 8, initialised columns):
  // the extra scores are never read, and each score's chain is the same either way.
  const int64_t padded = std::min<int64_t>(kChunk, (cols + 7) / 8 * 8);
  ActiveVecMat()(rows, d, padded, q, ldq, kt, kChunk, scores, kChunk);
}

void OutputRow(int64_t i, int64_t d, const float* scores, const float* v, int64_t ldv,
               const float* inter, const float* pow, float scale, float* w, float* intra,
               float* o) {
  for (int64_t j = 0; j <= i; ++j) w[j] = pow[i - j] * scores[j];
  ActiveVecMat()(1, i + 1, d, w, 0, v, ldv, intra, d);
  const float decay = pow[i + 1];
  for (int64_t b = 0; b < d; ++b) o[b] = scale * (decay * inter[b] + intra[b]);
}

void BoundaryUpdate(int64_t d, const float* k, int64_t ldk, const float* v, int64_t ldv,
                    const float* pow, float* kwt, float* acc, float* state) {
  for (int64_t a = 0; a < d; ++a) {
    for (int64_t j = 0; j < kChunk; ++j) kwt[a * kChunk + j] = pow[kChunk - 1 - j] * k[j * ldk + a];
  }
  ActiveVecMat()(d, kChunk, d, kwt, kChunk, v, ldv, acc, d);
  const float decay = pow[kChunk];
  for (int64_t e = 0; e < d * d; ++e) state[e] = decay * state[e] + acc[e];
}

ChunkScratch::ChunkScratch(int64_t d)
    : kt(new float[d * kChunk]()),  // zeroed: Scores reads whole 8-column groups
      inter(new float[kChunk * d]),
      scores(new float[kChunk * kChunk]),
      w(new float[kChunk]),
      intra(new float[d]) {}

void ChunkOutputs(int64_t r0, int64_t n, int64_t d, const float* q, int64_t ldq, const float* k,
                  const float* v, int64_t ldkv, const float* state, const float* pow, float scale,
                  ChunkScratch& scratch, float* o, int64_t ldo) {
  const int64_t rows = n - r0;
  TransposeRows(n, d, k, ldkv, scratch.kt.get(), kChunk);
  InterTerm(rows, d, q, ldq, state, scratch.inter.get());
  // Scores in row blocks of 6 (the VecMat tile height), each only up to its last row's causal
  // column: a row's scores do not depend on how many columns beyond its own are computed alongside.
  for (int64_t rb = 0; rb < rows; rb += 6) {
    Scores(std::min<int64_t>(6, rows - rb), std::min(n, r0 + rb + 6), d, q + rb * ldq, ldq,
           scratch.kt.get(), scratch.scores.get() + rb * kChunk);
  }
  for (int64_t r = 0; r < rows; ++r) {
    OutputRow(r0 + r, d, scratch.scores.get() + r * kChunk, v, ldkv, scratch.inter.get() + r * d,
              pow, scale, scratch.w.get(), scratch.intra.get(), o + r * ldo);
  }
}

absl::Status CheckQkv(const LinearAttentionParams& p, const Tensor& q, const Tensor& k,
                      const Tensor& v, const Tensor& decay) {
  TANDEM_CHECK_ARG(p.num_heads > 0, "p.num_heads: must be > 0, got ", p.num_heads);
  TANDEM_CHECK_ARG(p.head_dim > 0, "p.head_dim: must be > 0, got ", p.head_dim);
  TANDEM_CHECK_ARG(std::isfinite(p.scale), "p.scale: must be finite, got ", p.scale);
  const int64_t h = p.num_heads, d = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(q, "q", DType::kF32, {-1, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(k, "k", DType::kF32, {q.dim(0), h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(v, "v", DType::kF32, {q.dim(0), h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(decay, "decay", DType::kF32, {h}));
  for (int64_t i = 0; i < h; ++i) {
    const float x = decay.data<float>()[i];
    TANDEM_CHECK_ARG(std::isfinite(x) && x > 0.0f, "decay[", i, "]: must be finite and > 0, got ",
                     x);
  }
  return absl::OkStatus();
}

absl::Status CheckCuSeqlens(const Tensor& cu_seqlens, int64_t t) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(cu_seqlens, "cu_seqlens", DType::kI32, {-1}));
  const int64_t n = cu_seqlens.dim(0);
  TANDEM_CHECK_ARG(n >= 2, "cu_seqlens: needs B + 1 >= 2 entries, got ", n);
  const int32_t* cu = cu_seqlens.data<int32_t>();
  TANDEM_CHECK_ARG(cu[0] == 0, "cu_seqlens[0]: must be 0, got ", cu[0]);
  for (int64_t i = 1; i < n; ++i) {
    TANDEM_CHECK_ARG(cu[i] >= cu[i - 1], "cu_seqlens: must be non-decreasing, but cu_seqlens[", i,
                     "] = ", cu[i], " < ", cu[i - 1]);
  }
  TANDEM_CHECK_ARG(cu[n - 1] == t, "cu_seqlens[", n - 1, "]: must equal T = ", t, ", got ",
                   cu[n - 1]);
  return absl::OkStatus();
}

absl::Status CheckStateOrUndefined(const Tensor& s, const char* name, int64_t n, int64_t h,
                                   int64_t d) {
  if (!s.defined()) return absl::OkStatus();
  return ExpectTensor(s, name, DType::kF32, {n, h, d, d});
}

std::vector<int64_t> ChunkStarts(const int32_t* cu, int64_t b) {
  std::vector<int64_t> start(b + 1, 0);
  for (int64_t i = 0; i < b; ++i) {
    start[i + 1] = start[i] + (cu[i + 1] - cu[i] + kChunk - 1) / kChunk;
  }
  return start;
}

}  // namespace cpu
}  // namespace tandem::kernels

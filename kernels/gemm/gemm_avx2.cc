// AVX2/FMA GEMM path (compiled with -mavx2 -mfma): B packed into 16-column panels, A into 6-row
// panels, a 6x16 register-blocked micro-kernel, cache blocking over N, M and K. Every output
// element stays one fp32 FMA chain over k ascending: between k-blocks its partial sum is parked in
// c as an fp32 value (a bit-exact round trip), edge tiles run the same per-lane FMAs on fewer rows
// or on a padded copy, so a row's bits depend neither on M, on its tile, nor on the thread count.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/core/tensor.h"
#include "kernels/gemm/gemm_internal.h"

namespace tandem::kernels::cpu::internal {
namespace {

constexpr int64_t kMr = 6;     // rows per micro-tile: 12 accumulators + 2 B vectors + 1 A broadcast
constexpr int64_t kNr = 16;    // columns per micro-tile (two ymm registers)
constexpr int64_t kKc = 256;   // k-block: one packed 16-column B panel (16 KiB) stays in L1
constexpr int64_t kMc = 144;   // rows of A packed per block (144 KiB, stays in L2)
constexpr int64_t kNc = 2048;  // columns of B packed per block (2 MiB, L2/L3)

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// How a micro-tile treats c: overwrite with the k-sum, continue a k-sum parked in c by the previous
// k-block, or add the finished k-sum to the old c (accumulate with a single k-block).
enum class Store { kOverwrite, kContinue, kAdd };

// c[R, 16] (ldc) op= ap[kc, 6] (first R used) x bp[kc, 16]; one FMA chain per element, k ascending.
// The accumulators are named variables, not an array, so the compiler keeps all 12 in registers.
template <int R>
void MicroKernel(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, Store mode) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
// Token pasting builds the accumulator names, so the arguments cannot be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define TANDEM_GEMM_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define TANDEM_GEMM_LOAD(r)                     \
  if constexpr (r < R) {                        \
    c##r##0 = _mm256_loadu_ps(c + r * ldc);     \
    c##r##1 = _mm256_loadu_ps(c + r * ldc + 8); \
  }
#define TANDEM_GEMM_FMA(r)                                  \
  if constexpr (r < R) {                                    \
    const __m256 a = _mm256_broadcast_ss(ap + p * kMr + r); \
    c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);              \
    c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);              \
  }
#define TANDEM_GEMM_ADD(r)                                              \
  if constexpr (r < R) {                                                \
    c##r##0 = _mm256_add_ps(_mm256_loadu_ps(c + r * ldc), c##r##0);     \
    c##r##1 = _mm256_add_ps(_mm256_loadu_ps(c + r * ldc + 8), c##r##1); \
  }
#define TANDEM_GEMM_STORE(r)                    \
  if constexpr (r < R) {                        \
    _mm256_storeu_ps(c + r * ldc, c##r##0);     \
    _mm256_storeu_ps(c + r * ldc + 8, c##r##1); \
  }
  if (mode == Store::kContinue) {
    TANDEM_GEMM_ROWS(TANDEM_GEMM_LOAD)
  }
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(bp + p * kNr);
    const __m256 b1 = _mm256_loadu_ps(bp + p * kNr + 8);
    TANDEM_GEMM_ROWS(TANDEM_GEMM_FMA)
  }
  if (mode == Store::kAdd) {
    TANDEM_GEMM_ROWS(TANDEM_GEMM_ADD)
  }
  TANDEM_GEMM_ROWS(TANDEM_GEMM_STORE)
#undef TANDEM_GEMM_STORE
#undef TANDEM_GEMM_ADD
#undef TANDEM_GEMM_FMA
#undef TANDEM_GEMM_LOAD
#undef TANDEM_GEMM_ROWS
  // NOLINTEND(bugprone-macro-parentheses)
}

void MicroKernelRows(int rows, int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc,
                     Store mode) {
  switch (rows) {
    case 1:
      return MicroKernel<1>(kc, ap, bp, c, ldc, mode);
    case 2:
      return MicroKernel<2>(kc, ap, bp, c, ldc, mode);
    case 3:
      return MicroKernel<3>(kc, ap, bp, c, ldc, mode);
    case 4:
      return MicroKernel<4>(kc, ap, bp, c, ldc, mode);
    case 5:
      return MicroKernel<5>(kc, ap, bp, c, ldc, mode);
    default:
      return MicroKernel<6>(kc, ap, bp, c, ldc, mode);
  }
}

// A micro-tile of `rows` x `cols` (<= 6 x 16) at c. A partial-width tile runs on a padded copy so
// it executes exactly the full-width arithmetic.
void Tile(int rows, int64_t cols, int64_t kc, const float* ap, const float* bp, float* c,
          int64_t ldc, Store mode) {
  if (cols == kNr) return MicroKernelRows(rows, kc, ap, bp, c, ldc, mode);
  alignas(32) float tmp[kMr * kNr] = {};  // [6, 16]
  for (int r = 0; r < rows && mode != Store::kOverwrite; ++r) {
    std::memcpy(tmp + r * kNr, c + r * ldc, cols * sizeof(float));
  }
  MicroKernelRows(rows, kc, ap, bp, tmp, kNr, mode);
  for (int r = 0; r < rows; ++r) std::memcpy(c + r * ldc, tmp + r * kNr, cols * sizeof(float));
}

void PrefetchTile(const float* c, int64_t ldc) {
  for (int64_t r = 0; r < kMr; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + kNr - 1), _MM_HINT_T0);
  }
}

// Transposes the 8x8 block at src (row stride lds) into dst (row stride ldd).
void Transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    for (int j = 0; j < 2; ++j) {
      r[i + j] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[i + j + 2] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], _MM_SHUFFLE(3, 2, 3, 2));
    }
  }
  // r[0..3] hold columns 0,2,1,3 (low lanes) / 4,6,5,7 (high lanes) of rows 0..3; r[4..7] of 4..7.
  constexpr int kOrder[4] = {0, 2, 1, 3};
  for (int q = 0; q < 4; ++q) {
    const int s = kOrder[q];
    _mm256_storeu_ps(dst + q * ldd, _mm256_permute2f128_ps(r[s], r[s + 4], 0x20));
    _mm256_storeu_ps(dst + (q + 4) * ldd, _mm256_permute2f128_ps(r[s], r[s + 4], 0x31));
  }
}

// Packs B(p0 .. p0+kc, j0 .. j0+nc) into 16-column panels: out[panel][p][16], zero-padded.
void PackB(const GemmArgs& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* out) {
  for (int64_t jp = 0; jp < nc; jp += kNr, out += kNr * kc) {
    const int64_t w = std::min(kNr, nc - jp);
    if (g.layout != GemmLayout::kNT) {  // B is [K, N]: each panel row is contiguous
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = g.b + (p0 + p) * g.ldb + j0 + jp;
        std::memcpy(out + p * kNr, src, w * sizeof(float));
        std::fill(out + p * kNr + w, out + (p + 1) * kNr, 0.0f);
      }
      continue;
    }
    const float* src = g.b + (j0 + jp) * g.ldb + p0;  // B is [N, K]: transpose
    int64_t p = 0;
    if (w == kNr) {
      for (; p + 8 <= kc; p += 8) {
        Transpose8x8(src + p, g.ldb, out + p * kNr, kNr);
        Transpose8x8(src + 8 * g.ldb + p, g.ldb, out + p * kNr + 8, kNr);
      }
    }
    for (; p < kc; ++p) {
      for (int64_t j = 0; j < kNr; ++j) out[p * kNr + j] = j < w ? src[j * g.ldb + p] : 0.0f;
    }
  }
}

// Packs A(i0 .. i0+mc, p0 .. p0+kc) into 6-row panels: out[panel][p][6], zero-padded.
void PackA(const GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* out) {
  for (int64_t ip = 0; ip < mc; ip += kMr, out += kMr * kc) {
    const int64_t h = std::min(kMr, mc - ip);
    for (int64_t r = 0; r < kMr; ++r) {
      if (r >= h) {
        for (int64_t p = 0; p < kc; ++p) out[p * kMr + r] = 0.0f;
      } else if (g.layout == GemmLayout::kTN) {  // A is [K, M]
        const float* src = g.a + p0 * g.lda + i0 + ip + r;
        for (int64_t p = 0; p < kc; ++p) out[p * kMr + r] = src[p * g.lda];
      } else {  // A is [M, K]
        const float* src = g.a + (i0 + ip + r) * g.lda + p0;
        for (int64_t p = 0; p < kc; ++p) out[p * kMr + r] = src[p];
      }
    }
  }
}

// Per-thread packing buffers, reused across calls (pool threads live as long as their Context).
// 64-byte aligned (Tensor memory), so no packed B vector straddles two cache lines.
struct Scratch {
  Tensor a, b;  // [kMc * kKc], [kKc * kNc] at most
  std::vector<float> saved;
};

float* Reserve(Tensor& buffer, int64_t n) {
  if (buffer.numel() < n) buffer = Tensor::Empty({n}, DType::kF32);
  return buffer.data<float>();
}
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// c[i0:i1, j0:j1] = the k-sums (or c + k-sums when `add` and K fits in one k-block).
void RunBlock(const GemmArgs& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool add,
              Scratch& s) {
  const int64_t nc = j1 - j0;
  float* bbuf = Reserve(s.b, CeilDiv(nc, kNr) * kNr * std::min(kKc, g.k));
  float* abuf = Reserve(s.a, std::min(kMc, CeilDiv(i1 - i0, kMr) * kMr) * std::min(kKc, g.k));
  for (int64_t p0 = 0; p0 < g.k; p0 += kKc) {
    const int64_t kc = std::min(kKc, g.k - p0);
    const Store mode = p0 > 0 ? Store::kContinue : add ? Store::kAdd : Store::kOverwrite;
    PackB(g, p0, kc, j0, nc, bbuf);
    for (int64_t ic = i0; ic < i1; ic += kMc) {
      const int64_t mc = std::min(kMc, i1 - ic);
      PackA(g, ic, mc, p0, kc, abuf);
      for (int64_t jp = 0; jp < nc; jp += kNr) {
        const float* bp = bbuf + jp * kc;
        for (int64_t ip = 0; ip < mc; ip += kMr) {
          // Fetch the next tile's c while this one computes: c is re-read every k-block.
          if (ip + kMr < mc) PrefetchTile(g.c + (ic + ip + kMr) * g.ldc + j0 + jp, g.ldc);
          Tile(static_cast<int>(std::min(kMr, mc - ip)), std::min(kNr, nc - jp), kc, abuf + ip * kc,
               bp, g.c + (ic + ip) * g.ldc + j0 + jp, g.ldc, mode);
        }
      }
    }
  }
}

// One task: c[i0:i1, j0:j1]. With accumulate and several k-blocks c holds partial sums meanwhile,
// so the old c is saved first and added once at the end, as the scalar path does.
void RunTask(const GemmArgs& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  Scratch& s = ThreadScratch();
  const int64_t nc = j1 - j0;
  if (!g.accumulate || g.k <= kKc) return RunBlock(g, i0, i1, j0, j1, g.accumulate, s);
  s.saved.resize((i1 - i0) * nc);
  for (int64_t i = i0; i < i1; ++i) {
    std::memcpy(s.saved.data() + (i - i0) * nc, g.c + i * g.ldc + j0, nc * sizeof(float));
  }
  RunBlock(g, i0, i1, j0, j1, /*add=*/false, s);
  for (int64_t i = i0; i < i1; ++i) {
    float* c = g.c + i * g.ldc + j0;
    const float* old = s.saved.data() + (i - i0) * nc;
    for (int64_t j = 0; j < nc; ++j) c[j] = old[j] + c[j];
  }
}

}  // namespace

void GemmAvx2(const Context& ctx, const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {  // empty k-sum: 0, as in the scalar path
    for (int64_t i = 0; i < g.m; ++i) {
      float* c = g.c + i * g.ldc;
      for (int64_t j = 0; j < g.n; ++j) c[j] = g.accumulate ? c[j] + 0.0f : 0.0f;
    }
    return;
  }
  // Tasks are output blocks; how they are cut only affects speed, never bits.
  const int64_t threads = ctx.num_threads();
  const int64_t nc = std::min(kNc, CeilDiv(CeilDiv(g.n, threads), kNr) * kNr);
  const int64_t n_tasks = CeilDiv(g.n, nc);
  const int64_t m_split = n_tasks >= threads ? 1 : CeilDiv(threads, n_tasks);
  const int64_t mr = CeilDiv(CeilDiv(g.m, m_split), kMr) * kMr;
  const int64_t m_tasks = CeilDiv(g.m, mr);
  ctx.ParallelFor(n_tasks * m_tasks, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = (t % m_tasks) * mr, j0 = (t / m_tasks) * nc;
      RunTask(g, i0, std::min(g.m, i0 + mr), j0, std::min(g.n, j0 + nc));
    }
  });
}

}  // namespace tandem::kernels::cpu::internal

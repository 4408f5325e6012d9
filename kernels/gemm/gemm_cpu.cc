// CPU GEMM: Tensor-level validation, run-time dispatch to the AVX2/FMA path (gemm_avx2.cc) and the
// portable scalar path. Both compute each output element as one fp32 FMA chain over k ascending,
// from 0, then add the old c once when accumulating, so the two paths agree bit for bit and rows
// are batch-invariant and thread-count-invariant (threads split output rows or tiles only).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/core/cpu_features.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm.h"
#include "kernels/gemm/gemm_internal.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/gemm/gemm_cuda.h"
#endif

namespace tandem::kernels {
namespace cpu {
namespace internal {

void GemmScalar(const Context& ctx, const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return;
  // Strides of A(i, p) and B(p, j) for the layout.
  const bool a_t = g.layout == GemmLayout::kTN;
  const bool b_t = g.layout == GemmLayout::kNT;
  const int64_t a_row = a_t ? 1 : g.lda, a_k = a_t ? g.lda : 1;
  const int64_t b_k = b_t ? 1 : g.ldb, b_col = b_t ? g.ldb : 1;
  ctx.ParallelFor(g.m, [&](int64_t r0, int64_t r1) {
    std::vector<float> acc(g.n);  // [N]
    for (int64_t i = r0; i < r1; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t p = 0; p < g.k; ++p) {
        const float a = g.a[i * a_row + p * a_k];
        const float* b = g.b + p * b_k;
        for (int64_t j = 0; j < g.n; ++j) acc[j] = std::fma(a, b[j * b_col], acc[j]);
      }
      float* c = g.c + i * g.ldc;
      for (int64_t j = 0; j < g.n; ++j) c[j] = g.accumulate ? c[j] + acc[j] : acc[j];
    }
  });
}

}  // namespace internal

namespace {
void Dispatch(const Context& ctx, const internal::GemmArgs& g) {
  if (CpuHasAvx2Fma()) {
    internal::GemmAvx2(ctx, g);
  } else {
    internal::GemmScalar(ctx, g);
  }
}
}  // namespace

void GemmNT(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  Dispatch(ctx, {internal::GemmLayout::kNT, m, n, k, a, lda, b, ldb, c, ldc, accumulate});
}

void GemmNN(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  Dispatch(ctx, {internal::GemmLayout::kNN, m, n, k, a, lda, b, ldb, c, ldc, accumulate});
}

void GemmTN(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  Dispatch(ctx, {internal::GemmLayout::kTN, m, n, k, a, lda, b, ldb, c, ldc, accumulate});
}

}  // namespace cpu

namespace {
absl::Status CheckOperands(const Tensor& a, const Tensor& b, const Tensor& c, int64_t m, int64_t n,
                           int64_t k, bool b_transposed) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", DType::kF32, {-1, -1}));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(b, "b", DType::kF32, {b_transposed ? n : k, b_transposed ? k : n}));
  return ExpectTensor(c, "c", DType::kF32, {m, n});
}
}  // namespace

absl::Status GemmNT(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::GemmNTPinned(ctx, a, b, c, accumulate));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", DType::kF32, {-1, -1}));
  int64_t m = a.dim(0), k = a.dim(1), n = b.rank() == 2 ? b.dim(0) : -1;
  TANDEM_RETURN_IF_ERROR(CheckOperands(a, b, c, m, n, k, /*b_transposed=*/true));
  cpu::GemmNT(ctx, m, n, k, a.data<float>(), k, b.data<float>(), k, c.data<float>(), n, accumulate);
  return absl::OkStatus();
}

absl::Status GemmNN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::GemmNN(ctx, a, b, c, accumulate));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", DType::kF32, {-1, -1}));
  int64_t m = a.dim(0), k = a.dim(1), n = b.rank() == 2 ? b.dim(1) : -1;
  TANDEM_RETURN_IF_ERROR(CheckOperands(a, b, c, m, n, k, /*b_transposed=*/false));
  cpu::GemmNN(ctx, m, n, k, a.data<float>(), k, b.data<float>(), n, c.data<float>(), n, accumulate);
  return absl::OkStatus();
}

absl::Status GemmTN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::GemmTN(ctx, a, b, c, accumulate));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", DType::kF32, {-1, -1}));
  int64_t k = a.dim(0), m = a.dim(1), n = b.rank() == 2 ? b.dim(1) : -1;
  TANDEM_RETURN_IF_ERROR(CheckOperands(a, b, c, m, n, k, /*b_transposed=*/false));
  cpu::GemmTN(ctx, m, n, k, a.data<float>(), m, b.data<float>(), n, c.data<float>(), n, accumulate);
  return absl::OkStatus();
}

}  // namespace tandem::kernels

// CPU GEMM. Each output element is one fp32 fused-multiply-add chain over k ascending, so rows are
// batch-invariant and the thread count never changes a bit (threads split output rows only).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm.h"

namespace tandem::kernels {
namespace cpu {

void GemmNT(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  ctx.ParallelFor(m, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        float acc = 0.0f;
        for (int64_t p = 0; p < k; ++p) acc = std::fma(a[i * lda + p], b[j * ldb + p], acc);
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc : acc;
      }
    }
  });
}

void GemmNN(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  ctx.ParallelFor(m, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        float acc = 0.0f;
        for (int64_t p = 0; p < k; ++p) acc = std::fma(a[i * lda + p], b[p * ldb + j], acc);
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc : acc;
      }
    }
  });
}

void GemmTN(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  ctx.ParallelFor(m, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        float acc = 0.0f;
        for (int64_t p = 0; p < k; ++p) acc = std::fma(a[p * lda + i], b[p * ldb + j], acc);
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc : acc;
      }
    }
  });
}

}  // namespace cpu

namespace {
absl::Status CheckOperands(const Tensor& a, const Tensor& b, const Tensor& c, int64_t m,
                           int64_t n, int64_t k, bool b_transposed) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", DType::kF32, {-1, -1}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(b, "b", DType::kF32,
                                      {b_transposed ? n : k, b_transposed ? k : n}));
  return ExpectTensor(c, "c", DType::kF32, {m, n});
}
}  // namespace

absl::Status GemmNT(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", DType::kF32, {-1, -1}));
  int64_t m = a.dim(0), k = a.dim(1), n = b.rank() == 2 ? b.dim(0) : -1;
  TANDEM_RETURN_IF_ERROR(CheckOperands(a, b, c, m, n, k, /*b_transposed=*/true));
  cpu::GemmNT(ctx, m, n, k, a.data<float>(), k, b.data<float>(), k, c.data<float>(), n,
              accumulate);
  return absl::OkStatus();
}

absl::Status GemmNN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", DType::kF32, {-1, -1}));
  int64_t m = a.dim(0), k = a.dim(1), n = b.rank() == 2 ? b.dim(1) : -1;
  TANDEM_RETURN_IF_ERROR(CheckOperands(a, b, c, m, n, k, /*b_transposed=*/false));
  cpu::GemmNN(ctx, m, n, k, a.data<float>(), k, b.data<float>(), n, c.data<float>(), n,
              accumulate);
  return absl::OkStatus();
}

absl::Status GemmTN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", DType::kF32, {-1, -1}));
  int64_t k = a.dim(0), m = a.dim(1), n = b.rank() == 2 ? b.dim(1) : -1;
  TANDEM_RETURN_IF_ERROR(CheckOperands(a, b, c, m, n, k, /*b_transposed=*/false));
  cpu::GemmTN(ctx, m, n, k, a.data<float>(), m, b.data<float>(), n, c.data<float>(), n,
              accumulate);
  return absl::OkStatus();
}

}  // namespace tandem::kernels

// GEMM on row-major fp32 matrices, in the three layouts a linear layer needs:
//   forward     C[M,N]  = A[M,K]  · B[N,K]ᵀ   (B is a weight in HF layout [out, in])   GemmNT
//   input grad  C[M,N]  = A[M,K]  · B[K,N]                                           GemmNN
//   weight grad C[M,N]  = A[K,M]ᵀ · B[K,N]    (dW = dYᵀ · X)                          GemmTN
//
// Numerics (contract rule 1): every output element is accumulated over k in ascending order in
// fp32 with fused multiply-adds, using one fixed blocking for every M, N and thread count. So a row
// of C depends only on the same row of A and on B, bitwise: batch size, the other rows and the
// number of threads never change it. Threads split the output tiles only, never a k-reduction.
// With `accumulate`, C += result instead of C = result (the addition happens once per element,
// after the k-sum).
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

// c[M,N] = a[M,K] · b[N,K]ᵀ.
absl::Status GemmNT(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate = false);
// c[M,N] = a[M,K] · b[K,N].
absl::Status GemmNN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate = false);
// c[M,N] = a[K,M]ᵀ · b[K,N].
absl::Status GemmTN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate = false);

namespace cpu {
// Raw-pointer entry points with explicit leading dimensions (elements), for callers that work on
// sub-matrices (e.g. one expert's rows). Same numerics as above.
void GemmNT(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);
void GemmNN(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);
void GemmTN(const Context& ctx, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);
}  // namespace cpu

}  // namespace tandem::kernels

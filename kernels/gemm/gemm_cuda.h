// GEMM on the GPU for the forward layout C[M,N] = A[M,K] · B[N,K]ᵀ (B is a weight [out, in]).
//
// Numerics (contract rule 1): one fixed tile configuration for every M, N and K, no split-K, so
// each output element is one fp32 accumulator that walks k in ascending 16-wide steps (one tensor
// core m16n8k16 instruction each). A row of C therefore depends only on its row of A and on B,
// bitwise: the batch size and the row's position in the batch never change it.
//   b bf16: bf16 tensor-core products, fp32 accumulation. a is bf16, or f32 rounded to bf16
//           (nearest-even) as it is loaded; c is f32, or bf16 rounded once from the fp32 result.
//   b f32:  all fp32 (router, fp32 LM head): one fp32 FMA chain over k ascending per element,
//           the same arithmetic as the CPU GEMM (kernels/gemm/gemm.h), c f32.
// With `accumulate`, c = c + result in fp32, once per element after the k-sum.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// c[M,N] = a[M,K] · b[N,K]ᵀ; all three on the GPU (dtypes as above).
absl::Status GemmNT(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate = false);

// Raw-pointer form with leading dimensions (elements), for sub-matrices such as one expert's rows.
struct GemmNTArgs {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;  // [m, k], row stride lda
  DType a_dtype = DType::kBF16;
  int64_t lda = 0;
  const void* b = nullptr;  // [n, k], row stride ldb
  DType b_dtype = DType::kBF16;
  int64_t ldb = 0;
  void* c = nullptr;  // [m, n], row stride ldc
  DType c_dtype = DType::kF32;
  int64_t ldc = 0;
  bool accumulate = false;
};
absl::Status GemmNT(cudaStream_t stream, const GemmNTArgs& args);

// The tile every bf16 GEMM uses, whatever M: exposed for benchmarks and tests.
inline constexpr int kGemmTileM = 128;
inline constexpr int kGemmTileN = 128;
inline constexpr int kGemmTileK = 32;

}  // namespace tandem::kernels::cuda

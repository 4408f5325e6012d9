// The two CPU GEMM code paths behind cpu::GemmNT/NN/TN, exposed so tests can call each one directly
// and check that they agree bitwise (both compute every output element as one fp32 FMA chain over k
// ascending, then the optional `accumulate` add). Not for use outside kernels/gemm and its tests.
#pragma once

#include <cstdint>

#include "kernels/core/context.h"

namespace tandem::kernels::cpu::internal {

enum class GemmLayout { kNT, kNN, kTN };

// One GEMM call on raw row-major pointers; leading dimensions are in elements.
//   kNT: a [m, k] (lda), b [n, k] (ldb)     kNN: a [m, k], b [k, n]     kTN: a [k, m], b [k, n]
// c is [m, n] (ldc) in every layout.
struct GemmArgs {
  GemmLayout layout;
  int64_t m, n, k;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  bool accumulate;
};

// Portable path: one std::fma chain per output element. Threads split rows of c.
void GemmScalar(const Context& ctx, const GemmArgs& g);

// AVX2/FMA path (gemm_avx2.cc): packed panels, 6x16 micro-kernel. REQUIRES: CpuHasAvx2Fma().
void GemmAvx2(const Context& ctx, const GemmArgs& g);

}  // namespace tandem::kernels::cpu::internal

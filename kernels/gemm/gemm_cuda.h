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
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// ---- cuBLASLt with a pinned algorithm ----------------------------------------------------------
// The same product through cuBLASLt, with ONE algorithm per weight shape for every M (contract
// rule 1). The first call for a shape key (N, K, lda, ldb, ldc, c dtype) pins the algorithm by
// the first of these rules that yields one, and that algorithm then runs every M of the shape:
//   1. "table": a fixed configuration for (N, K, c dtype) measured on the model's weight shapes
//      (gemm_cublaslt.cu, kAlgoTable; filled from bench/gpu/gemm_sweep_cuda_bench --sweep), used
//      only on the GPU architecture and cuBLASLt major version it was measured with and only when
//      cublasLtMatmulAlgoCheck accepts it at every M of kGemmLtProbeM;
//   2. "heuristic at M=4096": the heuristic, asked once at M = kGemmLtReferenceM for algorithms
//      without split-K or reduction; the first one AlgoCheck accepts at every probe M;
//   3. "ours": shapes cuBLASLt cannot take this way (f32 a or b, K or a leading dimension that
//      leaves rows not 16-byte aligned, K = 0, no qualifying algorithm) run our GemmNT for EVERY M.
// A call whose M the pinned algorithm rejects fails (FailedPrecondition) rather than switching.
// No rule looks at M or at timings taken at run time: the choice depends on the GPU, the cuBLASLt
// version and the key only, so every process on the same setup pins the same algorithm. Pointers
// must be 16-byte aligned (InvalidArgument if not). State (handle, 32 MiB workspace, pinned
// algorithms) lives in ctx.Resource("cublaslt").
inline constexpr int64_t kGemmLtReferenceM = 4096;
inline constexpr int64_t kGemmLtProbeM[] = {
    1, 2, 3, 8, 17, 37, 64, 100, 128, 255, 512, 1000, 1024, 2048, 4096, 8192, 16384, 32768, 65536};

absl::Status GemmNTPinned(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                          bool accumulate = false);
absl::Status GemmNTPinned(const Context& ctx, const GemmNTArgs& args);

// Which path the shape of `args` takes (M is ignored) and, for cuBLASLt, the pinned algorithm's
// configuration ("algo=.. tile=.. stages=.. ..."). Pins on first use, like GemmNTPinned.
struct GemmPinnedInfo {
  bool cublaslt = false;
  std::string algo;  // empty for our kernel; else the reason is in `why`
  std::string why;   // why our kernel is used, when it is
  std::string rule;  // the rule that decided: "table", "heuristic at M=4096[ (note)]" or "ours"
};
absl::StatusOr<GemmPinnedInfo> GemmNTPinnedInfo(const Context& ctx, const GemmNTArgs& args);

// ---- Backward layouts: GemmNN and GemmTN -------------------------------------------------------
// c[M,N] = a[M,K] · b[K,N]    (input grad dX = dY · W, W [out, in]: M tokens, K = out, N = in)
// c[M,N] = a[K,M]ᵀ · b[K,N]   (weight grad dW = dYᵀ · X: the k-sum runs over K tokens)
// Dtypes as for GemmNT: b bf16 takes a bf16 or f32 (f32 a is rounded to bf16, nearest-even, as
// if on load) and c f32 or bf16 (one rounding of the fp32 result); b f32 makes a and c f32 and the
// arithmetic all fp32. `accumulate`: c = c + result in fp32, once per element after the k-sum.
// Paths, chosen from the shape key only (never from the varying dimension: M for GemmNN, K for
// GemmTN), and pinned per key like GemmNTPinned (heuristic once at a reference size, split-K 1,
// no reduction, AlgoCheck at a set of probe sizes; no table):
//   cuBLASLt: a and b bf16 (an f32 a is first rounded into a bf16 copy), 16-byte aligned rows;
//   ours:     anything else (b f32, unaligned leading dimensions, K = 0, no qualifying algorithm):
//             a tiled fp32 kernel, one FMA chain per element over k ascending from 0, on the
//             bf16-rounded (or f32) values: bit for bit the CPU GEMM of kernels/gemm/gemm.h.
// Deterministic everywhere (no atomics, no data-independent split-K). GemmNN rows are
// batch-invariant on both paths. GemmTN on cuBLASLt splits the K tokens into consecutive chunks of
// kGemmTnChunk (the last one shorter) and runs the pinned algorithm once per chunk into one fp32
// sum: chunk 0 writes its product P_0, chunk j > 0 adds P_j through beta = 1 (one fp32 rounding),
// so result = (..((P_0 + P_1) + P_2) ..) in ascending chunk order. The sum lives in c itself (c
// f32 and not `accumulate` over several chunks) or in a per-context fp32 workspace, which then
// goes into c in one pass (c (+)= sum, one rounding to c's dtype). GemmNN with a bf16 c and
// `accumulate` runs the product into the fp32 workspace with the algorithm pinned for the f32-c
// key, then c = bf16(c + product) (cuBLASLt's bf16 epilogue with beta = 1 rounds more than once).
// The workspace (ctx.Resource("gemm_backward_workspace")) is kept and reused between calls; it
// also holds the bf16 copy of an f32 a, by chunk (TN) or by slice of rows (NN). The chunking
// starts at the call's first token, so a token range split differently across calls
// (micro-batches accumulated with `accumulate`) agrees within fp32 rounding of the different
// association, not bitwise.
inline constexpr int64_t kGemmTnChunk = 4096;

// Raw form: a [m, k] (GemmNN) or [k, m] (GemmTN) with row stride lda; b [k, n] with row stride
// ldb; c [m, n] with row stride ldc (all in elements).
struct GemmBackwardArgs {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  DType a_dtype = DType::kBF16;
  int64_t lda = 0;
  const void* b = nullptr;
  DType b_dtype = DType::kBF16;
  int64_t ldb = 0;
  void* c = nullptr;
  DType c_dtype = DType::kF32;
  int64_t ldc = 0;
  bool accumulate = false;
};

// c[M,N] = a[M,K] · b[K,N]; all three on the GPU.
absl::Status GemmNN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate = false);
absl::Status GemmNN(const Context& ctx, const GemmBackwardArgs& args);
// c[M,N] = a[K,M]ᵀ · b[K,N]; all three on the GPU.
absl::Status GemmTN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate = false);
absl::Status GemmTN(const Context& ctx, const GemmBackwardArgs& args);

// The path the shape key of `args` takes (pins on first use), as GemmNTPinnedInfo.
absl::StatusOr<GemmPinnedInfo> GemmNNPinnedInfo(const Context& ctx, const GemmBackwardArgs& args);
absl::StatusOr<GemmPinnedInfo> GemmTNPinnedInfo(const Context& ctx, const GemmBackwardArgs& args);

}  // namespace tandem::kernels::cuda

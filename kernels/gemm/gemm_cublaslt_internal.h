// The cuBLASLt state and helpers that the pinned forward GEMM (gemm_cublaslt.cu) and the backward
// layouts (gemm_backward.cu) share: one handle, one workspace and one table of pinned algorithms
// per context (ctx.Resource("cublaslt")), and the heuristic query restricted to algorithms without
// split-K or reduction. Not for use outside kernels/gemm.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda::internal {

inline constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;

absl::Status LtStatus(cublasStatus_t s, const char* what);
#define TANDEM_LT_RETURN_IF_ERROR(expr) \
  TANDEM_RETURN_IF_ERROR(::tandem::kernels::cuda::internal::LtStatus((expr), #expr))

// One pinned choice for a shape key: a cuBLASLt algorithm, or our kernel (cublaslt == false).
struct Pinned {
  bool cublaslt = false;
  cublasLtMatmulAlgo_t algo{};
  std::string description, why, rule;
  std::set<int64_t> checked_m;  // M values AlgoCheck accepted
  // GemmNN / GemmTN: (M or K, leading dimension of the output) pairs AlgoCheck accepted.
  std::set<std::pair<int64_t, int64_t>> checked_size_ld;
};

// GemmNT: (N, K, lda, ldb, ldc, a dtype, b dtype, c dtype).
using ShapeKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, DType, DType, DType>;
// GemmNN / GemmTN: (layout 'N' or 'T', the two dimensions fixed for a weight, lda, ldb, ldc,
// a dtype, b dtype, c dtype).
using BackwardKey =
    std::tuple<char, int64_t, int64_t, int64_t, int64_t, int64_t, DType, DType, DType>;

// The per-context cuBLASLt state.
struct LtState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::mutex mu;
  std::map<ShapeKey, std::shared_ptr<Pinned>> pinned;
  std::map<BackwardKey, std::shared_ptr<Pinned>> pinned_backward;
  int sm = 0;        // compute capability of the context's device, major * 10 + minor
  int lt_major = 0;  // major version of the cuBLASLt library loaded (not the headers')
  ~LtState();
};

absl::StatusOr<LtState*> LtStateOf(const Context& ctx);

template <typename T>
T AlgoConfig(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  T v{};
  size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written);
  return v;
}

// "algo=.. tile=.. stages=.. splitk=.. ..."
std::string DescribeAlgo(const cublasLtMatmulAlgo_t& a);

// Up to `max_results` heuristic answers for the problem (workspace within kLtWorkspaceBytes, no
// reduction scheme, 16-byte alignment of every operand); returns how many were written (0 when
// the heuristic query itself fails; an error if the preference cannot be built). Callers still
// filter out split-K > 1 and check each candidate.
absl::StatusOr<int> LtHeuristic(LtState& st, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                                cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                cublasLtMatmulHeuristicResult_t* results, int max_results);

// True for a heuristic answer without split-K or reduction.
bool LtNoSplitK(const cublasLtMatmulAlgo_t& algo);

}  // namespace tandem::kernels::cuda::internal

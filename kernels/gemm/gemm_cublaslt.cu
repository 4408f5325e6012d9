// cuda::GemmNTPinned: C = A · Bᵀ through cuBLASLt with one algorithm pinned per weight shape.
// Batch invariance (contract rule 1) needs the same tile configuration and k order for every M;
// cuBLASLt's heuristic would pick per M (split-K at small M), so the algorithm comes either from a
// fixed table of configurations measured for the model's weight shapes (kAlgoTable), or, for other
// shapes, from the heuristic asked once, at a reference M, restricted to no split-K and no
// reduction; either way the answer is reused for every M.
// Row-major C[M,N] = A[M,K]·B[N,K]ᵀ is column-major Cᵀ[N,M] = op_T(B)·A: cuBLASLt's "A" is our B.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm_cublaslt_internal.h"
#include "kernels/gemm/gemm_cuda.h"
#include "kernels/gemm/gemm_cuda_internal.h"

namespace tandem::kernels::cuda {
namespace {

using internal::AlgoConfig;
using internal::kLtWorkspaceBytes;
using internal::LtState;
using internal::Pinned;
using internal::ShapeKey;
constexpr size_t kWorkspaceBytes = kLtWorkspaceBytes;
constexpr int kHeuristicResults = 32;

absl::StatusOr<LtState*> StateOf(const Context& ctx) { return internal::LtStateOf(ctx); }
std::string Describe(const cublasLtMatmulAlgo_t& a) { return internal::DescribeAlgo(a); }

// Descriptors for one M, in caller-owned opaque storage (no allocation per call).
struct Descs {
  cublasLtMatmulDescOpaque_t op_storage;
  cublasLtMatrixLayoutOpaque_t a_storage, b_storage, c_storage;
  cublasLtMatmulDesc_t op() { return &op_storage; }
  cublasLtMatrixLayout_t a() { return &a_storage; }  // cuBLASLt's A: our B as [K, N]
  cublasLtMatrixLayout_t b() { return &b_storage; }  // cuBLASLt's B: our A as [K, M]
  cublasLtMatrixLayout_t c() { return &c_storage; }  // C and D: our C as [N, M]
};

absl::Status InitDescs(const GemmNTArgs& g, int64_t m, Descs& d) {
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescInit(d.op(), CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(d.op(), CUBLASLT_MATMUL_DESC_TRANSA,
                                                           &trans_a, sizeof(trans_a)));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(d.op(), CUBLASLT_MATMUL_DESC_TRANSB,
                                                           &trans_b, sizeof(trans_b)));
  const cudaDataType_t ct = g.c_dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutInit(d.a(), CUDA_R_16BF, g.k, g.n, g.ldb));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutInit(d.b(), CUDA_R_16BF, g.k, m, g.lda));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutInit(d.c(), ct, g.n, m, g.ldc));
  return absl::OkStatus();
}

// True when cuBLASLt accepts `algo` for M = m within our workspace.
bool AlgoValidFor(LtState& st, const GemmNTArgs& g, const cublasLtMatmulAlgo_t& algo, int64_t m) {
  Descs d;
  if (!InitDescs(g, m, d).ok()) return false;
  cublasLtMatmulHeuristicResult_t result{};
  return cublasLtMatmulAlgoCheck(st.handle, d.op(), d.a(), d.b(), d.c(), d.c(), &algo, &result) ==
             CUBLAS_STATUS_SUCCESS &&
         result.workspaceSize <= kWorkspaceBytes;
}

// Why cuBLASLt cannot take this shape at all (empty when it can).
std::string ShapeIneligible(const GemmNTArgs& g) {
  if (g.a_dtype != DType::kBF16 || g.b_dtype != DType::kBF16) return "a or b is not bf16";
  if (g.k == 0) return "K = 0";
  const int64_t c_align = g.c_dtype == DType::kBF16 ? 8 : 4;
  if (g.k % 8 != 0 || g.lda % 8 != 0 || g.ldb % 8 != 0 || g.ldc % c_align != 0) {
    return "K or a leading dimension leaves rows not 16-byte aligned";
  }
  return "";
}

// ---- Rule 1: the table. One configuration per model weight shape, chosen from
// `gemm_sweep_cuda_bench --sweep` on an H200: among the split-K-1 candidates whose rows came out
// bitwise identical for every M, the one with the best worst-case speed relative to cuBLAS over
// M >= 1024. An entry applies only on the architecture and cuBLASLt major version it was measured
// with (algorithm, tile and cluster ids are not promised stable across either) and only when
// cublasLtMatmulAlgoCheck accepts it at every probe M; otherwise rule 2 (the heuristic) decides.
// Nothing here depends on M, so the table keeps contract rule 1 by construction.
struct AlgoEntry {
  int64_t n, k;
  DType c_dtype;  // a and b are bf16: the only inputs cuBLASLt takes here
  int sm;         // compute capability, major * 10 + minor
  int lt_major;   // cublasLtGetVersion() / 10000
  int32_t algo_id;
  uint32_t tile, stages, swizzle, custom;
  uint16_t inner, cluster;
};
// Measured 2026-11-28 on an H200 (sm_90, cuBLASLt 13): worst case over M = 1024..16384 of
// cuBLAS time / ours, 0.84-1.02 (docs/benchmarks.md, "H200: GEMM").
constexpr std::array<AlgoEntry, 14> kAlgoTable{{
    AlgoEntry{6144, 2048, DType::kF32, 90, 13, 66, 31, 35, 0, 7, 0, 5},
    AlgoEntry{3072, 2048, DType::kF32, 90, 13, 66, 28, 35, 0, 0, 0, 3},
    AlgoEntry{2048, 2048, DType::kF32, 90, 13, 66, 21, 35, 0, 3, 0, 5},
    AlgoEntry{5120, 2048, DType::kF32, 90, 13, 66, 197, 35, 0, 2, 0, 5},
    AlgoEntry{2048, 5120, DType::kF32, 90, 13, 66, 20, 35, 0, 1, 0, 3},
    AlgoEntry{512, 2048, DType::kF32, 90, 13, 66, 400, 35, 0, 3, 0, 9},
    AlgoEntry{2048, 512, DType::kF32, 90, 13, 66, 20, 35, 0, 1, 0, 3},
    AlgoEntry{6144, 2048, DType::kBF16, 90, 13, 66, 20, 35, 0, 1, 0, 3},
    AlgoEntry{3072, 2048, DType::kBF16, 90, 13, 66, 31, 35, 0, 7, 0, 5},
    AlgoEntry{2048, 2048, DType::kBF16, 90, 13, 66, 20, 35, 0, 1, 0, 3},
    AlgoEntry{5120, 2048, DType::kBF16, 90, 13, 66, 248, 35, 0, 7, 0, 5},
    AlgoEntry{2048, 5120, DType::kBF16, 90, 13, 66, 20, 35, 0, 1, 0, 3},
    AlgoEntry{512, 2048, DType::kBF16, 90, 13, 66, 17, 35, 0, 0, 0, 3},
    AlgoEntry{2048, 512, DType::kBF16, 90, 13, 66, 20, 35, 0, 1, 0, 3},
}};

const AlgoEntry* TableEntryFor(const LtState& st, const GemmNTArgs& g) {
  for (const AlgoEntry& e : kAlgoTable) {
    if (e.n == g.n && e.k == g.k && e.c_dtype == g.c_dtype && e.sm == st.sm &&
        e.lt_major == st.lt_major) {
      return &e;
    }
  }
  return nullptr;
}

template <typename T>
bool SetConfig(cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr, T value) {
  return cublasLtMatmulAlgoConfigSetAttribute(&algo, attr, &value, sizeof(value)) ==
         CUBLAS_STATUS_SUCCESS;
}

bool AlgoFromEntry(const LtState& st, const GemmNTArgs& g, const AlgoEntry& e,
                   cublasLtMatmulAlgo_t& algo) {
  const cudaDataType_t ct = g.c_dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
  return cublasLtMatmulAlgoInit(st.handle, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF,
                                ct, ct, e.algo_id, &algo) == CUBLAS_STATUS_SUCCESS &&
         SetConfig(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, e.tile) &&
         SetConfig(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, e.stages) &&
         SetConfig(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, int32_t{1}) &&
         SetConfig(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                   uint32_t{CUBLASLT_REDUCTION_SCHEME_NONE}) &&
         SetConfig(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, e.swizzle) &&
         SetConfig(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, e.custom) &&
         SetConfig(algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, e.inner) &&
         SetConfig(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, e.cluster);
}

bool ValidEverywhere(LtState& st, const GemmNTArgs& g, const cublasLtMatmulAlgo_t& algo) {
  for (int64_t m : kGemmLtProbeM) {
    if (!AlgoValidFor(st, g, algo, m)) return false;
  }
  return true;
}

void Accept(const cublasLtMatmulAlgo_t& algo, std::string rule, Pinned& p) {
  p.cublaslt = true;
  p.algo = algo;
  p.description = Describe(algo);
  p.rule = std::move(rule);
  for (int64_t m : kGemmLtProbeM) p.checked_m.insert(m);
}

// ---- Rule 2: the heuristic, asked once at kGemmLtReferenceM for algorithms without split-K or
// reduction; the first one valid at every probe M wins.
absl::Status PinByHeuristic(LtState& st, const GemmNTArgs& g, const std::string& note, Pinned& p) {
  Descs d;
  TANDEM_RETURN_IF_ERROR(InitDescs(g, kGemmLtReferenceM, d));
  cublasLtMatmulHeuristicResult_t results[kHeuristicResults];
  TANDEM_ASSIGN_OR_RETURN(const int found, internal::LtHeuristic(st, d.op(), d.a(), d.b(), d.c(),
                                                                 results, kHeuristicResults));
  for (int i = 0; i < found; ++i) {
    const cublasLtMatmulAlgo_t& algo = results[i].algo;
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    if (!internal::LtNoSplitK(algo)) continue;
    if (!ValidEverywhere(st, g, algo)) continue;
    Accept(algo, absl::StrCat("heuristic at M=", kGemmLtReferenceM, note), p);
    return absl::OkStatus();
  }
  p.why = absl::StrCat("no algorithm without split-K valid at every probe M (", found,
                       " heuristic results)", note);
  p.rule = "ours";
  return absl::OkStatus();
}

absl::Status Pin(LtState& st, const GemmNTArgs& g, Pinned& p) {
  p.why = ShapeIneligible(g);
  if (!p.why.empty()) {
    p.rule = "ours";
    return absl::OkStatus();
  }
  std::string note;
  if (const AlgoEntry* e = TableEntryFor(st, g)) {
    cublasLtMatmulAlgo_t algo{};
    if (AlgoFromEntry(st, g, *e, algo) && ValidEverywhere(st, g, algo)) {
      Accept(algo, "table", p);
      return absl::OkStatus();
    }
    note = " (the table entry was rejected by cublasLtMatmulAlgoCheck)";
  }
  return PinByHeuristic(st, g, note, p);
}

absl::StatusOr<std::shared_ptr<Pinned>> PinnedFor(LtState& st, const GemmNTArgs& g) {
  const ShapeKey key{g.n, g.k, g.lda, g.ldb, g.ldc, g.a_dtype, g.b_dtype, g.c_dtype};
  std::lock_guard<std::mutex> lock(st.mu);
  std::shared_ptr<Pinned>& p = st.pinned[key];
  if (p == nullptr) {
    auto fresh = std::make_shared<Pinned>();
    TANDEM_RETURN_IF_ERROR(Pin(st, g, *fresh));
    p = fresh;
  }
  return p;
}

absl::Status RunPinned(const Context& ctx, LtState& st, Pinned& p, const GemmNTArgs& g) {
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (!p.checked_m.count(g.m)) {
      if (!AlgoValidFor(st, g, p.algo, g.m)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "GemmNTPinned: the algorithm pinned for N=", g.n, " K=", g.k, " (", p.description,
            ") is not valid at M=", g.m, "; refusing to switch algorithms within a shape"));
      }
      p.checked_m.insert(g.m);
    }
  }
  const auto aligned16 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  TANDEM_CHECK_ARG(aligned16(g.a), "a: GemmNTPinned needs a 16-byte aligned pointer");
  TANDEM_CHECK_ARG(aligned16(g.b), "b: GemmNTPinned needs a 16-byte aligned pointer");
  TANDEM_CHECK_ARG(aligned16(g.c), "c: GemmNTPinned needs a 16-byte aligned pointer");
  Descs d;
  TANDEM_RETURN_IF_ERROR(InitDescs(g, g.m, d));
  const float alpha = 1.0f, beta = g.accumulate ? 1.0f : 0.0f;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmul(st.handle, d.op(), &alpha, g.b, d.a(), g.a, d.b(), &beta,
                                           g.c, d.c(), g.c, d.c(), &p.algo, st.workspace,
                                           kWorkspaceBytes, StreamOf(ctx)));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GemmPinnedInfo> GemmNTPinnedInfo(const Context& ctx, const GemmNTArgs& args) {
  TANDEM_ASSIGN_OR_RETURN(LtState * st, StateOf(ctx));
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Pinned> p, PinnedFor(*st, args));
  return GemmPinnedInfo{p->cublaslt, p->description, p->why, p->rule};
}

absl::Status GemmNTPinned(const Context& ctx, const GemmNTArgs& args) {
  // Argument checks, and the dtype rules, are GemmNT's (it validates before launching anything).
  GemmNTArgs empty = args;
  empty.m = 0;
  TANDEM_RETURN_IF_ERROR(GemmNT(StreamOf(ctx), empty));
  if (args.m == 0 || args.n == 0) return absl::OkStatus();
  TANDEM_CHECK_ARG(args.c != nullptr, "c: null pointer");
  TANDEM_CHECK_ARG(args.k == 0 || (args.a != nullptr && args.b != nullptr), "a, b: null pointer");
  TANDEM_ASSIGN_OR_RETURN(LtState * st, StateOf(ctx));
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Pinned> p, PinnedFor(*st, args));
  if (!p->cublaslt) return GemmNT(StreamOf(ctx), args);
  return RunPinned(ctx, *st, *p, args);
}

absl::Status GemmNTPinned(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                          bool accumulate) {
  TANDEM_ASSIGN_OR_RETURN(GemmNTArgs args, internal::TensorGemmArgs(a, b, c, accumulate));
  return GemmNTPinned(ctx, args);
}

namespace internal {

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": status ", static_cast<int>(s)));
}

LtState::~LtState() {
  // A context that lives until exit (a static) is destroyed after the CUDA runtime has unloaded;
  // the process frees everything then, and calling into cuBLASLt would not be safe.
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  if (workspace != nullptr) cudaFree(workspace);
  if (handle != nullptr) cublasLtDestroy(handle);
}

absl::StatusOr<LtState*> LtStateOf(const Context& ctx) {
  auto slot = ctx.Resource("cublaslt", [] {
    auto st = std::make_shared<LtState>();
    if (cublasLtCreate(&st->handle) != CUBLAS_STATUS_SUCCESS) st->handle = nullptr;
    if (cudaMalloc(&st->workspace, kLtWorkspaceBytes) != cudaSuccess) {
      cudaGetLastError();
      st->workspace = nullptr;
    }
    int device = 0, major = 0, minor = 0;
    if (cudaGetDevice(&device) == cudaSuccess &&
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess) {
      st->sm = major * 10 + minor;
    }
    cudaGetLastError();
    st->lt_major = static_cast<int>(cublasLtGetVersion() / 10000);
    return std::static_pointer_cast<void>(st);
  });
  auto* st = static_cast<LtState*>(slot.get());
  if (st->handle == nullptr || st->workspace == nullptr) {
    return absl::InternalError("cuBLASLt: cannot create the handle or its workspace");
  }
  return st;
}

std::string DescribeAlgo(const cublasLtMatmulAlgo_t& a) {
  return absl::StrCat("algo=", AlgoConfig<int32_t>(a, CUBLASLT_ALGO_CONFIG_ID),
                      " tile=", AlgoConfig<uint32_t>(a, CUBLASLT_ALGO_CONFIG_TILE_ID),
                      " stages=", AlgoConfig<uint32_t>(a, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                      " splitk=", AlgoConfig<int32_t>(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                      " reduction=", AlgoConfig<uint32_t>(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
                      " swizzle=", AlgoConfig<uint32_t>(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                      " custom=", AlgoConfig<uint32_t>(a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION),
                      " inner=", AlgoConfig<uint16_t>(a, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID),
                      " cluster=", AlgoConfig<uint16_t>(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
}

absl::StatusOr<int> LtHeuristic(LtState& st, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                                cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                cublasLtMatmulHeuristicResult_t* results, int max_results) {
  cublasLtMatmulPreferenceOpaque_t pref_storage;
  cublasLtMatmulPreference_t pref = &pref_storage;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceInit(pref));
  const uint64_t ws = kLtWorkspaceBytes;
  const uint32_t no_reduction = CUBLASLT_REDUCTION_SCHEME_NONE, align = 16;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &no_reduction, sizeof(no_reduction)));
  for (auto attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    TANDEM_LT_RETURN_IF_ERROR(
        cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
  }
  int found = 0;
  if (cublasLtMatmulAlgoGetHeuristic(st.handle, op, a, b, c, c, pref, max_results, results,
                                     &found) != CUBLAS_STATUS_SUCCESS) {
    found = 0;
  }
  return found;
}

bool LtNoSplitK(const cublasLtMatmulAlgo_t& algo) {
  return AlgoConfig<int32_t>(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) <= 1 &&
         AlgoConfig<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) ==
             CUBLASLT_REDUCTION_SCHEME_NONE;
}

}  // namespace internal

}  // namespace tandem::kernels::cuda

// cuda::GemmNN (input grad, c = a · b) and cuda::GemmTN (weight grad, c = aᵀ · b): argument
// checks, the per-shape-key choice between cuBLASLt with a pinned split-K-1 algorithm and our
// fallback kernel, and GemmTN's fixed chunking of the token dimension (gemm_cuda.h, "Backward").
// Row-major to column-major: c[M,N] is cuBLASLt's D[N,M] = A[N,K] · op(B), with cuBLASLt's A our
// b (b[K,N] row-major is an [N,K] column-major matrix) and its B our a: [K,M] column-major (NN,
// op N) or [M,K] column-major (TN, a[K,M] row-major, op T).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm_backward_internal.h"
#include "kernels/gemm/gemm_cublaslt_internal.h"
#include "kernels/gemm/gemm_cuda.h"
#include "kernels/gemm/gemm_cuda_internal.h"

namespace tandem::kernels::cuda {
namespace {

using internal::LtState;
using internal::Pinned;

constexpr int kHeuristicResults = 32;
constexpr int64_t kReferenceSize = 4096;  // M for GemmNN, K (one full chunk) for GemmTN
// GemmNN slices (rows) when a call needs workspace.
constexpr int64_t kSliceBytes = int64_t{64} << 20;
constexpr int64_t kTnProbeK[] = {1, 2, 3, 8, 17, 37, 100, 1000, 2048, 4095, kGemmTnChunk};

// One cuBLASLt call: trans_a == GemmTN; the output D (= C when accumulating) has dtype d_dtype
// and leading dimension ldd: c itself, or the fp32 workspace product (ldd = WsLd(n)).
struct Problem {
  bool tn = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldd = 0;
  DType d_dtype = DType::kF32;
};

struct Descs {
  cublasLtMatmulDescOpaque_t op_storage;
  cublasLtMatrixLayoutOpaque_t a_storage, b_storage, c_storage;
  cublasLtMatmulDesc_t op() { return &op_storage; }
  cublasLtMatrixLayout_t a() { return &a_storage; }  // our b as [N, K] column-major
  cublasLtMatrixLayout_t b() { return &b_storage; }  // our a
  cublasLtMatrixLayout_t c() { return &c_storage; }  // our c as [N, M] column-major
};

absl::Status InitDescs(const Problem& q, Descs& d) {
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescInit(d.op(), CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = q.tn ? CUBLAS_OP_T : CUBLAS_OP_N;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(d.op(), CUBLASLT_MATMUL_DESC_TRANSA,
                                                           &trans_a, sizeof(trans_a)));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(d.op(), CUBLASLT_MATMUL_DESC_TRANSB,
                                                           &trans_b, sizeof(trans_b)));
  const cudaDataType_t dt = q.d_dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutInit(d.a(), CUDA_R_16BF, q.n, q.k, q.ldb));
  TANDEM_LT_RETURN_IF_ERROR(q.tn ? cublasLtMatrixLayoutInit(d.b(), CUDA_R_16BF, q.m, q.k, q.lda)
                                 : cublasLtMatrixLayoutInit(d.b(), CUDA_R_16BF, q.k, q.m, q.lda));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutInit(d.c(), dt, q.n, q.m, q.ldd));
  return absl::OkStatus();
}

bool Valid(LtState& st, const Problem& q, const cublasLtMatmulAlgo_t& algo) {
  Descs d;
  if (!InitDescs(q, d).ok()) return false;
  cublasLtMatmulHeuristicResult_t result{};
  return cublasLtMatmulAlgoCheck(st.handle, d.op(), d.a(), d.b(), d.c(), d.c(), &algo, &result) ==
             CUBLAS_STATUS_SUCCESS &&
         result.workspaceSize <= internal::kLtWorkspaceBytes;
}

// Leading dimension of an fp32 product in the workspace: rows 32-byte aligned.
int64_t WsLd(int64_t n) { return (n + 7) / 8 * 8; }

// GemmTN writes fp32 always: straight into an f32 c, or into the workspace sum.
bool TnDirect(const GemmBackwardArgs& g) { return g.c_dtype == DType::kF32; }

// The problem for the call `g` (a already bf16) at the varying size `size` (M for NN, K for TN),
// writing c (`into_c`) or the fp32 workspace product.
Problem ProblemOf(bool tn, const GemmBackwardArgs& g, int64_t size, bool into_c) {
  Problem q{tn, g.m, g.n, g.k, g.lda, g.ldb, WsLd(g.n), DType::kF32};
  if (into_c) q.ldd = g.ldc, q.d_dtype = tn ? DType::kF32 : g.c_dtype;
  (tn ? q.k : q.m) = size;
  return q;
}

// Every probe size, for each output the key's calls can write (GemmTN with an f32 c: c or the
// workspace sum, the latter when accumulating over more than one chunk).
bool ValidEverywhere(LtState& st, bool tn, const GemmBackwardArgs& g,
                     const cublasLtMatmulAlgo_t& algo) {
  if (!tn) {
    for (int64_t m : kGemmLtProbeM) {
      if (!Valid(st, ProblemOf(false, g, m, true), algo)) return false;
    }
    return true;
  }
  for (int64_t k : kTnProbeK) {
    if (!Valid(st, ProblemOf(true, g, k, false), algo)) return false;
    if (TnDirect(g) && !Valid(st, ProblemOf(true, g, k, true), algo)) return false;
  }
  return true;
}

std::string Ineligible(bool tn, const GemmBackwardArgs& g) {
  if (g.a_dtype != DType::kBF16 || g.b_dtype != DType::kBF16) return "a or b is not bf16";
  if (!tn && g.k == 0) return "K = 0";  // GemmTN keys leave K out; Run handles K = 0
  const int64_t c_align = g.c_dtype == DType::kBF16 ? 8 : 4;
  if (g.lda % 8 != 0 || g.ldb % 8 != 0 || (!tn && g.k % 8 != 0) || g.ldc % c_align != 0 ||
      (tn && g.n % 4 != 0)) {
    return "a leading dimension leaves rows not 16-byte aligned";
  }
  return "";
}

absl::Status Pin(LtState& st, bool tn, const GemmBackwardArgs& g, Pinned& p) {
  p.rule = "ours";
  p.why = Ineligible(tn, g);
  if (!p.why.empty()) return absl::OkStatus();
  Descs d;
  TANDEM_RETURN_IF_ERROR(InitDescs(ProblemOf(tn, g, kReferenceSize, !tn || TnDirect(g)), d));
  cublasLtMatmulHeuristicResult_t results[kHeuristicResults];
  TANDEM_ASSIGN_OR_RETURN(const int found, internal::LtHeuristic(st, d.op(), d.a(), d.b(), d.c(),
                                                                 results, kHeuristicResults));
  for (int i = 0; i < found; ++i) {
    const cublasLtMatmulAlgo_t& algo = results[i].algo;
    if (results[i].state != CUBLAS_STATUS_SUCCESS || !internal::LtNoSplitK(algo)) continue;
    if (!ValidEverywhere(st, tn, g, algo)) continue;
    p.cublaslt = true;
    p.algo = algo;
    p.description = internal::DescribeAlgo(algo);
    p.rule = absl::StrCat("heuristic at ", tn ? "K=" : "M=", kReferenceSize);
    p.why.clear();
    return absl::OkStatus();
  }
  p.why = absl::StrCat("no algorithm without split-K valid at every probe size (", found,
                       " heuristic results)");
  return absl::OkStatus();
}

// The key of a call: M (NN) or K (TN) left out.
absl::StatusOr<std::shared_ptr<Pinned>> PinnedFor(LtState& st, bool tn, const GemmBackwardArgs& g) {
  const internal::BackwardKey key{tn ? 'T' : 'N', tn ? g.m : g.k, g.n,       g.lda,    g.ldb,
                                  g.ldc,          g.a_dtype,      g.b_dtype, g.c_dtype};
  std::lock_guard<std::mutex> lock(st.mu);
  std::shared_ptr<Pinned>& p = st.pinned_backward[key];
  if (p == nullptr) {
    auto fresh = std::make_shared<Pinned>();
    TANDEM_RETURN_IF_ERROR(Pin(st, tn, g, *fresh));
    p = fresh;
  }
  return p;
}

// AlgoCheck for the size a call actually uses, once per (size, output ld); never switches
// algorithms.
absl::Status CheckOnce(LtState& st, Pinned& p, const Problem& q) {
  std::lock_guard<std::mutex> lock(st.mu);
  const std::pair<int64_t, int64_t> key{q.tn ? q.k : q.m, q.ldd};
  if (p.checked_size_ld.count(key)) return absl::OkStatus();
  if (!Valid(st, q, p.algo)) {
    return absl::FailedPreconditionError(
        absl::StrCat(q.tn ? "GemmTN" : "GemmNN", ": the algorithm pinned for this shape (",
                     p.description, ") is not valid at ", q.tn ? "K=" : "M=", key.first,
                     " (output ld ", q.ldd, "); refusing to switch algorithms within a shape"));
  }
  p.checked_size_ld.insert(key);
  return absl::OkStatus();
}

// One cublasLtMatmul: out = product, or out = product + out (`add`: beta = 1, one rounding).
absl::Status Matmul(LtState& st, Pinned& p, const Problem& q, const void* a, const void* b,
                    void* out, bool add, cudaStream_t stream) {
  TANDEM_RETURN_IF_ERROR(CheckOnce(st, p, q));
  Descs d;
  TANDEM_RETURN_IF_ERROR(InitDescs(q, d));
  const float alpha = 1.0f, beta = add ? 1.0f : 0.0f;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmul(st.handle, d.op(), &alpha, b, d.a(), a, d.b(), &beta,
                                           out, d.c(), out, d.c(), &p.algo, st.workspace,
                                           internal::kLtWorkspaceBytes, stream));
  return absl::OkStatus();
}

const uint16_t* Bf16At(const void* p, int64_t offset) {
  return static_cast<const uint16_t*>(p) + offset;
}

// GemmTN over consecutive chunks of kGemmTnChunk tokens (the last one shorter): chunk 0's product
// starts the fp32 sum, chunk j > 0 adds its product through beta = 1 (sum = P_j + sum, one
// rounding), in ascending order. The sum is c itself (f32 c, and not accumulating over several
// chunks) or the workspace, which then goes into c once: c (+)= sum. `a32`: the f32 a, if any,
// rounded chunk by chunk into the workspace.
absl::Status RunTn(LtState& st, Pinned& p, internal::Workspace& ws, const GemmBackwardArgs& g,
                   const float* a32, int64_t lda32, cudaStream_t s) {
  const int64_t chunks = (g.k + kGemmTnChunk - 1) / kGemmTnChunk, lds = WsLd(g.n);
  const bool direct = TnDirect(g) && (!g.accumulate || chunks == 1);
  const int64_t sum_bytes = direct ? 0 : g.m * lds * int64_t{sizeof(float)};
  const int64_t copy_bytes = a32 != nullptr ? std::min(g.k, kGemmTnChunk) * g.lda * 2 : 0;
  char* w = nullptr;
  if (sum_bytes + copy_bytes > 0) {
    TANDEM_CUDA_RETURN_IF_ERROR(internal::Reserve(ws, sum_bytes + copy_bytes, s, &w));
  }
  float* sum = direct ? static_cast<float*>(g.c) : reinterpret_cast<float*>(w);
  for (int64_t j = 0; j < chunks; ++j) {
    const int64_t k0 = j * kGemmTnChunk, kj = std::min(kGemmTnChunk, g.k - k0);
    const void* a =
        a32 == nullptr ? static_cast<const void*>(Bf16At(g.a, k0 * g.lda)) : w + sum_bytes;
    if (a32 != nullptr) {
      TANDEM_CUDA_RETURN_IF_ERROR(
          internal::LaunchRoundToBf16(s, a32 + k0 * lda32, lda32, w + sum_bytes, g.lda, kj, g.m));
    }
    TANDEM_RETURN_IF_ERROR(Matmul(st, p, ProblemOf(true, g, kj, direct), a, Bf16At(g.b, k0 * g.ldb),
                                  sum, j > 0 || (direct && g.accumulate), s));
  }
  if (direct) return absl::OkStatus();
  TANDEM_CUDA_RETURN_IF_ERROR(
      internal::LaunchAddInto(s, sum, lds, g.m, g.n, g.c, g.ldc, g.c_dtype, g.accumulate));
  return absl::OkStatus();
}

// Rows per GemmNN slice when a call needs workspace: a power of two (>= 64) within kSliceBytes.
int64_t SliceRows(int64_t row_bytes, int64_t m) {
  int64_t rows = 64;
  while (rows < m && 2 * rows * row_bytes <= kSliceBytes) rows *= 2;
  return std::min(rows, m);
}

// GemmNN: one call into c, or (f32 a rounded into the workspace; bf16 c accumulated through an
// fp32 product, as cuBLASLt's bf16 epilogue with beta = 1 does not add once) slices of rows.
// Rows do not depend on M, so slicing leaves every bit as one call. `p`: for an accumulating
// bf16 c, the pin of the f32 product's key (f32 c, ldc = WsLd(n)).
absl::Status RunNn(LtState& st, Pinned& p, internal::Workspace& ws, const GemmBackwardArgs& g,
                   const float* a32, int64_t lda32, cudaStream_t s) {
  const bool via_f32 = g.c_dtype == DType::kBF16 && g.accumulate;
  if (a32 == nullptr && !via_f32) {
    return Matmul(st, p, ProblemOf(false, g, g.m, true), g.a, g.b, g.c, g.accumulate, s);
  }
  GemmBackwardArgs f = g;  // what cuBLASLt writes
  if (via_f32) f.c_dtype = DType::kF32, f.ldc = WsLd(g.n), f.accumulate = false;
  const int64_t prod_row = via_f32 ? f.ldc * int64_t{sizeof(float)} : 0;
  const int64_t row_bytes = prod_row + (a32 != nullptr ? g.lda * 2 : 0);
  const int64_t rows = SliceRows(row_bytes, g.m);
  char* w = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(internal::Reserve(ws, rows * row_bytes, s, &w));
  char* copy = w + rows * prod_row;
  const int64_t c_size = g.c_dtype == DType::kBF16 ? 2 : 4;
  for (int64_t r0 = 0; r0 < g.m; r0 += rows) {
    const int64_t mr = std::min(rows, g.m - r0);
    if (a32 != nullptr) {
      TANDEM_CUDA_RETURN_IF_ERROR(
          internal::LaunchRoundToBf16(s, a32 + r0 * lda32, lda32, copy, g.lda, mr, g.k));
    }
    const void* a = a32 != nullptr ? static_cast<const void*>(copy) : Bf16At(g.a, r0 * g.lda);
    char* c = static_cast<char*>(g.c) + r0 * g.ldc * c_size;
    TANDEM_RETURN_IF_ERROR(Matmul(st, p, ProblemOf(false, f, mr, true), a, g.b,
                                  via_f32 ? static_cast<void*>(w) : c, f.accumulate, s));
    if (via_f32) {
      TANDEM_CUDA_RETURN_IF_ERROR(internal::LaunchAddInto(
          s, reinterpret_cast<const float*>(w), f.ldc, mr, g.n, c, g.ldc, g.c_dtype, true));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckArgs(bool tn, const GemmBackwardArgs& g) {
  TANDEM_RETURN_IF_ERROR(internal::CheckGemmDtypes(g.m, g.n, g.k, g.a_dtype, g.b_dtype, g.c_dtype));
  const int64_t a_cols = tn ? g.m : g.k;
  TANDEM_CHECK_ARG(g.lda >= a_cols, "lda: expected >= ", a_cols, ", got ", g.lda);
  TANDEM_CHECK_ARG(g.ldb >= g.n, "ldb: expected >= n = ", g.n, ", got ", g.ldb);
  TANDEM_CHECK_ARG(g.ldc >= g.n, "ldc: expected >= n = ", g.n, ", got ", g.ldc);
  return internal::CheckGemmPointers(g.m, g.n, g.k, g.a, g.b, g.c);
}

// The arguments cuBLASLt sees: an f32 a (with a bf16 b) becomes a bf16 copy with rows padded to 8.
GemmBackwardArgs LtArgs(bool tn, const GemmBackwardArgs& g) {
  GemmBackwardArgs h = g;
  if (g.a_dtype == DType::kF32 && g.b_dtype == DType::kBF16) {
    h.a_dtype = DType::kBF16;
    h.lda = ((tn ? g.m : g.k) + 7) / 8 * 8;
    h.a = nullptr;
  }
  return h;
}

absl::StatusOr<std::shared_ptr<Pinned>> PinnedOf(const Context& ctx, bool tn,
                                                 const GemmBackwardArgs& args, LtState** st) {
  TANDEM_ASSIGN_OR_RETURN(*st, internal::LtStateOf(ctx));
  return PinnedFor(**st, tn, LtArgs(tn, args));
}

absl::Status Run(const Context& ctx, bool tn, const GemmBackwardArgs& args) {
  TANDEM_RETURN_IF_ERROR(CheckArgs(tn, args));
  if (args.m == 0 || args.n == 0) return absl::OkStatus();
  const cudaStream_t s = StreamOf(ctx);
  LtState* st = nullptr;
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Pinned> p, PinnedOf(ctx, tn, args, &st));
  const GemmBackwardArgs g = LtArgs(tn, args);
  if (p->cublaslt && !tn && g.c_dtype == DType::kBF16 && g.accumulate && g.k > 0) {
    GemmBackwardArgs f = g;  // the fp32 product's key
    f.c_dtype = DType::kF32, f.ldc = WsLd(g.n);
    TANDEM_ASSIGN_OR_RETURN(p, PinnedFor(*st, false, f));
  }
  if (!p->cublaslt || args.k == 0) {  // K = 0: c = 0, or c unchanged up to c + 0
    TANDEM_CUDA_RETURN_IF_ERROR(internal::LaunchGemmBackwardFallback(s, args, tn));
    return absl::OkStatus();
  }
  const auto aligned16 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  TANDEM_CHECK_ARG(args.a_dtype != DType::kBF16 || aligned16(args.a),
                   "a: the cuBLASLt path needs a 16-byte aligned pointer");
  TANDEM_CHECK_ARG(aligned16(args.b), "b: the cuBLASLt path needs a 16-byte aligned pointer");
  TANDEM_CHECK_ARG(aligned16(args.c), "c: the cuBLASLt path needs a 16-byte aligned pointer");
  const float* a32 = g.a == nullptr ? static_cast<const float*>(args.a) : nullptr;
  internal::Workspace& ws = internal::WorkspaceOf(ctx);
  std::lock_guard<std::mutex> lock(ws.mu);
  return tn ? RunTn(*st, *p, ws, g, a32, args.lda, s) : RunNn(*st, *p, ws, g, a32, args.lda, s);
}

absl::StatusOr<GemmBackwardArgs> TensorArgs(bool tn, const Tensor& a, const Tensor& b, Tensor& c,
                                            bool accumulate) {
  const DType bt = b.dtype() == DType::kF32 ? DType::kF32 : DType::kBF16;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(b, "b", bt, {-1, -1}, Device::kCUDA));
  const int64_t k = b.dim(0), n = b.dim(1);
  const DType at = bt == DType::kF32 || a.dtype() == DType::kF32 ? DType::kF32 : DType::kBF16;
  if (tn) {
    TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", at, {k, -1}, Device::kCUDA));
  } else {
    TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", at, {-1, k}, Device::kCUDA));
  }
  const int64_t m = tn ? a.dim(1) : a.dim(0);
  const DType ct = bt == DType::kF32 || c.dtype() == DType::kF32 ? DType::kF32 : DType::kBF16;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(c, "c", ct, {m, n}, Device::kCUDA));
  GemmBackwardArgs args;
  args.m = m, args.n = n, args.k = k;
  args.a = a.raw_data(), args.a_dtype = at, args.lda = tn ? m : k;
  args.b = b.raw_data(), args.b_dtype = bt, args.ldb = n;
  args.c = c.raw_data(), args.c_dtype = ct, args.ldc = n;
  args.accumulate = accumulate;
  return args;
}

absl::StatusOr<GemmPinnedInfo> Info(const Context& ctx, bool tn, const GemmBackwardArgs& args) {
  TANDEM_RETURN_IF_ERROR(CheckArgs(tn, args));
  LtState* st = nullptr;
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Pinned> p, PinnedOf(ctx, tn, args, &st));
  return GemmPinnedInfo{p->cublaslt, p->description, p->why, p->rule};
}

}  // namespace

absl::Status GemmNN(const Context& ctx, const GemmBackwardArgs& args) {
  return Run(ctx, false, args);
}
absl::Status GemmTN(const Context& ctx, const GemmBackwardArgs& args) {
  return Run(ctx, true, args);
}

absl::Status GemmNN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_ASSIGN_OR_RETURN(GemmBackwardArgs args, TensorArgs(false, a, b, c, accumulate));
  return Run(ctx, false, args);
}
absl::Status GemmTN(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_ASSIGN_OR_RETURN(GemmBackwardArgs args, TensorArgs(true, a, b, c, accumulate));
  return Run(ctx, true, args);
}

absl::StatusOr<GemmPinnedInfo> GemmNNPinnedInfo(const Context& ctx, const GemmBackwardArgs& args) {
  return Info(ctx, false, args);
}
absl::StatusOr<GemmPinnedInfo> GemmTNPinnedInfo(const Context& ctx, const GemmBackwardArgs& args) {
  return Info(ctx, true, args);
}

}  // namespace tandem::kernels::cuda

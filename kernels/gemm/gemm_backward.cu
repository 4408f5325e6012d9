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

namespace tandem::kernels::cuda {
namespace {

using internal::LtState;
using internal::Pinned;

constexpr int kHeuristicResults = 32;
constexpr int64_t kReferenceSize = 4096;  // M for GemmNN, K (one full chunk) for GemmTN
// GemmTN chunk products kept at once (a bound on the scratch; the sum order does not depend on it).
constexpr int64_t kChunkScratchBytes = int64_t{256} << 20;
constexpr int64_t kTnProbeK[] = {1, 2, 3, 8, 17, 37, 100, 1000, 2048, 4095, kGemmTnChunk};
constexpr int kTnProbeBatch[] = {2, 3, 4, 8, 16};

// One cuBLASLt problem: trans_a == GemmTN; batch 0 = a plain call, writing c (ld ldc, c dtype);
// batch >= 1 = `batch` consecutive chunks of k rows, writing f32 products [batch, m, n].
struct Problem {
  bool tn = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  DType c_dtype = DType::kF32;
  int batch = 0;
};

struct Descs {
  cublasLtMatmulDescOpaque_t op_storage;
  cublasLtMatrixLayoutOpaque_t a_storage, b_storage, c_storage;
  cublasLtMatmulDesc_t op() { return &op_storage; }
  cublasLtMatrixLayout_t a() { return &a_storage; }  // our b as [N, K] column-major
  cublasLtMatrixLayout_t b() { return &b_storage; }  // our a
  cublasLtMatrixLayout_t c() { return &c_storage; }  // our c as [N, M] column-major
};

absl::Status SetBatch(cublasLtMatrixLayout_t l, int batch, int64_t stride) {
  const int32_t count = batch;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                             &count, sizeof(count)));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
      l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  return absl::OkStatus();
}

absl::Status InitDescs(const Problem& q, Descs& d) {
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescInit(d.op(), CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = q.tn ? CUBLAS_OP_T : CUBLAS_OP_N;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(d.op(), CUBLASLT_MATMUL_DESC_TRANSA,
                                                           &trans_a, sizeof(trans_a)));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(d.op(), CUBLASLT_MATMUL_DESC_TRANSB,
                                                           &trans_b, sizeof(trans_b)));
  const bool parts = q.batch > 0;
  const cudaDataType_t ct = !parts && q.c_dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutInit(d.a(), CUDA_R_16BF, q.n, q.k, q.ldb));
  TANDEM_LT_RETURN_IF_ERROR(q.tn ? cublasLtMatrixLayoutInit(d.b(), CUDA_R_16BF, q.m, q.k, q.lda)
                                 : cublasLtMatrixLayoutInit(d.b(), CUDA_R_16BF, q.k, q.m, q.lda));
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutInit(d.c(), ct, q.n, q.m, parts ? q.n : q.ldc));
  if (parts) {
    TANDEM_RETURN_IF_ERROR(SetBatch(d.a(), q.batch, kGemmTnChunk * q.ldb));
    TANDEM_RETURN_IF_ERROR(SetBatch(d.b(), q.batch, kGemmTnChunk * q.lda));
    TANDEM_RETURN_IF_ERROR(SetBatch(d.c(), q.batch, q.m * q.n));
  }
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

// The problem for the call `g` (a already bf16) at the varying size `size` (M for NN, K for TN).
Problem ProblemOf(bool tn, const GemmBackwardArgs& g, int64_t size, int batch) {
  Problem q{tn, g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.c_dtype, batch};
  (tn ? q.k : q.m) = size;
  return q;
}

// GemmNN: every probe M, plain calls. GemmTN: the chunk products at every probe K and batch count,
// and plain calls into c at every probe K when c is f32 (the one-chunk shortcut).
bool ValidEverywhere(LtState& st, bool tn, const GemmBackwardArgs& g,
                     const cublasLtMatmulAlgo_t& algo) {
  if (!tn) {
    for (int64_t m : kGemmLtProbeM) {
      if (!Valid(st, ProblemOf(false, g, m, 0), algo)) return false;
    }
    return true;
  }
  for (int64_t k : kTnProbeK) {
    if (!Valid(st, ProblemOf(true, g, k, 1), algo)) return false;
    if (g.c_dtype == DType::kF32 && !Valid(st, ProblemOf(true, g, k, 0), algo)) return false;
  }
  for (int batch : kTnProbeBatch) {
    if (!Valid(st, ProblemOf(true, g, kGemmTnChunk, batch), algo)) return false;
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
  TANDEM_RETURN_IF_ERROR(InitDescs(ProblemOf(tn, g, kReferenceSize, tn ? 1 : 0), d));
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

// AlgoCheck for the size a call actually uses, once per (size, batch); never switches algorithms.
absl::Status CheckOnce(LtState& st, Pinned& p, const Problem& q) {
  std::lock_guard<std::mutex> lock(st.mu);
  const std::pair<int64_t, int64_t> key{q.tn ? q.k : q.m, q.batch};
  if (p.checked_kb.count(key)) return absl::OkStatus();
  if (!Valid(st, q, p.algo)) {
    return absl::FailedPreconditionError(
        absl::StrCat(q.tn ? "GemmTN" : "GemmNN", ": the algorithm pinned for this shape (",
                     p.description, ") is not valid at ", q.tn ? "K=" : "M=", key.first, " batch ",
                     q.batch, "; refusing to switch algorithms within a shape"));
  }
  p.checked_kb.insert(key);
  return absl::OkStatus();
}

// One cublasLtMatmul: c (+)= product (batch 0), or the products of q.batch chunks into `out`.
absl::Status Matmul(LtState& st, Pinned& p, const Problem& q, const void* a, const void* b,
                    void* out, bool accumulate, cudaStream_t stream) {
  TANDEM_RETURN_IF_ERROR(CheckOnce(st, p, q));
  Descs d;
  TANDEM_RETURN_IF_ERROR(InitDescs(q, d));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  TANDEM_LT_RETURN_IF_ERROR(cublasLtMatmul(st.handle, d.op(), &alpha, b, d.a(), a, d.b(), &beta,
                                           out, d.c(), out, d.c(), &p.algo, st.workspace,
                                           internal::kLtWorkspaceBytes, stream));
  return absl::OkStatus();
}

// GemmTN over consecutive chunks of kGemmTnChunk tokens: groups of chunk products (one batched
// call for the full chunks, one plain call for a short last chunk) summed in ascending order.
absl::Status RunTnChunks(LtState& st, Pinned& p, const GemmBackwardArgs& g, float* scratch,
                         int64_t group, cudaStream_t s) {
  const int64_t chunks = (g.k + kGemmTnChunk - 1) / kGemmTnChunk, full = g.k / kGemmTnChunk;
  const int64_t slot = g.m * g.n;
  float* parts = scratch + slot;  // scratch: [sum, group products]
  const auto a_at = [&](int64_t chunk) {
    return static_cast<const uint16_t*>(g.a) + chunk * kGemmTnChunk * g.lda;
  };
  const auto b_at = [&](int64_t chunk) {
    return static_cast<const uint16_t*>(g.b) + chunk * kGemmTnChunk * g.ldb;
  };
  for (int64_t c0 = 0; c0 < chunks; c0 += group) {
    const int64_t c1 = std::min(chunks, c0 + group), full_end = std::min(c1, full);
    if (full_end > c0) {
      const Problem q = ProblemOf(true, g, kGemmTnChunk, static_cast<int>(full_end - c0));
      TANDEM_RETURN_IF_ERROR(Matmul(st, p, q, a_at(c0), b_at(c0), parts, false, s));
    }
    if (full_end < c1) {  // the short last chunk
      const Problem q = ProblemOf(true, g, g.k - full * kGemmTnChunk, 1);
      TANDEM_RETURN_IF_ERROR(
          Matmul(st, p, q, a_at(full), b_at(full), parts + (full_end - c0) * slot, false, s));
    }
    internal::ChunkSum sum;
    sum.parts = parts, sum.count = static_cast<int>(c1 - c0), sum.sum = scratch;
    sum.first = c0 == 0, sum.last = c1 == chunks;
    sum.m = g.m, sum.n = g.n, sum.c = g.c, sum.ldc = g.ldc, sum.accumulate = g.accumulate;
    TANDEM_CUDA_RETURN_IF_ERROR(internal::LaunchSumChunks(s, sum, g.c_dtype));
  }
  return absl::OkStatus();
}

absl::Status RunTn(LtState& st, Pinned& p, const GemmBackwardArgs& g, cudaStream_t s) {
  if (g.k <= kGemmTnChunk && g.c_dtype == DType::kF32) {
    return Matmul(st, p, ProblemOf(true, g, g.k, 0), g.a, g.b, g.c, g.accumulate, s);
  }
  const int64_t chunks = (g.k + kGemmTnChunk - 1) / kGemmTnChunk;
  const int64_t slot_bytes = g.m * g.n * int64_t{sizeof(float)};
  const int64_t group = std::clamp<int64_t>(kChunkScratchBytes / slot_bytes - 1, 1, chunks);
  float* scratch = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMallocAsync(reinterpret_cast<void**>(&scratch), (group + 1) * slot_bytes, s));
  const absl::Status status = RunTnChunks(st, p, g, scratch, group, s);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(scratch, s));
  return status;
}

bool IsFloating(DType t) { return t == DType::kF32 || t == DType::kBF16; }

absl::Status CheckArgs(bool tn, const GemmBackwardArgs& g) {
  TANDEM_CHECK_ARG(g.m >= 0 && g.n >= 0 && g.k >= 0, "gemm: negative size m=", g.m, " n=", g.n,
                   " k=", g.k);
  TANDEM_CHECK_ARG(IsFloating(g.a_dtype), "a: expected f32 or bf16, got ", DTypeName(g.a_dtype));
  TANDEM_CHECK_ARG(IsFloating(g.b_dtype), "b: expected f32 or bf16, got ", DTypeName(g.b_dtype));
  TANDEM_CHECK_ARG(IsFloating(g.c_dtype), "c: expected f32 or bf16, got ", DTypeName(g.c_dtype));
  if (g.b_dtype == DType::kF32) {
    TANDEM_CHECK_ARG(g.a_dtype == DType::kF32, "a: expected f32 with an f32 b, got ",
                     DTypeName(g.a_dtype));
    TANDEM_CHECK_ARG(g.c_dtype == DType::kF32, "c: expected f32 with an f32 b, got ",
                     DTypeName(g.c_dtype));
  }
  const int64_t a_cols = tn ? g.m : g.k;
  TANDEM_CHECK_ARG(g.lda >= a_cols, "lda: expected >= ", a_cols, ", got ", g.lda);
  TANDEM_CHECK_ARG(g.ldb >= g.n, "ldb: expected >= n = ", g.n, ", got ", g.ldb);
  TANDEM_CHECK_ARG(g.ldc >= g.n, "ldc: expected >= n = ", g.n, ", got ", g.ldc);
  const bool reads = g.m > 0 && g.n > 0 && g.k > 0;
  TANDEM_CHECK_ARG(!reads || g.a != nullptr, "a: null pointer");
  TANDEM_CHECK_ARG(!reads || g.b != nullptr, "b: null pointer");
  TANDEM_CHECK_ARG(g.m == 0 || g.n == 0 || g.c != nullptr, "c: null pointer");
  return absl::OkStatus();
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
  if (!p->cublaslt || args.k == 0) {  // K = 0: c = 0, or c unchanged up to c + 0
    TANDEM_CUDA_RETURN_IF_ERROR(internal::LaunchGemmBackwardFallback(s, args, tn));
    return absl::OkStatus();
  }
  const auto aligned16 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  TANDEM_CHECK_ARG(args.a_dtype != DType::kBF16 || aligned16(args.a),
                   "a: the cuBLASLt path needs a 16-byte aligned pointer");
  TANDEM_CHECK_ARG(aligned16(args.b), "b: the cuBLASLt path needs a 16-byte aligned pointer");
  TANDEM_CHECK_ARG(aligned16(args.c), "c: the cuBLASLt path needs a 16-byte aligned pointer");
  GemmBackwardArgs g = LtArgs(tn, args);
  void* copy = nullptr;
  if (g.a == nullptr) {  // round the f32 a into a bf16 copy
    const int64_t rows = tn ? g.k : g.m, cols = tn ? g.m : g.k;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&copy, rows * g.lda * 2, s));
    TANDEM_CUDA_RETURN_IF_ERROR(internal::LaunchRoundToBf16(s, static_cast<const float*>(args.a),
                                                            args.lda, copy, g.lda, rows, cols));
    g.a = copy;
  }
  const absl::Status status =
      tn ? RunTn(*st, *p, g, s)
         : Matmul(*st, *p, ProblemOf(false, g, g.m, 0), g.a, g.b, g.c, g.accumulate, s);
  if (copy != nullptr) TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(copy, s));
  return status;
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

// cuda::GemmNT: argument checks and the choice between the two GPU GEMM kernels, which depends
// only on dtypes (never on M), so one weight always goes through one kernel with one tile.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm_cuda.h"
#include "kernels/gemm/gemm_cuda_internal.h"

namespace tandem::kernels::cuda {
namespace {

absl::Status CheckArgs(const GemmNTArgs& g) {
  TANDEM_RETURN_IF_ERROR(internal::CheckGemmDtypes(g.m, g.n, g.k, g.a_dtype, g.b_dtype, g.c_dtype));
  TANDEM_CHECK_ARG(g.lda >= g.k, "lda: expected >= k = ", g.k, ", got ", g.lda);
  TANDEM_CHECK_ARG(g.ldb >= g.k, "ldb: expected >= k = ", g.k, ", got ", g.ldb);
  TANDEM_CHECK_ARG(g.ldc >= g.n, "ldc: expected >= n = ", g.n, ", got ", g.ldc);
  return internal::CheckGemmPointers(g.m, g.n, g.k, g.a, g.b, g.c);
}

}  // namespace

absl::Status GemmNT(cudaStream_t stream, const GemmNTArgs& args) {
  TANDEM_RETURN_IF_ERROR(CheckArgs(args));
  if (args.m == 0 || args.n == 0) return absl::OkStatus();
  TANDEM_CUDA_RETURN_IF_ERROR(args.b_dtype == DType::kBF16
                                  ? internal::LaunchGemmTensorCore(stream, args)
                                  : internal::LaunchGemmF32(stream, args));
  return absl::OkStatus();
}

absl::Status GemmNT(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c,
                    bool accumulate) {
  TANDEM_ASSIGN_OR_RETURN(GemmNTArgs args, internal::TensorGemmArgs(a, b, c, accumulate));
  return GemmNT(StreamOf(ctx), args);
}

namespace internal {

absl::Status CheckGemmDtypes(int64_t m, int64_t n, int64_t k, DType a, DType b, DType c) {
  TANDEM_CHECK_ARG(m >= 0 && n >= 0 && k >= 0, "gemm: negative size m=", m, " n=", n, " k=", k);
  const auto floating = [](DType t) { return t == DType::kF32 || t == DType::kBF16; };
  TANDEM_CHECK_ARG(floating(a), "a: expected f32 or bf16, got ", DTypeName(a));
  TANDEM_CHECK_ARG(floating(b), "b: expected f32 or bf16, got ", DTypeName(b));
  TANDEM_CHECK_ARG(floating(c), "c: expected f32 or bf16, got ", DTypeName(c));
  if (b == DType::kF32) {
    TANDEM_CHECK_ARG(a == DType::kF32, "a: expected f32 with an f32 b, got ", DTypeName(a));
    TANDEM_CHECK_ARG(c == DType::kF32, "c: expected f32 with an f32 b, got ", DTypeName(c));
  }
  return absl::OkStatus();
}

absl::Status CheckGemmPointers(int64_t m, int64_t n, int64_t k, const void* a, const void* b,
                               const void* c) {
  const bool reads = m > 0 && n > 0 && k > 0;
  TANDEM_CHECK_ARG(!reads || a != nullptr, "a: null pointer");
  TANDEM_CHECK_ARG(!reads || b != nullptr, "b: null pointer");
  TANDEM_CHECK_ARG(m == 0 || n == 0 || c != nullptr, "c: null pointer");
  return absl::OkStatus();
}

absl::StatusOr<GemmNTArgs> TensorGemmArgs(const Tensor& a, const Tensor& b, Tensor& c,
                                          bool accumulate) {
  const DType bt = b.dtype() == DType::kF32 ? DType::kF32 : DType::kBF16;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(b, "b", bt, {-1, -1}, Device::kCUDA));
  const int64_t n = b.dim(0), k = b.dim(1);
  const DType at = bt == DType::kF32 || a.dtype() == DType::kF32 ? DType::kF32 : DType::kBF16;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(a, "a", at, {-1, k}, Device::kCUDA));
  const int64_t m = a.dim(0);
  const DType ct = bt == DType::kF32 || c.dtype() == DType::kF32 ? DType::kF32 : DType::kBF16;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(c, "c", ct, {m, n}, Device::kCUDA));
  GemmNTArgs args;
  args.m = m, args.n = n, args.k = k;
  args.a = a.raw_data(), args.a_dtype = at, args.lda = k;
  args.b = b.raw_data(), args.b_dtype = bt, args.ldb = k;
  args.c = c.raw_data(), args.c_dtype = ct, args.ldc = n;
  args.accumulate = accumulate;
  return args;
}

}  // namespace internal

}  // namespace tandem::kernels::cuda

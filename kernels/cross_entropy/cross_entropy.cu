// CUDA cross-entropy on top of cuda::LogprobFromLogits: the loss is two serial sums over tokens in
// ascending order (one thread: T is at most a few hundred thousand), the gradient one block per
// row with the normaliser computed once on the device by the same serial sum.
#include <cuda_runtime.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/cross_entropy/cross_entropy_cuda.h"
#include "kernels/lm_head_logprob/lm_head_logprob_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// max(Σ_t mask_t, 1), t ascending.
__device__ float Denominator(const float* mask, int64_t t) {
  float den = 0.0f;
  for (int64_t i = 0; i < t; ++i) den = __fadd_rn(den, mask[i]);
  return fmaxf(den, 1.0f);
}

__global__ void LossKernel(int64_t t, const float* mask, const float* logprob, float* loss) {
  float num = 0.0f;
  for (int64_t i = 0; i < t; ++i) {
    if (mask[i] != 0.0f) num = __fadd_rn(num, __fmul_rn(mask[i], -logprob[i]));
  }
  *loss = __fdiv_rn(num, Denominator(mask, t));
}

__global__ void DenominatorKernel(int64_t t, const float* mask, float* den) {
  *den = Denominator(mask, t);
}

struct BwdArgs {
  int64_t vocab;
  float dloss;
  const float* logits;
  const int32_t* targets;
  const float* mask;
  const float* lse;
  const float* den;
  float* dlogits;
};

__global__ void __launch_bounds__(kThreads) BwdKernel(const BwdArgs a) {
  const int64_t r = blockIdx.x;
  float* g = a.dlogits + r * a.vocab;
  const float mk = a.mask[r];
  if (mk == 0.0f) {
    for (int64_t v = threadIdx.x; v < a.vocab; v += kThreads) g[v] = 0.0f;
    return;
  }
  const float coef = __fdiv_rn(__fmul_rn(a.dloss, mk), *a.den);
  const float l = a.lse[r];
  const int32_t tg = a.targets[r];
  for (int64_t v = threadIdx.x; v < a.vocab; v += kThreads) {
    const float p = expf(__fsub_rn(a.logits[r * a.vocab + v], l));  // softmax_v
    g[v] = __fmul_rn(coef, __fsub_rn(p, v == tg ? 1.0f : 0.0f));
  }
}

absl::Status CheckArgs(const Tensor& logits, const Tensor& targets, const Tensor& mask,
                       const Tensor& lse) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logits, "logits", DType::kF32, {-1, -1}, Device::kCUDA));
  const int64_t t = logits.dim(0);
  TANDEM_CHECK_ARG(logits.dim(1) >= 1, "logits: expected a vocabulary of at least 1, got ",
                   ShapeString(logits.shape()));
  TANDEM_CHECK_ARG(t <= 0x7fffffff, "logits: at most 2^31 - 1 rows, got ", t);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(targets, "targets", DType::kI32, {t}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(mask, "mask", DType::kF32, {t}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {t}, Device::kCUDA));
  return absl::OkStatus();
}

// logprob [T] (scratch) from LogprobFromLogits at temperature 1, then the loss from it.
absl::Status LogprobsThenLoss(const Context& ctx, const Tensor& logits, const Tensor& targets,
                              const Tensor& mask, Tensor& logprob, Tensor& loss, Tensor& lse) {
  TANDEM_RETURN_IF_ERROR(LogprobFromLogits(ctx, logits, targets, 1.0f, logprob, lse));
  LossKernel<<<1, 1, 0, StreamOf(ctx)>>>(logits.dim(0), mask.data<float>(), logprob.data<float>(),
                                         loss.data<float>());
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status CrossEntropyFwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, Tensor& loss, Tensor& lse) {
  TANDEM_RETURN_IF_ERROR(CheckArgs(logits, targets, mask, lse));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(loss, "loss", DType::kF32, {1}, Device::kCUDA));
  const int64_t t = logits.dim(0);
  const cudaStream_t stream = StreamOf(ctx);
  float* logprob = nullptr;  // [T]
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&logprob),
                                              sizeof(float) * std::max<int64_t>(t, 1), stream));
  Tensor lp = Tensor::View(logprob, {t}, DType::kF32, Device::kCUDA);
  const absl::Status s = LogprobsThenLoss(ctx, logits, targets, mask, lp, loss, lse);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(logprob, stream));
  return s;
}

absl::Status CrossEntropyBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, const Tensor& lse, float dloss, Tensor& dlogits) {
  TANDEM_RETURN_IF_ERROR(CheckArgs(logits, targets, mask, lse));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dlogits, "dlogits", DType::kF32, {t, vocab}, Device::kCUDA));
  if (t == 0) return absl::OkStatus();
  const cudaStream_t stream = StreamOf(ctx);
  float* den = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMallocAsync(reinterpret_cast<void**>(&den), sizeof(float), stream));
  DenominatorKernel<<<1, 1, 0, stream>>>(t, mask.data<float>(), den);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const BwdArgs a{vocab,
                  dloss,
                  logits.data<float>(),
                  targets.data<int32_t>(),
                  mask.data<float>(),
                  lse.data<float>(),
                  den,
                  dlogits.data<float>()};
  BwdKernel<<<static_cast<unsigned>(t), kThreads, 0, stream>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(den, stream));
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

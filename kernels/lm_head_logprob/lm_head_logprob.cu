// CUDA log-probabilities: one row kernel computes the row's lse in a fixed order (per-thread
// strided partial sums, then BlockSum's fixed tree) and, in the same pass, the log-prob of the
// target and/or the whole log-softmax row. Being one compiled routine, LogSoftmax and
// LogprobFromLogits cannot disagree on a bit. The backward is elementwise given lse.
#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm_cuda.h"
#include "kernels/lm_head_logprob/lm_head_logprob_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = kLogprobThreads;

// Max over the block (exact, so the order does not matter), returned to every thread.
__device__ float BlockMax(float v) {
  __shared__ float warp_max[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  float m = warp_max[0];
  for (int w = 1; w < kThreads / 32; ++w) m = fmaxf(m, warp_max[w]);
  return m;
}

struct RowArgs {
  int64_t vocab;
  float temperature;
  const float* logits;       // [T, V]
  const int32_t* targets;    // [T] or null
  float* logprob;            // [T] or null
  float* out;                // [T, V] or null
  float* lse;                // [T]
  float* entropy = nullptr;  // [T] or null
};

// lse of z = row / temperature in the fixed order described in the header.
__device__ float RowLse(const float* row, int64_t vocab, float temperature) {
  float m = -INFINITY;
  bool nan = false;
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
    const float z = __fdiv_rn(row[v], temperature);
    nan |= isnan(z);
    m = fmaxf(m, z);
  }
  nan = __syncthreads_or(nan);
  m = BlockMax(m);
  float s = 0.0f;
  if (!nan && !isinf(m)) {  // uniform across the block
    for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
      s = __fadd_rn(s, expf(__fsub_rn(__fdiv_rn(row[v], temperature), m)));
    }
  }
  s = BlockSum<kThreads>(s);  // every thread calls it
  if (nan) return NAN;
  if (isinf(m)) return m;
  return __fadd_rn(m, logf(s));
}

__global__ void __launch_bounds__(kThreads) RowKernel(const RowArgs a) {
  const int64_t r = blockIdx.x;
  const float* row = a.logits + r * a.vocab;
  const float l = RowLse(row, a.vocab, a.temperature);
  if (threadIdx.x == 0) {
    a.lse[r] = l;
    if (a.logprob != nullptr) {
      const int32_t tg = a.targets[r];
      a.logprob[r] =
          tg >= 0 && tg < a.vocab ? __fsub_rn(__fdiv_rn(row[tg], a.temperature), l) : NAN;
    }
  }
  if (a.entropy != nullptr) {  // uniform across the block
    float pz = 0.0f;           // Σ p·z over the finite z
    if (isfinite(l)) {
      for (int64_t v = threadIdx.x; v < a.vocab; v += kThreads) {
        const float z = __fdiv_rn(row[v], a.temperature);
        if (!isinf(z)) pz = __fadd_rn(pz, __fmul_rn(expf(__fsub_rn(z, l)), z));
      }
    }
    pz = BlockSum<kThreads>(pz);  // every thread calls it
    if (threadIdx.x == 0) {
      a.entropy[r] = isfinite(l) ? __fsub_rn(l, pz) : (l == -INFINITY ? 0.0f : NAN);
    }
  }
  if (a.out == nullptr) return;
  for (int64_t v = threadIdx.x; v < a.vocab; v += kThreads) {
    a.out[r * a.vocab + v] = __fsub_rn(__fdiv_rn(row[v], a.temperature), l);
  }
}

struct BwdArgs {
  int64_t vocab;
  float temperature;
  const float* logits;
  const int32_t* targets;
  const float* lse;
  const float* dlogprob;
  float* dlogits;
};

__global__ void __launch_bounds__(kThreads) BwdKernel(const BwdArgs a) {
  const int64_t r = blockIdx.x;
  const float l = a.lse[r], dl = a.dlogprob[r];
  const int32_t tg = a.targets[r];
  for (int64_t v = threadIdx.x; v < a.vocab; v += kThreads) {
    const int64_t i = r * a.vocab + v;
    const float p = expf(__fsub_rn(__fdiv_rn(a.logits[i], a.temperature), l));
    const float onehot = v == tg ? 1.0f : 0.0f;
    a.dlogits[i] = __fdiv_rn(__fmul_rn(dl, __fsub_rn(onehot, p)), a.temperature);
  }
}

absl::Status CheckLogits(const Tensor& logits, float temperature) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logits, "logits", DType::kF32, {-1, -1}, Device::kCUDA));
  TANDEM_CHECK_ARG(logits.dim(1) >= 1, "logits: expected a vocabulary of at least 1, got ",
                   ShapeString(logits.shape()));
  TANDEM_CHECK_ARG(logits.dim(0) <= 0x7fffffff, "logits: at most 2^31 - 1 rows, got ",
                   logits.dim(0));
  TANDEM_CHECK_ARG(temperature > 0.0f && std::isfinite(temperature),
                   "temperature: expected a finite value > 0, got ", temperature);
  return absl::OkStatus();
}

absl::Status ExpectRowVector(const Tensor& t, const char* name, DType dtype, int64_t rows) {
  return ExpectTensor(t, name, dtype, {rows}, Device::kCUDA);
}

absl::Status LaunchRows(const Context& ctx, const RowArgs& a, int64_t rows) {
  if (rows == 0) return absl::OkStatus();
  RowKernel<<<static_cast<unsigned>(rows), kThreads, 0, StreamOf(ctx)>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status LogprobFromLogits(const Context& ctx, const Tensor& logits, const Tensor& targets,
                               float temperature, Tensor& logprob, Tensor& lse) {
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  const int64_t t = logits.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(targets, "targets", DType::kI32, t));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(logprob, "logprob", DType::kF32, t));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(lse, "lse", DType::kF32, t));
  const RowArgs a{logits.dim(1),         temperature, logits.data<float>(), targets.data<int32_t>(),
                  logprob.data<float>(), nullptr,     lse.data<float>()};
  return LaunchRows(ctx, a, t);
}

absl::Status LogSoftmax(const Context& ctx, const Tensor& logits, float temperature, Tensor& out,
                        Tensor& lse) {
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(out, "out", DType::kF32, {t, vocab}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(lse, "lse", DType::kF32, t));
  const RowArgs a{vocab,   temperature,       logits.data<float>(), nullptr,
                  nullptr, out.data<float>(), lse.data<float>()};
  return LaunchRows(ctx, a, t);
}

absl::Status SoftmaxEntropy(const Context& ctx, const Tensor& logits, float temperature,
                            Tensor& entropy, Tensor& lse) {
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  const int64_t t = logits.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(entropy, "entropy", DType::kF32, t));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(lse, "lse", DType::kF32, t));
  RowArgs a{logits.dim(1), temperature, logits.data<float>(), nullptr,
            nullptr,       nullptr,     lse.data<float>()};
  a.entropy = entropy.data<float>();
  return LaunchRows(ctx, a, t);
}

absl::Status LogprobFromLogitsBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                                  const Tensor& lse, float temperature, const Tensor& dlogprob,
                                  Tensor& dlogits) {
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(targets, "targets", DType::kI32, t));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(lse, "lse", DType::kF32, t));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(dlogprob, "dlogprob", DType::kF32, t));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dlogits, "dlogits", DType::kF32, {t, vocab}, Device::kCUDA));
  if (t == 0) return absl::OkStatus();
  const BwdArgs a{vocab,
                  temperature,
                  logits.data<float>(),
                  targets.data<int32_t>(),
                  lse.data<float>(),
                  dlogprob.data<float>(),
                  dlogits.data<float>()};
  BwdKernel<<<static_cast<unsigned>(t), kThreads, 0, StreamOf(ctx)>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LmHeadLogprobFwd(const Context& ctx, const Tensor& h, const Tensor& w,
                              const Tensor& targets, float temperature, Tensor& logits,
                              Tensor& logprob, Tensor& lse) {
  const DType ht = h.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  const DType wt = w.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(h, "h", ht, {-1, -1}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w, "w", wt, {-1, h.dim(1)}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(logits, "logits", DType::kF32, {h.dim(0), w.dim(0)}, Device::kCUDA));
  // Validate everything LogprobFromLogits will before spending the GEMM.
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(targets, "targets", DType::kI32, h.dim(0)));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(logprob, "logprob", DType::kF32, h.dim(0)));
  TANDEM_RETURN_IF_ERROR(ExpectRowVector(lse, "lse", DType::kF32, h.dim(0)));
  TANDEM_RETURN_IF_ERROR(GemmNT(ctx, h, w, logits));
  return LogprobFromLogits(ctx, logits, targets, temperature, logprob, lse);
}

}  // namespace tandem::kernels::cuda

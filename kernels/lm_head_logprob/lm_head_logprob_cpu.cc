// CPU log-probabilities from logits: one row routine (cpu::RowLogSumExp) reduces the vocab in a
// fixed order, and every entry point below calls it per row, one row per thread at a time, so
// the sampler's LogSoftmax and the trainer's LogprobFromLogits agree bit for bit whatever the
// batch or the thread count.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/lm_head_logprob/lm_head_logprob_cuda.h"
#endif

namespace tandem::kernels {
namespace cpu {

float RowLogSumExp(const float* logits, int64_t vocab, float temperature) {
  float m = -INFINITY;
  bool nan = false;
  for (int64_t v = 0; v < vocab; ++v) {
    const float z = logits[v] / temperature;
    nan |= std::isnan(z);
    m = z > m ? z : m;
  }
  if (nan) return NAN;
  if (std::isinf(m)) return m;  // all −inf, or some +inf
  float lane[kLogSumExpLanes] = {};
  int64_t v = 0;
  for (; v + kLogSumExpLanes <= vocab; v += kLogSumExpLanes) {
    for (int l = 0; l < kLogSumExpLanes; ++l) lane[l] += std::exp(logits[v + l] / temperature - m);
  }
  for (int l = 0; v + l < vocab; ++l) lane[l] += std::exp(logits[v + l] / temperature - m);
  static_assert(kLogSumExpLanes == 8, "the combine tree below is written for 8 lanes");
  const float s =
      ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  return m + std::log(s);
}

}  // namespace cpu

namespace {

absl::Status CheckTemperature(float temperature) {
  TANDEM_CHECK_ARG(temperature > 0.0f && std::isfinite(temperature),
                   "temperature: expected a finite value > 0, got ", temperature);
  return absl::OkStatus();
}

// targets [T] i32, each in [0, vocab).
absl::Status CheckTargets(const Tensor& targets, int64_t t, int64_t vocab) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(targets, "targets", DType::kI32, {t}));
  const int32_t* p = targets.data<int32_t>();
  for (int64_t i = 0; i < t; ++i) {
    TANDEM_CHECK_ARG(p[i] >= 0 && p[i] < vocab, "targets: targets[", i, "] = ", p[i],
                     " is outside the vocabulary [0, ", vocab, ")");
  }
  return absl::OkStatus();
}

absl::Status CheckLogits(const Tensor& logits, float temperature) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logits, "logits", DType::kF32, {-1, -1}));
  TANDEM_CHECK_ARG(logits.dim(1) >= 1, "logits: expected a vocabulary of at least 1, got ",
                   ShapeString(logits.shape()));
  return CheckTemperature(temperature);
}

// For every row r of logits [T, V], on ctx's threads: lse[r] = RowLogSumExp of the row, then
// fn(r, row, lse[r]) with whatever else the op computes from them.
template <typename Fn>
void ForEachRowLse(const Context& ctx, const Tensor& logits, float temperature, Tensor& lse,
                   Fn&& fn) {
  const int64_t vocab = logits.dim(1);
  const float* lg = logits.data<float>();  // [T, V]
  float* ls = lse.data<float>();           // [T]
  ctx.ParallelFor(logits.dim(0), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = lg + r * vocab;
      ls[r] = cpu::RowLogSumExp(row, vocab, temperature);
      fn(r, row, ls[r]);
    }
  });
}

}  // namespace

absl::Status LogprobFromLogits(const Context& ctx, const Tensor& logits, const Tensor& targets,
                               float temperature, Tensor& logprob, Tensor& lse) {
  TANDEM_DISPATCH_CUDA(ctx,
                       cuda::LogprobFromLogits(ctx, logits, targets, temperature, logprob, lse));
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_RETURN_IF_ERROR(CheckTargets(targets, t, vocab));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logprob, "logprob", DType::kF32, {t}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {t}));
  const int32_t* tg = targets.data<int32_t>();  // [T]
  float* lp = logprob.data<float>();            // [T]
  ForEachRowLse(ctx, logits, temperature, lse, [&](int64_t r, const float* row, float l) {
    lp[r] = row[tg[r]] / temperature - l;
  });
  return absl::OkStatus();
}

absl::Status LogSoftmax(const Context& ctx, const Tensor& logits, float temperature, Tensor& out,
                        Tensor& lse) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::LogSoftmax(ctx, logits, temperature, out, lse));
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(out, "out", DType::kF32, {t, vocab}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {t}));
  float* o = out.data<float>();  // [T, V]
  ForEachRowLse(ctx, logits, temperature, lse, [&](int64_t r, const float* row, float l) {
    for (int64_t v = 0; v < vocab; ++v) o[r * vocab + v] = row[v] / temperature - l;
  });
  return absl::OkStatus();
}

absl::Status SoftmaxEntropy(const Context& ctx, const Tensor& logits, float temperature,
                            Tensor& entropy, Tensor& lse) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::SoftmaxEntropy(ctx, logits, temperature, entropy, lse));
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(entropy, "entropy", DType::kF32, {t}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {t}));
  float* h = entropy.data<float>();  // [T]
  ForEachRowLse(ctx, logits, temperature, lse, [&](int64_t r, const float* row, float l) {
    if (std::isnan(l) || l == INFINITY) {
      h[r] = NAN;
      return;
    }
    double pz = 0.0;  // Σ p·z over the finite z
    for (int64_t v = 0; l != -INFINITY && v < vocab; ++v) {
      const double z = row[v] / temperature;
      if (!std::isinf(z)) pz += std::exp(z - l) * z;
    }
    h[r] = l == -INFINITY ? 0.0f : static_cast<float>(l - pz);
  });
  return absl::OkStatus();
}

absl::Status LogprobFromLogitsBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                                  const Tensor& lse, float temperature, const Tensor& dlogprob,
                                  Tensor& dlogits) {
  TANDEM_DISPATCH_CUDA(
      ctx, cuda::LogprobFromLogitsBwd(ctx, logits, targets, lse, temperature, dlogprob, dlogits));
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_RETURN_IF_ERROR(CheckTargets(targets, t, vocab));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {t}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dlogprob, "dlogprob", DType::kF32, {t}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dlogits, "dlogits", DType::kF32, {t, vocab}));
  const float* lg = logits.data<float>();       // [T, V]
  const int32_t* tg = targets.data<int32_t>();  // [T]
  const float* ls = lse.data<float>();          // [T]
  const float* dl = dlogprob.data<float>();     // [T]
  float* g = dlogits.data<float>();             // [T, V]
  ctx.ParallelFor(t, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t v = 0; v < vocab; ++v) {
        const float p = std::exp(lg[r * vocab + v] / temperature - ls[r]);  // softmax(z)_v
        const float onehot = v == tg[r] ? 1.0f : 0.0f;
        g[r * vocab + v] = dl[r] * (onehot - p) / temperature;
      }
    }
  });
  return absl::OkStatus();
}

absl::Status LmHeadLogprobFwd(const Context& ctx, const Tensor& h, const Tensor& w,
                              const Tensor& targets, float temperature, Tensor& logits,
                              Tensor& logprob, Tensor& lse) {
  TANDEM_DISPATCH_CUDA(
      ctx, cuda::LmHeadLogprobFwd(ctx, h, w, targets, temperature, logits, logprob, lse));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(h, "h", DType::kF32, {-1, -1}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w, "w", DType::kF32, {-1, h.dim(1)}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logits, "logits", DType::kF32, {h.dim(0), w.dim(0)}));
  // Validate everything LogprobFromLogits will before spending the GEMM.
  TANDEM_RETURN_IF_ERROR(CheckLogits(logits, temperature));
  TANDEM_RETURN_IF_ERROR(CheckTargets(targets, h.dim(0), w.dim(0)));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logprob, "logprob", DType::kF32, {h.dim(0)}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {h.dim(0)}));
  TANDEM_RETURN_IF_ERROR(GemmNT(ctx, h, w, logits));
  return LogprobFromLogits(ctx, logits, targets, temperature, logprob, lse);
}

}  // namespace tandem::kernels

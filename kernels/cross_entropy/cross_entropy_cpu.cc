// CPU cross-entropy for SFT on top of lm_head_logprob's row log-sum-exp, so the SFT loss and the
// RL log-probs are computed from the same bits. Rows are split across threads; the token sums
// run serially in ascending t.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/cross_entropy/cross_entropy.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/cross_entropy/cross_entropy_cuda.h"
#endif

namespace tandem::kernels {
namespace {

absl::Status CheckArgs(const Tensor& logits, const Tensor& targets, const Tensor& mask,
                       const Tensor& lse) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logits, "logits", DType::kF32, {-1, -1}));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_CHECK_ARG(vocab >= 1, "logits: expected a vocabulary of at least 1, got ",
                   ShapeString(logits.shape()));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(targets, "targets", DType::kI32, {t}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(mask, "mask", DType::kF32, {t}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {t}));
  const int32_t* tg = targets.data<int32_t>();
  const float* mk = mask.data<float>();
  for (int64_t i = 0; i < t; ++i) {
    TANDEM_CHECK_ARG(mk[i] == 0.0f || (tg[i] >= 0 && tg[i] < vocab), "targets: targets[", i,
                     "] = ", tg[i], " is outside the vocabulary [0, ", vocab,
                     ") at a token with nonzero mask");
  }
  return absl::OkStatus();
}

// max(Σ_t mask_t, 1), t ascending: the normaliser both passes share.
float Denominator(const float* mask, int64_t t) {
  float den = 0.0f;
  for (int64_t i = 0; i < t; ++i) den += mask[i];
  return std::max(den, 1.0f);
}

}  // namespace

absl::Status CrossEntropyFwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, Tensor& loss, Tensor& lse) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::CrossEntropyFwd(ctx, logits, targets, mask, loss, lse));
  TANDEM_RETURN_IF_ERROR(CheckArgs(logits, targets, mask, lse));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(loss, "loss", DType::kF32, {1}));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  const float* lg = logits.data<float>();       // [T, V]
  const int32_t* tg = targets.data<int32_t>();  // [T]
  const float* mk = mask.data<float>();         // [T]
  float* ls = lse.data<float>();                // [T]
  std::vector<float> logprob(t);                // [T]
  ctx.ParallelFor(t, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = lg + r * vocab;
      ls[r] = cpu::RowLogSumExp(row, vocab, 1.0f);
      // As LogprobFromLogits computes it, with temperature 1.
      if (mk[r] != 0.0f) logprob[r] = row[tg[r]] / 1.0f - ls[r];
    }
  });
  float num = 0.0f;
  for (int64_t r = 0; r < t; ++r) {
    if (mk[r] != 0.0f) num += mk[r] * -logprob[r];
  }
  loss.data<float>()[0] = num / Denominator(mk, t);
  return absl::OkStatus();
}

absl::Status CrossEntropyBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                             const Tensor& mask, const Tensor& lse, float dloss, Tensor& dlogits) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::CrossEntropyBwd(ctx, logits, targets, mask, lse, dloss, dlogits));
  TANDEM_RETURN_IF_ERROR(CheckArgs(logits, targets, mask, lse));
  const int64_t t = logits.dim(0), vocab = logits.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dlogits, "dlogits", DType::kF32, {t, vocab}));
  const float* lg = logits.data<float>();       // [T, V]
  const int32_t* tg = targets.data<int32_t>();  // [T]
  const float* mk = mask.data<float>();         // [T]
  const float* ls = lse.data<float>();          // [T]
  float* g = dlogits.data<float>();             // [T, V]
  const float den = Denominator(mk, t);
  ctx.ParallelFor(t, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* gr = g + r * vocab;
      if (mk[r] == 0.0f) {
        std::fill(gr, gr + vocab, 0.0f);
        continue;
      }
      const float coef = dloss * mk[r] / den;
      for (int64_t v = 0; v < vocab; ++v) {
        const float p = std::exp(lg[r * vocab + v] / 1.0f - ls[r]);  // softmax_v
        gr[v] = coef * (p - (v == tg[r] ? 1.0f : 0.0f));
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace tandem::kernels

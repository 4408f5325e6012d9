// SampleTokens: batched LogSoftmax per temperature, one host copy each, then SampleToken per draw
// (contract rule 5).
#include "rollout/sampler.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "kernels/core/status_macros.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "kernels/sample/sample.h"
#include "model/device_ops.h"

namespace tandem::rollout {
namespace {

float EffectiveTemperature(const SamplingOptions& s) {
  return s.temperature == 0.0f ? 1.0f : s.temperature;  // greedy reads the T = 1 row
}

// log_softmax(rows of logits / temperature) on the host, [rows.size(), V], rows ascending.
absl::StatusOr<Tensor> HostLogprobs(const Context& ctx, const Tensor& logits,
                                    const std::vector<int64_t>& rows, float temperature) {
  const int64_t n = static_cast<int64_t>(rows.size()), V = logits.dim(1);
  Tensor picked = logits;
  if (n != logits.dim(0)) {  // rows is ascending and unique: n == dim(0) means every row
    picked = Tensor::Empty({n, V}, DType::kF32, logits.device());
    std::vector<int64_t> dst(n);
    std::iota(dst.begin(), dst.end(), 0);
    TANDEM_RETURN_IF_ERROR(model::internal::CopyRows(ctx, logits, rows, picked, dst, V));
  }
  Tensor logprobs = Tensor::Empty({n, V}, DType::kF32, logits.device());
  Tensor lse = Tensor::Empty({n}, DType::kF32, logits.device());
  TANDEM_RETURN_IF_ERROR(kernels::LogSoftmax(ctx, picked, temperature, logprobs, lse));
  // On the GPU the rows come back for the draw; their values are the GPU's, so the reported
  // log-prob is the GPU's LogprobFromLogits value for the token (the trainer's).
  return model::internal::ToHost(ctx, logprobs);
}

}  // namespace

std::vector<absl::StatusOr<SampledToken>> SampleTokens(const Context& ctx, const Tensor& logits,
                                                       const std::vector<TokenDraw>& draws) {
  const int64_t V = logits.dim(1);
  std::vector<absl::StatusOr<SampledToken>> out(draws.size(),
                                                absl::InternalError("SampleTokens: not drawn"));
  std::vector<const float*> row_of(draws.size(), nullptr);  // each draw's host log-prob row
  std::vector<Tensor> held;                                 // keeps those rows alive
  std::vector<bool> grouped(draws.size(), false);
  for (size_t first = 0; first < draws.size(); ++first) {
    if (grouped[first]) continue;
    const float temperature = EffectiveTemperature(*draws[first].sampling);
    std::vector<size_t> group{first};
    std::vector<int64_t> rows{draws[first].row};
    for (size_t i = first + 1; i < draws.size(); ++i) {
      if (!grouped[i] && EffectiveTemperature(*draws[i].sampling) == temperature) {
        grouped[i] = true;
        group.push_back(i);
        rows.push_back(draws[i].row);
      }
    }
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    absl::StatusOr<Tensor> logprobs = HostLogprobs(ctx, logits, rows, temperature);
    for (size_t i : group) {
      if (!logprobs.ok()) {
        out[i] = logprobs.status();
        continue;
      }
      const int64_t k = std::lower_bound(rows.begin(), rows.end(), draws[i].row) - rows.begin();
      row_of[i] = logprobs->data<float>() + k * V;
    }
    if (logprobs.ok()) held.push_back(*std::move(logprobs));
  }
  ctx.ParallelFor(static_cast<int64_t>(draws.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (row_of[i] == nullptr) continue;
      const SamplingOptions& sampling = *draws[i].sampling;
      kernels::SamplingParams params;
      params.greedy = sampling.temperature == 0.0f;
      params.top_k = sampling.top_k;
      params.top_p = sampling.top_p;
      const kernels::SampleKey key{sampling.seed, static_cast<uint64_t>(draws[i].sample_index),
                                   static_cast<uint64_t>(draws[i].position)};
      absl::StatusOr<int32_t> token = kernels::SampleToken(row_of[i], V, params, key);
      if (token.ok()) {
        out[i] = SampledToken{*token, row_of[i][*token]};
      } else {
        out[i] = token.status();
      }
    }
  });
  return out;
}

}  // namespace tandem::rollout

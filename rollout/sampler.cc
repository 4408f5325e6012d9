// SampleTokens: one batched LogSoftmax per temperature, then kernels::SampleRows on its rows
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

// log_softmax(rows of logits / temperature) on logits' device, [rows.size(), V], rows ascending.
absl::StatusOr<Tensor> Logprobs(const Context& ctx, const Tensor& logits,
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
  return logprobs;
}

}  // namespace

std::vector<absl::StatusOr<SampledToken>> SampleTokens(const Context& ctx, const Tensor& logits,
                                                       const std::vector<TokenDraw>& draws) {
  std::vector<absl::StatusOr<SampledToken>> out(draws.size(),
                                                absl::InternalError("SampleTokens: not drawn"));
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
    absl::StatusOr<Tensor> logprobs = Logprobs(ctx, logits, rows, temperature);
    if (!logprobs.ok()) {
      for (size_t i : group) out[i] = logprobs.status();
      continue;
    }
    std::vector<kernels::RowDraw> row_draws;
    for (size_t i : group) {
      const TokenDraw& d = draws[i];
      kernels::RowDraw r;
      r.row = std::lower_bound(rows.begin(), rows.end(), d.row) - rows.begin();
      r.params.greedy = d.sampling->temperature == 0.0f;
      r.params.top_k = d.sampling->top_k;
      r.params.top_p = d.sampling->top_p;
      r.key = {d.sampling->seed, static_cast<uint64_t>(d.sample_index),
               static_cast<uint64_t>(d.position)};
      row_draws.push_back(r);
    }
    // On the GPU the tokens are drawn there from the GPU's rows, so a reported log-prob is the
    // GPU's LogprobFromLogits value for the token (the trainer's).
    std::vector<absl::StatusOr<kernels::DrawnToken>> drawn =
        kernels::SampleRows(ctx, *logprobs, row_draws);
    for (size_t k = 0; k < group.size(); ++k) {
      if (drawn[k].ok()) {
        out[group[k]] = SampledToken{drawn[k]->token, drawn[k]->logprob};
      } else {
        out[group[k]] = drawn[k].status();
      }
    }
  }
  return out;
}

}  // namespace tandem::rollout

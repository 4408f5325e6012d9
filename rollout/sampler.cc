// SampleTokens: one batched LogSoftmax per temperature into one log-prob matrix, then one
// kernels::SampleRows call for the whole step (contract rule 5).
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

// log_softmax(rows of logits / temperature) into out [rows.size(), V] (on logits' device), rows
// ascending and unique.
absl::Status Logprobs(const Context& ctx, const Tensor& logits, const std::vector<int64_t>& rows,
                      float temperature, Tensor out) {
  const int64_t n = static_cast<int64_t>(rows.size()), V = logits.dim(1);
  Tensor picked = logits;
  if (n != logits.dim(0)) {  // rows is ascending and unique: n == dim(0) means every row
    picked = Tensor::Empty({n, V}, DType::kF32, logits.device());
    std::vector<int64_t> dst(n);
    std::iota(dst.begin(), dst.end(), 0);
    TANDEM_RETURN_IF_ERROR(model::internal::CopyRows(ctx, logits, rows, picked, dst, V));
  }
  Tensor lse = Tensor::Empty({n}, DType::kF32, logits.device());
  return kernels::LogSoftmax(ctx, picked, temperature, out, lse);
}

// The draws of one temperature and the logits rows they read (ascending, unique).
struct TemperatureGroup {
  float temperature;
  std::vector<size_t> draws;
  std::vector<int64_t> rows;
};

std::vector<TemperatureGroup> GroupByTemperature(const std::vector<TokenDraw>& draws) {
  std::vector<TemperatureGroup> groups;
  for (size_t i = 0; i < draws.size(); ++i) {
    const float t = EffectiveTemperature(*draws[i].sampling);
    auto g = std::find_if(groups.begin(), groups.end(),
                          [&](const TemperatureGroup& x) { return x.temperature == t; });
    if (g == groups.end()) g = groups.insert(groups.end(), TemperatureGroup{t, {}, {}});
    g->draws.push_back(i);
    g->rows.push_back(draws[i].row);
  }
  for (TemperatureGroup& g : groups) {
    std::sort(g.rows.begin(), g.rows.end());
    g.rows.erase(std::unique(g.rows.begin(), g.rows.end()), g.rows.end());
  }
  return groups;
}

}  // namespace

std::vector<absl::StatusOr<SampledToken>> SampleTokens(const Context& ctx, const Tensor& logits,
                                                       const std::vector<TokenDraw>& draws) {
  if (draws.empty()) return {};
  // Every group's rows go into one log-prob matrix, so that one SampleRows call draws the whole
  // step and a failed draw is named by its index in `draws`.
  const std::vector<TemperatureGroup> groups = GroupByTemperature(draws);
  int64_t total = 0;
  for (const TemperatureGroup& g : groups) total += static_cast<int64_t>(g.rows.size());
  Tensor logprobs = Tensor::Empty({total, logits.dim(1)}, DType::kF32, logits.device());
  std::vector<kernels::RowDraw> row_draws(draws.size());
  std::vector<absl::Status> failed(draws.size());  // a group's LogSoftmax error, for its draws
  int64_t offset = 0;
  for (const TemperatureGroup& g : groups) {
    const int64_t n = static_cast<int64_t>(g.rows.size());
    const absl::Status computed =
        Logprobs(ctx, logits, g.rows, g.temperature, logprobs.Rows(offset, offset + n));
    for (size_t i : g.draws) {
      const TokenDraw& d = draws[i];
      kernels::RowDraw& r = row_draws[i];
      r.row = offset + (std::lower_bound(g.rows.begin(), g.rows.end(), d.row) - g.rows.begin());
      r.params.greedy = d.sampling->temperature == 0.0f;
      r.params.top_k = d.sampling->top_k;
      r.params.top_p = d.sampling->top_p;
      r.key = {d.sampling->seed, static_cast<uint64_t>(d.sample_index),
               static_cast<uint64_t>(d.position)};
      failed[i] = computed;
    }
    offset += n;
  }
  // On the GPU the tokens are drawn there from the GPU's rows, so a reported log-prob is the
  // GPU's LogprobFromLogits value for the token (the trainer's).
  std::vector<absl::StatusOr<SampledToken>> out = kernels::SampleRows(ctx, logprobs, row_draws);
  for (size_t i = 0; i < draws.size(); ++i) {
    if (!failed[i].ok()) out[i] = failed[i];
  }
  return out;
}

}  // namespace tandem::rollout

// Token sampling on one log-prob row of Ring-linear's vocabulary (157,184 entries): the time per
// SampleToken draw without truncation, with top-p 0.95, top-k 50 and greedy, on a flat (logits
// N(0, 3²)) and a peaked (N(0, 9²)) row. The rollout engine pays this once per generated token.
//   build/bench/sample_bench
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/sample/sample.h"

namespace tandem::kernels {
namespace {

constexpr int64_t kVocab = 157184;

// log_softmax of normal logits with standard deviation sigma.
std::vector<float> LogprobRow(float sigma) {
  std::mt19937 rng(1);
  std::normal_distribution<double> logit(0.0, sigma);
  std::vector<double> x(kVocab);
  double mx = -INFINITY;
  for (double& v : x) mx = std::max(mx, v = logit(rng));
  double sum = 0.0;
  for (double v : x) sum += std::exp(v - mx);
  std::vector<float> lp(kVocab);
  for (int64_t v = 0; v < kVocab; ++v) lp[v] = static_cast<float>(x[v] - mx - std::log(sum));
  return lp;
}

// Args: sigma, mode (0 = no truncation, 1 = top-p 0.95, 2 = top-k 50, 3 = greedy).
void BM_SampleToken(benchmark::State& state) {
  const std::vector<float> lp = LogprobRow(static_cast<float>(state.range(0)));
  SamplingParams params;
  params.top_p = state.range(1) == 1 ? 0.95f : 1.0f;
  params.top_k = state.range(1) == 2 ? 50 : 0;
  params.greedy = state.range(1) == 3;
  uint64_t position = 0;
  for (auto _ : state) {
    absl::StatusOr<int32_t> token = SampleToken(lp.data(), kVocab, params, {1, 0, position++});
    benchmark::DoNotOptimize(token);
  }
}
BENCHMARK(BM_SampleToken)
    ->ArgNames({"sigma", "mode"})
    ->ArgsProduct({{3, 9}, {0, 1, 2, 3}})
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tandem::kernels

BENCHMARK_MAIN();

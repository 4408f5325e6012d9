// The trainer's model step on the CPU: HybridModel forward + backward (ForwardBackward: log-probs
// and the gradient of every parameter) over 4 packed sequences of 256 tokens, for the tiny test
// config and a ~100M-parameter one (configs/models/tiny-hybrid-100m.json), at 1 and 2 threads,
// with saved activations and with per-layer recompute; the log-prob forward alone for comparison.
// Weights from InitWeights (seed 1). Run from the repository root or anywhere: configs are found
// relative to this file's source path.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/hybrid_model_backward.h"
#include "model/weights.h"

namespace tandem::model {
namespace {

constexpr int kSequences = 4, kSequenceLength = 256;
const char* const kConfigs[] = {"tiny-hybrid", "tiny-hybrid-100m"};

std::string ConfigPath(const std::string& name) {
  const std::string here = __FILE__;  // <repo>/bench/trainer_step_bench.cc
  const std::string root = here.substr(0, here.rfind("/bench/"));
  return root + "/configs/models/" + name + ".json";
}

// One model per config, built once (the 100M one takes a while to initialise).
const HybridModel& Model(int index) {
  static std::vector<HybridModel*> models(std::size(kConfigs), nullptr);
  if (models[index] == nullptr) {
    absl::StatusOr<ModelConfig> config = LoadModelConfig(ConfigPath(kConfigs[index]));
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      std::abort();
    }
    ModelWeights weights = AllocateWeights(*config);
    InitWeights(*config, 1, weights);
    models[index] = new HybridModel(*config, std::move(weights));
  }
  return *models[index];
}

ForwardInput Input(const ModelConfig& config) {
  std::mt19937_64 rng(7);
  const int64_t T = int64_t{kSequences} * kSequenceLength;
  std::vector<int32_t> tokens(T), targets(T), cu = {0};
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % config.vocab_size);
  for (int64_t t = 0; t < T; ++t) {
    targets[t] = (t + 1) % kSequenceLength == 0 ? -1 : tokens[t + 1];
  }
  for (int b = 1; b <= kSequences; ++b) cu.push_back(b * kSequenceLength);
  return {Tensor::FromVector(tokens, {T}), Tensor::FromVector(cu, {kSequences + 1}),
          Tensor::FromVector(targets, {T}), 1.0f};
}

void SetCounters(benchmark::State& state, const HybridModel& model, int64_t T) {
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["Mparams"] = static_cast<double>(CountParameters(model.config()).total) * 1e-6;
}

// args: config index, threads, recompute (0/1).
void BM_ForwardBackward(benchmark::State& state) {
  const HybridModel& model = Model(static_cast<int>(state.range(0)));
  const Context ctx = Context::Cpu(static_cast<int>(state.range(1)));
  const ForwardInput input = Input(model.config());
  const int64_t T = input.tokens.dim(0);
  const Tensor dlogprob = Tensor::FromVector(std::vector<float>(T, 1.0f / T), {T});
  ModelWeights grads = AllocateWeights(model.config());
  const BackwardOptions options{.recompute_layers = state.range(2) != 0};
  for (auto _ : state) {
    absl::StatusOr<Tensor> logprob = ForwardBackward(ctx, model, input, dlogprob, grads, options);
    if (!logprob.ok()) state.SkipWithError(std::string(logprob.status().message()).c_str());
    benchmark::DoNotOptimize(logprob);
  }
  SetCounters(state, model, T);
}
BENCHMARK(BM_ForwardBackward)
    ->ArgNames({"config", "threads", "recompute"})
    ->ArgsProduct({{0}, {1, 2}, {0, 1}})
    ->ArgsProduct({{1}, {1, 2}, {0}})
    ->Args({1, 2, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

void BM_Forward(benchmark::State& state) {
  const HybridModel& model = Model(static_cast<int>(state.range(0)));
  const Context ctx = Context::Cpu(static_cast<int>(state.range(1)));
  const ForwardInput input = Input(model.config());
  for (auto _ : state) {
    absl::StatusOr<Tensor> logprob = model.Forward(ctx, input);
    if (!logprob.ok()) state.SkipWithError(std::string(logprob.status().message()).c_str());
    benchmark::DoNotOptimize(logprob);
  }
  SetCounters(state, model, input.tokens.dim(0));
}
BENCHMARK(BM_Forward)
    ->ArgNames({"config", "threads"})
    ->ArgsProduct({{0, 1}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

}  // namespace
}  // namespace tandem::model

BENCHMARK_MAIN();

// Helpers shared by the rollout engine tests: building an engine over a random tiny model with a
// memory budget counted in KV blocks, driving random workloads with staggered arrivals, and the
// bitwise comparison of every generated token's log-prob with HybridModel::Forward.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/context.h"
#include "model/hybrid_model.h"
#include "model/inference_cache.h"
#include "rollout/engine.h"
#include "tests/testing/compare.h"
#include "tests/testing/tiny_model.h"

namespace tandem::testing {

// An engine over `model` whose cache holds `max_sequences` slots and `blocks` KV blocks.
inline std::unique_ptr<rollout::Engine> MakeEngine(const model::HybridModel& model, int64_t blocks,
                                                   int64_t max_sequences, int64_t max_step_tokens,
                                                   int threads, int64_t version = 0) {
  rollout::EngineOptions options;
  options.max_sequences = max_sequences;
  options.max_step_tokens = max_step_tokens;
  options.memory_budget_bytes =
      max_sequences * model::InferenceCache::BytesPerSlot(model.config()) +
      blocks * model::InferenceCache::BytesPerBlock(model.config());
  absl::StatusOr<std::unique_ptr<rollout::Engine>> engine =
      rollout::Engine::Create(Context::Cpu(threads), model, version, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

struct Arrival {
  int64_t step = 0;  // engine step before which the request is submitted
  rollout::GenerateRequest request;
};

// Random requests: prompt lengths 1..150 that are never a multiple of the chunk or the tile,
// n ∈ {1, 2, 3}, greedy / T = 1 / T = 0.8, some top-k / top-p, 1..40 new tokens, some stop ids.
inline std::vector<Arrival> RandomWorkload(uint64_t seed, int64_t vocab, int num_requests) {
  std::mt19937_64 rng(seed);
  std::vector<Arrival> out;
  for (int i = 0; i < num_requests; ++i) {
    Arrival a;
    a.step = static_cast<int64_t>(rng() % 40);
    int64_t len = 1 + static_cast<int64_t>(rng() % 150);
    if (len % 64 == 0) ++len;
    for (int64_t t = 0; t < len; ++t)
      a.request.prompt.push_back(static_cast<int32_t>(rng() % vocab));
    rollout::SamplingOptions& s = a.request.sampling;
    s.n = 1 + static_cast<int64_t>(rng() % 3);
    const float temperatures[] = {1.0f, 1.0f, 0.8f, 0.0f};
    s.temperature = temperatures[rng() % 4];
    s.top_k = rng() % 3 == 0 ? 5 : 0;
    s.top_p = rng() % 3 == 0 ? 0.9f : 1.0f;
    s.max_new_tokens = 1 + static_cast<int64_t>(rng() % 40);
    if (rng() % 2 == 0) s.stop_token_ids = {static_cast<int32_t>(rng() % vocab)};
    s.seed = rng();
    out.push_back(a);
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Arrival& a, const Arrival& b) { return a.step < b.step; });
  return out;
}

struct WorkloadRun {
  std::vector<rollout::RequestResult> results;  // by arrival index
  int64_t preemptions = 0;
  int64_t max_batch = 0;
};

// Submits each request before its step and steps until everything finished.
inline WorkloadRun RunWorkload(rollout::Engine& engine, const std::vector<Arrival>& arrivals) {
  WorkloadRun run;
  std::map<rollout::RequestId, size_t> index;
  size_t next = 0;
  for (int64_t step = 0; next < arrivals.size() || engine.HasWork(); ++step) {
    for (; next < arrivals.size() && arrivals[next].step <= step; ++next) {
      absl::StatusOr<rollout::RequestId> id = engine.Submit(arrivals[next].request);
      EXPECT_TRUE(id.ok()) << id.status();
      if (id.ok()) index[*id] = next;
    }
    absl::StatusOr<rollout::StepStats> stats = engine.Step();
    EXPECT_TRUE(stats.ok()) << stats.status();
    if (!stats.ok()) break;
    run.max_batch = std::max(run.max_batch, stats->sequences);
  }
  run.results.resize(arrivals.size());
  for (rollout::RequestResult& r : engine.TakeFinished()) run.results[index.at(r.id)] = r;
  run.preemptions = engine.num_preemptions();
  return run;
}

// Every generated token's log-prob equals Forward's over prompt + generated, bitwise.
inline void ExpectExact(const model::HybridModel& model, const rollout::GenerateRequest& request,
                        const rollout::SampleResult& sample) {
  std::vector<int32_t> full = request.prompt;
  full.insert(full.end(), sample.tokens.begin(), sample.tokens.end());
  const float t = request.sampling.temperature == 0.0f ? 1.0f : request.sampling.temperature;
  std::vector<float> want = ForwardLogprobs(model, full, t);
  const size_t P = request.prompt.size();
  ASSERT_EQ(want.size(), P + sample.tokens.size() - 1);
  std::vector<float> mine(want.begin() + (P - 1), want.end());
  EXPECT_TRUE(BitwiseEqual(sample.logprobs, mine))
      << "prompt of " << P << " tokens, sample " << sample.sample_index;
}

// Runs a random workload (20 requests) and checks every sample: finished by stop or length,
// version 0 on every token, log-probs bitwise Forward's; and that forks, batching and preemption
// really happened. Leaves no memory in use. Returns the number of preemptions.
inline int64_t CheckWorkload(int threads, uint64_t seed, int64_t blocks, int64_t max_step_tokens) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed << ", " << threads << " threads");
  const model::HybridModel model = RandomModel(TinyHybridConfig(), seed);
  const std::vector<Arrival> arrivals = RandomWorkload(seed, 64, 20);
  auto engine = MakeEngine(model, blocks, 8, max_step_tokens, threads);
  if (engine == nullptr) return 0;
  WorkloadRun run = RunWorkload(*engine, arrivals);
  int64_t samples = 0, tokens = 0;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    const rollout::RequestResult& r = run.results[i];
    EXPECT_EQ(r.samples.size(), static_cast<size_t>(arrivals[i].request.sampling.n));
    for (const rollout::SampleResult& s : r.samples) {
      EXPECT_TRUE(s.finish_reason == rollout::FinishReason::kStop ||
                  s.finish_reason == rollout::FinishReason::kLength)
          << rollout::FinishReasonName(s.finish_reason) << " " << s.error;
      EXPECT_EQ(s.weight_versions, std::vector<int64_t>(s.tokens.size(), 0));
      ExpectExact(model, arrivals[i].request, s);
      ++samples;
      tokens += static_cast<int64_t>(s.tokens.size());
    }
  }
  // The workload really exercised forks and batching.
  std::printf("seed %lu: %ld samples, %ld tokens, max batch %ld, %ld preemptions\n",
              static_cast<unsigned long>(seed), static_cast<long>(samples),
              static_cast<long>(tokens), static_cast<long>(run.max_batch),
              static_cast<long>(run.preemptions));
  EXPECT_GT(samples, 20);
  EXPECT_GT(tokens, 100);
  EXPECT_GT(run.max_batch, 3);
  EXPECT_EQ(engine->memory().used_blocks, 0);
  EXPECT_EQ(engine->memory().used_slots, 0);
  return run.preemptions;
}

}  // namespace tandem::testing

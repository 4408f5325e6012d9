// The rollout engine on the GPU (label gpu; skips without a device): for every generated token,
// the log-prob the engine reported equals, bitwise, the GPU HybridModel::Forward's log-prob on the
// full sequence — random workloads with staggered arrivals, forks (n > 1), preemptions by
// recompute, greedy / sampled / top-k / top-p — for the tiny model and for a model with
// Ring-mini-linear-2.0's layer shapes. And determinism: a request's tokens do not depend on what
// else the GPU engine is serving. Mirrors tests/rollout/engine_exactness_test.cc.
#include <cstdint>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "model/device_weights.h"
#include "model/inference_cache.h"
#include "rollout/engine.h"
#include "tests/model/gpu/gpu_model_util.h"
#include "tests/rollout/engine_test_util.h"

namespace tandem::rollout {
namespace {

using testing::Arrival;
using testing::RunWorkload;

// A GPU engine over `host` (uploaded by Engine::Create) holding `max_sequences` slots and `blocks`
// KV blocks of GPU memory.
std::unique_ptr<Engine> MakeGpuEngine(const model::HybridModel& host, int64_t blocks,
                                      int64_t max_sequences, int64_t max_step_tokens) {
  EngineOptions options;
  options.max_sequences = max_sequences;
  options.max_step_tokens = max_step_tokens;
  options.memory_budget_bytes =
      max_sequences * model::InferenceCache::BytesPerSlot(host.config(), Device::kCUDA) +
      blocks * model::InferenceCache::BytesPerBlock(host.config(), Device::kCUDA);
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(testing::CudaContext(), host, 0, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// Every generated token's log-prob equals the GPU forward's over prompt + generated, bitwise.
void ExpectExactOnGpu(const Context& ctx, const model::HybridModel& gpu,
                      const GenerateRequest& request, const SampleResult& sample) {
  std::vector<int32_t> full = request.prompt;
  full.insert(full.end(), sample.tokens.begin(), sample.tokens.end());
  const int64_t T = static_cast<int64_t>(full.size());
  std::vector<int32_t> targets(full.begin() + 1, full.end());
  targets.push_back(-1);
  const float t = request.sampling.temperature == 0.0f ? 1.0f : request.sampling.temperature;
  model::ForwardInput input{
      Tensor::FromVector(full, {T}),
      Tensor::FromVector(std::vector<int32_t>{0, static_cast<int32_t>(T)}, {2}),
      Tensor::FromVector(targets, {T}), t};
  absl::StatusOr<Tensor> out = gpu.Forward(ctx, input);
  ASSERT_TRUE(out.ok()) << out.status();
  const size_t P = request.prompt.size();
  std::vector<float> want(out->data<float>() + (P - 1), out->data<float>() + (T - 1));
  EXPECT_TRUE(testing::BitwiseEqual(sample.logprobs, want))
      << "prompt of " << P << " tokens, sample " << sample.sample_index;
}

// Runs `arrivals` on a GPU engine and checks every sample; returns the preemption count.
int64_t CheckGpuWorkload(const model::HybridModel& host, const std::vector<Arrival>& arrivals,
                         int64_t blocks, int64_t max_step_tokens) {
  const Context ctx = testing::CudaContext();
  const model::HybridModel gpu = testing::GpuModel(ctx, host);
  auto engine = MakeGpuEngine(host, blocks, 8, max_step_tokens);
  if (engine == nullptr) return 0;
  testing::WorkloadRun run = RunWorkload(*engine, arrivals);
  int64_t samples = 0, tokens = 0;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    const RequestResult& r = run.results[i];
    EXPECT_EQ(r.samples.size(), static_cast<size_t>(arrivals[i].request.sampling.n));
    for (const SampleResult& s : r.samples) {
      EXPECT_TRUE(s.finish_reason == FinishReason::kStop ||
                  s.finish_reason == FinishReason::kLength)
          << FinishReasonName(s.finish_reason) << " " << s.error;
      ExpectExactOnGpu(ctx, gpu, arrivals[i].request, s);
      ++samples;
      tokens += static_cast<int64_t>(s.tokens.size());
    }
  }
  std::printf("%ld samples, %ld tokens, max batch %ld, %ld preemptions\n",
              static_cast<long>(samples), static_cast<long>(tokens),
              static_cast<long>(run.max_batch), static_cast<long>(run.preemptions));
  EXPECT_GT(tokens, 50);
  EXPECT_GT(run.max_batch, 3);
  EXPECT_EQ(engine->memory().used_blocks, 0);
  EXPECT_EQ(engine->memory().used_slots, 0);
  return run.preemptions;
}

// Budgets of 6–7 blocks for ~40 sequences of up to 190 positions force preemptions.
TEST(EngineCudaTest, TinyRandomWorkloadExact) {
  TANDEM_SKIP_WITHOUT_GPU();
  const model::ModelConfig config = testing::TinyGpuConfig();
  for (uint64_t seed : {1, 2}) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    const model::HybridModel host = testing::RandomModel(config, seed);
    const std::vector<Arrival> arrivals = testing::RandomWorkload(seed, config.vocab_size, 20);
    EXPECT_GT(CheckGpuWorkload(host, arrivals, 5 + seed, seed == 1 ? 100 : 160), 0);
  }
}

// Ring-mini-linear-2.0's layer shapes (5 layers, 64 experts): 8 requests, roomy memory.
TEST(EngineCudaTest, RingMiniShapeWorkloadExact) {
  TANDEM_SKIP_WITHOUT_GPU();
  const model::ModelConfig config = testing::RingMiniShapeConfig(5, 64);
  const Context ctx = testing::CudaContext();
  const model::HybridModel host(config, testing::FastRandomWeights(config, 11, ctx));
  std::vector<Arrival> arrivals = testing::RandomWorkload(7, config.vocab_size, 8);
  CheckGpuWorkload(host, arrivals, 64, 256);
}

// Same requests and seeds → same tokens and log-probs, whether a request runs alone in a roomy
// GPU engine or among others in a tight one (5 blocks: preemptions; 4 cannot hold the longest
// request).
TEST(EngineCudaTest, TokensDoNotDependOnConcurrency) {
  TANDEM_SKIP_WITHOUT_GPU();
  const model::HybridModel host = testing::RandomModel(testing::TinyGpuConfig(), 3);
  const std::vector<Arrival> arrivals = testing::RandomWorkload(3, 64, 12);
  auto tight = MakeGpuEngine(host, 5, 8, 100);
  ASSERT_NE(tight, nullptr);
  testing::WorkloadRun crowded = RunWorkload(*tight, arrivals);
  EXPECT_GT(crowded.preemptions, 0);
  for (size_t i = 0; i < arrivals.size(); ++i) {
    auto roomy = MakeGpuEngine(host, 64, 8, 512);
    ASSERT_NE(roomy, nullptr);
    testing::WorkloadRun alone = RunWorkload(*roomy, {Arrival{0, arrivals[i].request}});
    ASSERT_EQ(alone.results[0].samples.size(), crowded.results[i].samples.size());
    for (size_t s = 0; s < alone.results[0].samples.size(); ++s) {
      const SampleResult& a = alone.results[0].samples[s];
      const SampleResult& b = crowded.results[i].samples[s];
      EXPECT_EQ(a.tokens, b.tokens) << "request " << i << " sample " << s;
      EXPECT_TRUE(testing::BitwiseEqual(a.logprobs, b.logprobs));
    }
  }
}

}  // namespace
}  // namespace tandem::rollout

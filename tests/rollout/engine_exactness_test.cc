// The rollout engine's headline property (DESIGN.md §3): for every generated token, the log-prob
// the engine reported equals, bitwise, HybridModel::Forward's log-prob on the full sequence —
// under random workloads with staggered arrivals, changing batch sizes, prompt lengths that are not
// multiples of the chunk or the KV tile, n > 1 forks, preemptions by recompute, 1 and 2 threads.
// And determinism: a request's tokens do not depend on what else the engine is serving.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "tests/rollout/engine_test_util.h"

namespace tandem::rollout {
namespace {

using testing::Arrival;
using testing::RunWorkload;

// Budgets of 6–7 blocks (384–448 positions) for ~40 sequences of up to 190 positions force
// preemptions; step budgets of 100 and 160 tokens split prompts into chunk-aligned pieces.
TEST(EngineExactnessTest, RandomWorkloadOneThread) {
  for (uint64_t seed : {1, 2}) EXPECT_GT(testing::CheckWorkload(1, seed, 5 + seed, 100), 0);
}

TEST(EngineExactnessTest, RandomWorkloadTwoThreads) {
  for (uint64_t seed : {3, 4}) EXPECT_GT(testing::CheckWorkload(2, seed, 3 + seed, 160), 0);
}

// Same requests and seeds → same tokens and log-probs, whether the request runs alone in a roomy
// engine on one thread or among others in a tight one (preemptions) on two.
TEST(EngineExactnessTest, TokensDoNotDependOnConcurrency) {
  const model::HybridModel model = testing::RandomModel(testing::TinyHybridConfig(), 3);
  const std::vector<Arrival> arrivals = testing::RandomWorkload(3, 64, 16);
  auto tight = testing::MakeEngine(model, 6, 8, 100, 2);
  testing::WorkloadRun crowded = RunWorkload(*tight, arrivals);
  EXPECT_GT(crowded.preemptions, 0);
  for (size_t i = 0; i < arrivals.size(); ++i) {
    auto roomy = testing::MakeEngine(model, 64, 8, 512, 1);
    testing::WorkloadRun alone = RunWorkload(*roomy, {Arrival{0, arrivals[i].request}});
    ASSERT_EQ(alone.results[0].samples.size(), crowded.results[i].samples.size());
    for (size_t s = 0; s < alone.results[0].samples.size(); ++s) {
      const SampleResult& a = alone.results[0].samples[s];
      const SampleResult& b = crowded.results[i].samples[s];
      EXPECT_EQ(a.tokens, b.tokens) << "request " << i << " sample " << s;
      EXPECT_TRUE(testing::BitwiseEqual(a.logprobs, b.logprobs));
      EXPECT_EQ(a.finish_reason, b.finish_reason);
    }
  }
}

}  // namespace
}  // namespace tandem::rollout

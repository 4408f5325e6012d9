// A larger random sweep of the engine exactness check (engine_exactness_test.cc): 24 workloads of
// 20 requests each with different seeds, thread counts, memory budgets (5–7 KV blocks) and step
// token budgets (64–512). Labelled slow.
#include <cstdint>

#include "gtest/gtest.h"
#include "tests/rollout/engine_test_util.h"

namespace tandem::rollout {
namespace {

TEST(EngineExactnessSweepTest, ManyRandomWorkloads) {
  const int64_t step_budgets[] = {64, 100, 200, 512};
  int64_t preemptions = 0;
  for (uint64_t seed = 100; seed < 124; ++seed) {
    preemptions +=
        testing::CheckWorkload(1 + static_cast<int>(seed % 2), seed,
                               5 + static_cast<int64_t>(seed % 3), step_budgets[(seed / 2) % 4]);
  }
  EXPECT_GT(preemptions, 24);
}

}  // namespace
}  // namespace tandem::rollout

// GRPO learns (label slow): the demo recipe (configs/runs/grpo-demo-tiny.yaml) in one process with
// an in-process engine, cut to 60 GRPO steps: the training reward rises well above its start, the
// held-out accuracy rises, and the rollout-vs-trainer log-prob mismatch is exactly 0 on every
// trained token of every step. The full run is recorded in docs/rl.md.
#include <cstdio>
#include <filesystem>

#include "gtest/gtest.h"
#include "trainer/rl_config.h"
#include "trainer/rl_loop.h"

namespace tandem::trainer {
namespace {

double MeanReward(const std::vector<RlStepMetrics>& steps, size_t begin, size_t end) {
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += steps[i].reward_mean;
  return sum / static_cast<double>(end - begin);
}

TEST(RlLearningTest, RewardAndHeldOutAccuracyRise) {
  const std::string out = ::testing::TempDir() + "/rl_learning";
  std::filesystem::remove_all(out);
  absl::StatusOr<RlRunConfig> config = LoadRlRunConfig(
      "configs/runs/grpo-demo-tiny.yaml",
      {"rollout.backend=inprocess", "rollout.workers=1", "trainer.total_steps=60",
       "eval.every_steps=60", "checkpoint.every_steps=0", "trainer.output_dir=" + out});
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<RlResult> r = RunRl(*config);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->steps.size(), 60u);
  for (const RlStepMetrics& m : r->steps) {
    ASSERT_EQ(m.mismatch.tokens_compared, m.mismatch.tokens_total) << "step " << m.step;
    ASSERT_EQ(m.mismatch.tokens_differ, 0) << "step " << m.step;
    ASSERT_EQ(m.mismatch.max_abs_diff, 0.0) << "step " << m.step;
  }
  const double first = MeanReward(r->steps, 0, 10), last = MeanReward(r->steps, 50, 60);
  ASSERT_TRUE(r->initial_eval_accuracy.has_value() && r->final_eval_accuracy.has_value());
  std::printf("reward %.3f -> %.3f, held-out accuracy %.1f%% -> %.1f%%\n", first, last,
              100 * *r->initial_eval_accuracy, 100 * *r->final_eval_accuracy);
  EXPECT_GT(last, first + 0.1);
  EXPECT_GT(*r->final_eval_accuracy, *r->initial_eval_accuracy + 0.1);
  EXPECT_LE(*r->initial_eval_accuracy, 0.4);  // the warm start leaves room for RL
}

}  // namespace
}  // namespace tandem::trainer

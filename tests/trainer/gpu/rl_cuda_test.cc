// `tandem train --device cuda` end to end (label gpu; skips without a device): the GRPO demo
// recipe with the GPU model config, a short SFT warm start and a few RL steps, the trainer and
// an in-process rollout engine on one GPU. Every trained token was sampled by the weights the
// trainer holds (sync mode), so every rollout log-prob must equal the trainer's bit for bit:
// the numerics contract on the GPU, through weight publishing, the engine's paged decode and the
// trainer's training forward.
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/subprocess.h"

namespace tandem::trainer {
namespace {

using testing::CommandResult;
using testing::RunCommand;
using testing::Stderr;
using testing::TempDir;

TEST(RlCudaTest, RolloutAndTrainerLogprobsAreBitwiseEqualOnTheGpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  TempDir dir("rl_cuda");
  const std::string cmd =
      std::string(TANDEM_BIN) +
      " train --config configs/runs/grpo-demo-tiny.yaml --device cuda"
      " model.config=configs/models/tiny-hybrid-addition-gpu.json rollout.backend=inprocess"
      " rollout.workers=1 warm_start.steps=20 data.prompts_per_step=16 trainer.total_steps=4"
      " eval.examples=32 eval.every_steps=4 checkpoint.every_steps=4 trainer.output_dir=" +
      dir.Sub("run");
  const CommandResult r = RunCommand(cmd, Stderr::kSeparate);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["device"], "cuda");
  EXPECT_EQ(summary["final_step"], 4);
  EXPECT_TRUE(summary["warm_started"].get<bool>());
  EXPECT_EQ(summary["trajectories"], 4 * 16 * 8);
  EXPECT_GT(summary["mismatch_tokens"].get<int64_t>(), 0) << summary.dump();
  EXPECT_EQ(summary["mismatch_max_abs"].get<double>(), 0.0) << summary.dump();
  EXPECT_TRUE(summary.contains("final_eval_accuracy")) << summary.dump();
}

}  // namespace
}  // namespace tandem::trainer

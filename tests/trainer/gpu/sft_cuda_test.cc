// `tandem sft --device cuda` end to end (label gpu; skips without a device): the addition run of
// configs/runs/sft-addition-tiny.yaml with its model at head_dim 32
// (configs/models/tiny-hybrid-addition-gpu.json: the GPU attention kernels take D in {32, 64,
// 128}, the CPU config's D = 8 is none of them) trains on the GPU for a few dozen steps: the loss
// falls, the first step's loss is the CPU's up to the bf16 compute cast, the checkpoint (written
// from the fp32 master) loads and resumes on the GPU, and the held-out eval runs there too.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/subprocess.h"
#include "trainer/checkpoint.h"

namespace tandem::trainer {
namespace {

using testing::CommandResult;
using ::testing::HasSubstr;
using testing::RunCommand;
using testing::Stderr;
using testing::TempDir;

constexpr int kSteps = 60;

// `tandem sft` on the tiny addition run with the GPU model config, `steps` total steps, a
// checkpoint at the end, output under `out`; `extra` adds flags or overrides.
CommandResult Sft(const std::string& out, int steps, const std::string& extra) {
  const std::string cmd =
      std::string(TANDEM_BIN) +
      " sft --config configs/runs/sft-addition-tiny.yaml"
      " model.config=configs/models/tiny-hybrid-addition-gpu.json trainer.total_steps=" +
      std::to_string(steps) +
      " trainer.log_every=1 checkpoint.every_steps=" + std::to_string(steps) +
      " trainer.output_dir=" + out + " " + extra;
  return RunCommand(cmd, Stderr::kSeparate);
}

// The loss of every line of metrics.jsonl (log_every 1: one per step).
std::vector<double> Losses(const std::string& out) {
  std::vector<double> losses;
  std::ifstream in(out + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    losses.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  }
  return losses;
}

TEST(SftCudaTest, TrainsOnTheGpuAndCheckpointsTheMaster) {
  TANDEM_SKIP_WITHOUT_GPU();
  TempDir dir("sft_cuda");
  const std::string out = dir.Sub("gpu");
  const CommandResult r = Sft(out, kSteps, "--device cuda --eval-every 0 --eval-examples 50");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["device"], "cuda");
  EXPECT_EQ(summary["final_step"], kSteps);
  EXPECT_TRUE(summary.contains("final_exact_match")) << summary.dump();

  // The loss falls: at lr warmup over 20 steps the CPU run is at ~1.3 by step 50 from ln 16 = 2.8.
  const std::vector<double> losses = Losses(out);
  ASSERT_EQ(losses.size(), static_cast<size_t>(kSteps));
  double tail = 0;
  for (int i = kSteps - 10; i < kSteps; ++i) tail += losses[i] / 10;
  EXPECT_LT(tail, 0.7 * losses[0]) << "first " << losses[0] << ", mean of the last 10 " << tail;
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));

  // Step 1 from the same initial weights on the CPU: the losses differ by the bf16 rounding of
  // the GPU's weights and GEMM operands only (a mean over ~680 tokens of log-prob differences).
  const std::string cpu_out = dir.Sub("cpu");
  const CommandResult c = Sft(cpu_out, 1, "--eval-every -1");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const std::vector<double> cpu_losses = Losses(cpu_out);
  ASSERT_EQ(cpu_losses.size(), 1u);
  EXPECT_NEAR(losses[0], cpu_losses[0], 0.02);

  // The checkpoint holds the fp32 master of the last step and loads.
  const std::string ckpt = summary["checkpoint"].get<std::string>();
  absl::StatusOr<LoadedCheckpoint> loaded = LoadTrainingCheckpoint(ckpt);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->loop.step, kSteps);
  EXPECT_EQ(loaded->optimizer.step, kSteps);
  EXPECT_EQ(loaded->config.head_dim, 32);
  bool finite = true;
  loaded->weights.ForEachParameter([&](const std::string&, const Tensor& t) {
    for (int64_t i = 0; i < t.numel(); ++i) finite = finite && std::isfinite(t.data<float>()[i]);
  });
  EXPECT_TRUE(finite);

  // And the run resumes from it on the GPU (master and moments uploaded again).
  const CommandResult resumed = Sft(out, kSteps + 2, "--device cuda --eval-every -1");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  const nlohmann::json s2 = nlohmann::json::parse(resumed.out);
  EXPECT_EQ(s2["start_step"], kSteps);
  EXPECT_EQ(s2["final_step"], kSteps + 2);
}

// No GPU needed: a bad --device value is rejected by the flag parser.
TEST(SftCudaTest, RejectsAnUnknownDevice) {
  TempDir dir("sft_cuda_bad");
  const CommandResult r = Sft(dir.Sub("out"), 1, "--device tpu");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--device"));
}

}  // namespace
}  // namespace tandem::trainer

// The embedded default end to end (label integration): 2 `tandem rollout serve` processes and the
// trainer on loopback gRPC run GRPO steps with the log-prob mismatch exactly 0 on every trained
// token. One worker is SIGKILLed right after a step's requests went out: every prompt of that step
// is still trained on (its requests are retried on the other worker under the same ids), with
// every trajectory counted once. A second test drives the same through `tandem train`.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "trainer/rl_config.h"
#include "trainer/rl_grpc_worker.h"
#include "trainer/rl_loop.h"

namespace tandem::trainer {
namespace {

// A fresh directory for one test's run.
std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

// Runs a shell command; returns (exit code, stdout). stderr goes to `stderr_path`.
std::pair<int, std::string> RunShell(const std::string& command, const std::string& stderr_path) {
  std::FILE* p = popen((command + " 2>" + stderr_path).c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

constexpr int64_t kPrompts = 8, kSamples = 4, kSteps = 4;

RlRunConfig IntegrationConfig(const std::string& out) {
  absl::StatusOr<RlRunConfig> c = LoadRlRunConfig(
      "configs/runs/grpo-demo-tiny.yaml",
      {"rollout.backend=local", "rollout.workers=2",
       std::string("rollout.server_binary=") + TANDEM_BIN, "rollout.request_timeout_s=60",
       "warm_start.steps=0", "data.prompts_per_step=" + std::to_string(kPrompts),
       "grpo.samples_per_prompt=" + std::to_string(kSamples), "grpo.max_new_tokens=8",
       "trainer.total_steps=" + std::to_string(kSteps), "trainer.num_threads=1", "eval.examples=0",
       "checkpoint.every_steps=0", "trainer.output_dir=" + out});
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

void ExpectExact(const RlStepMetrics& m) {
  EXPECT_GT(m.mismatch.tokens_compared, 0) << "step " << m.step;
  EXPECT_EQ(m.mismatch.tokens_compared, m.mismatch.tokens_total) << "step " << m.step;
  EXPECT_EQ(m.mismatch.tokens_differ, 0) << "step " << m.step;
  EXPECT_EQ(m.mismatch.max_abs_diff, 0.0) << "step " << m.step;
}

TEST(RlIntegrationTest, TwoWorkerProcessesOneKilledMidStep) {
  const RlRunConfig config = IntegrationConfig(FreshDir("rl_integration"));
  std::vector<pid_t> pids;
  RlLoopOptions options;
  options.make_workers = [&](const model::ModelConfig& mc, const model::ModelWeights& w,
                             int64_t version) {
    absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> workers =
        SpawnLocalWorkers(config, mc, w, version);
    if (workers.ok()) {
      for (auto& worker : *workers) pids.push_back(static_cast<GrpcWorker&>(*worker).pid());
    }
    return workers;
  };
  int64_t killed_at = -1;
  options.after_submit = [&](int64_t step) {
    if (step != 2) return;
    ASSERT_EQ(pids.size(), 2u);
    ASSERT_EQ(kill(pids[1], SIGKILL), 0);  // mid-step: its share of step 2 is in flight
    killed_at = step;
  };
  absl::StatusOr<RlResult> r = RunRl(config, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(killed_at, 2);
  ASSERT_EQ(r->steps.size(), static_cast<size_t>(kSteps));
  for (const RlStepMetrics& m : r->steps) {
    ExpectExact(m);
    EXPECT_EQ(m.prompts, kPrompts) << "step " << m.step;
    EXPECT_EQ(m.trajectories, kPrompts * kSamples) << "step " << m.step;
    EXPECT_EQ(m.live_workers, m.step < 2 ? 2 : 1) << "step " << m.step;
  }
  // Nothing lost, nothing counted twice.
  EXPECT_EQ(r->trajectories_trained, kSteps * kPrompts * kSamples);
  EXPECT_EQ(r->pool.requests_completed, kSteps * kPrompts);
  EXPECT_EQ(r->pool.samples_received, kSteps * kPrompts * kSamples);
  EXPECT_EQ(r->pool.dead_workers, 1);
  EXPECT_GE(r->pool.retries, 1);
  std::printf("retries %ld, failed attempts %ld, duplicate samples %ld\n",
              static_cast<long>(r->pool.retries), static_cast<long>(r->pool.failed_attempts),
              static_cast<long>(r->pool.duplicate_samples));
}

TEST(RlIntegrationTest, TandemTrainWithTheEmbeddedDefault) {
  const std::string out = FreshDir("rl_integration_cli");
  const std::string cmd =
      std::string(TANDEM_BIN) +
      " train --config configs/runs/grpo-demo-tiny.yaml rollout.backend=local rollout.workers=2"
      " warm_start.steps=0 data.prompts_per_step=4 grpo.samples_per_prompt=4"
      " trainer.total_steps=3 trainer.num_threads=1 eval.examples=20 eval.every_steps=3"
      " checkpoint.every_steps=0 trainer.output_dir=" +
      out;
  const auto [code, stdout_text] = RunShell(cmd, out + ".stderr");
  ASSERT_EQ(code, 0) << "see " << out << ".stderr";
  const nlohmann::json summary = nlohmann::json::parse(stdout_text);
  EXPECT_EQ(summary["final_step"], 3);
  EXPECT_EQ(summary["trajectories"], 48);
  EXPECT_EQ(summary["mismatch_max_abs"], 0.0);
  EXPECT_GT(summary["mismatch_tokens"].get<int64_t>(), 0);
  EXPECT_TRUE(summary.contains("final_eval_accuracy"));
  EXPECT_EQ(summary["dead_workers"], 0);
}

}  // namespace
}  // namespace tandem::trainer

// The GRPO loop in one process (in-process engines): every step's log-prob mismatch is exactly 0
// on every trained token; metrics and TensorBoard files are written; stop + resume gives the same
// weight bits as an uninterrupted run; a worker that fails mid-step loses no sample and counts
// none twice.
#include "trainer/rl_loop.h"

#include <atomic>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "model/weights_hash.h"
#include "trainer/checkpoint.h"
#include "trainer/rl_inprocess_worker.h"

namespace tandem::trainer {
namespace {

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

RlRunConfig SmallConfig(const std::string& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {
      "rollout.backend=inprocess", "rollout.workers=2",         "warm_start.steps=0",
      "data.prompts_per_step=4",   "grpo.samples_per_prompt=4", "trainer.total_steps=3",
      "trainer.num_threads=2",     "eval.examples=16",          "eval.every_steps=2",
      "checkpoint.every_steps=1",  "trainer.output_dir=" + out};
  o.insert(o.end(), extra.begin(), extra.end());
  absl::StatusOr<RlRunConfig> c = LoadRlRunConfig("configs/runs/grpo-demo-tiny.yaml", o);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

void ExpectExact(const RlResult& r) {
  for (const RlStepMetrics& m : r.steps) {
    EXPECT_GT(m.mismatch.tokens_compared, 0) << "step " << m.step;
    EXPECT_EQ(m.mismatch.tokens_compared, m.mismatch.tokens_total) << "step " << m.step;
    EXPECT_EQ(m.mismatch.tokens_differ, 0) << "step " << m.step;
    EXPECT_EQ(m.mismatch.max_abs_diff, 0.0) << "step " << m.step;
    EXPECT_EQ(m.approx_kl, 0.0) << "step " << m.step;
  }
}

uint64_t CheckpointHash(const std::string& dir) {
  absl::StatusOr<LoadedCheckpoint> c = LoadTrainingCheckpoint(dir);
  EXPECT_TRUE(c.ok()) << c.status();
  return model::WeightsHash(c->weights);
}

TEST(RlLoopTest, SyncStepsAreExactAndLogged) {
  const std::string out = FreshDir("rl_loop_sync");
  const RlRunConfig config = SmallConfig(out);
  absl::StatusOr<RlResult> r = RunRl(config);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->steps.size(), 3u);
  ExpectExact(*r);
  for (const RlStepMetrics& m : r->steps) {
    EXPECT_EQ(m.trajectories, 16);
    EXPECT_EQ(m.prompts, 4);
    EXPECT_EQ(m.staleness_max, 0);
    EXPECT_EQ(m.live_workers, 2);
    EXPECT_GT(m.rollout_tokens, 0);
  }
  EXPECT_EQ(r->trajectories_trained, 48);
  EXPECT_TRUE(r->initial_eval_accuracy.has_value());
  EXPECT_TRUE(r->final_eval_accuracy.has_value());
  std::ifstream in(out + "/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 4);  // step 0 (evaluation before RL) and steps 1-3
  int events = 0;
  for (const auto& e : std::filesystem::directory_iterator(out + "/tensorboard")) {
    events += e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  }
  EXPECT_EQ(events, 1);
}

TEST(RlLoopTest, StopAndResumeReproducesTheRun) {
  const std::string a = FreshDir("rl_loop_straight"), b = FreshDir("rl_loop_resumed");
  absl::StatusOr<RlResult> straight = RunRl(SmallConfig(a, {"trainer.total_steps=4"}));
  ASSERT_TRUE(straight.ok()) << straight.status();
  const RlRunConfig cb = SmallConfig(b, {"trainer.total_steps=4"});
  RlLoopOptions first;
  first.max_steps_this_run = 2;
  absl::StatusOr<RlResult> part1 = RunRl(cb, first);
  ASSERT_TRUE(part1.ok()) << part1.status();
  EXPECT_EQ(part1->final_step, 2);
  absl::StatusOr<RlResult> part2 = RunRl(cb);
  ASSERT_TRUE(part2.ok()) << part2.status();
  EXPECT_EQ(part2->start_step, 2);
  EXPECT_EQ(part2->final_step, 4);
  ExpectExact(*part2);
  EXPECT_EQ(CheckpointHash(straight->last_checkpoint), CheckpointHash(part2->last_checkpoint));
}

// Delivers the first half of a request's samples, then fails the attempt as a dead connection
// would, once `armed`; afterwards it refuses everything (a dead process).
class DyingWorker : public RolloutWorker {
 public:
  DyingWorker(std::unique_ptr<RolloutWorker> inner, std::atomic<bool>* armed)
      : inner_(std::move(inner)), armed_(armed) {}
  std::string name() const override { return "dying"; }
  void Generate(const RolloutRequest& request, Callbacks cb) override {
    if (dead_) return cb.on_done(absl::UnavailableError("connection refused"));
    if (!armed_->load()) return inner_->Generate(request, std::move(cb));
    dead_ = true;
    auto count = std::make_shared<int64_t>(0);
    const int64_t half = request.request.sampling.n / 2;
    Callbacks wrapped;
    wrapped.on_sample = [cb, count, half](rollout::SampleResult s) {
      if ((*count)++ < half) cb.on_sample(std::move(s));
    };
    wrapped.on_done = [cb](absl::Status) { cb.on_done(absl::UnavailableError("socket closed")); };
    inner_->Generate(request, std::move(wrapped));
  }
  absl::StatusOr<uint64_t> UpdateWeights(int64_t v, const model::ModelWeights& w,
                                         rollout::WeightUpdateMode m) override {
    if (dead_) return absl::UnavailableError("connection refused");
    return inner_->UpdateWeights(v, w, m);
  }

 private:
  std::unique_ptr<RolloutWorker> inner_;
  std::atomic<bool>* armed_;
  std::atomic<bool> dead_{false};
};

TEST(RlLoopTest, AWorkerDyingMidStepLosesNothing) {
  const std::string out = FreshDir("rl_loop_dying");
  const RlRunConfig config = SmallConfig(out, {"checkpoint.every_steps=0", "eval.examples=0"});
  std::atomic<bool> armed{false};
  RlLoopOptions options;
  options.make_workers =
      [&](const model::ModelConfig& mc, const model::ModelWeights& w,
          int64_t version) -> absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> {
    std::vector<std::unique_ptr<RolloutWorker>> workers;
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<std::unique_ptr<InProcessWorker>> inner =
          InProcessWorker::Create("w" + std::to_string(i), mc, w, version, 1, {});
      if (!inner.ok()) return inner.status();
      if (i == 0) {
        workers.push_back(std::make_unique<DyingWorker>(*std::move(inner), &armed));
      } else {
        workers.push_back(*std::move(inner));
      }
    }
    return workers;
  };
  options.after_submit = [&](int64_t step) {
    if (step == 1) armed = true;  // requests of step 1 are already dispatched; step 2's will die
  };
  absl::StatusOr<RlResult> r = RunRl(config, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->steps.size(), 3u);
  ExpectExact(*r);
  for (const RlStepMetrics& m : r->steps) EXPECT_EQ(m.trajectories, 16) << "step " << m.step;
  EXPECT_EQ(r->trajectories_trained, 48);
  EXPECT_EQ(r->pool.dead_workers, 1);
  EXPECT_GE(r->pool.retries, 1);
  EXPECT_EQ(r->pool.samples_received, 48);  // unique (request id, sample index) pairs
  EXPECT_EQ(r->pool.duplicate_samples, 2);  // the half the dying worker delivered, re-sent
  EXPECT_EQ(r->pool.requests_completed, 12);
}

}  // namespace
}  // namespace tandem::trainer

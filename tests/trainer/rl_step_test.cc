// The GRPO step's pieces: group advantages over trajectories, packing (the RL inputs land on the
// positions that predict each response token), and the numerics contract on real samples: the
// rollout engine's log-probs equal the trainer forward's bit for bit under any packing and thread
// count, and the mismatch metric notices a single flipped bit and skips other versions' tokens.
#include "trainer/rl_step.h"

#include <bit>
#include <cmath>

#include "gtest/gtest.h"
#include "model/config.h"
#include "rollout/engine.h"
#include "trainer/rl_inprocess_worker.h"

namespace tandem::trainer {
namespace {

Trajectory MakeTrajectory(int64_t group, std::vector<int32_t> prompt, std::vector<int32_t> resp,
                          float reward) {
  Trajectory t;
  t.group = group;
  t.prompt = std::move(prompt);
  t.response = std::move(resp);
  for (size_t j = 0; j < t.response.size(); ++j) {
    t.logprobs.push_back(-0.1f * static_cast<float>(j + 1));
    t.versions.push_back(static_cast<int64_t>(j));
  }
  t.reward = reward;
  return t;
}

TEST(RlStepTest, GroupAdvantagesArePerGroup) {
  std::vector<Trajectory> t = {MakeTrajectory(0, {2}, {5}, 1), MakeTrajectory(0, {2}, {5}, 0),
                               MakeTrajectory(1, {2}, {5}, 1), MakeTrajectory(1, {2}, {5}, 1)};
  ASSERT_TRUE(AssignGroupAdvantages(t, 2, {}).ok());
  // Group 0: mean 0.5, sample std 0.7071; group 1: all equal → 0.
  EXPECT_NEAR(t[0].advantage, 0.5 / (std::sqrt(0.5) + 1e-6), 1e-6);
  EXPECT_NEAR(t[1].advantage, -0.5 / (std::sqrt(0.5) + 1e-6), 1e-6);
  EXPECT_EQ(t[2].advantage, 0.0f);
  EXPECT_EQ(t[3].advantage, 0.0f);
  std::vector<Trajectory> bad = {MakeTrajectory(0, {2}, {5}, 1), MakeTrajectory(1, {2}, {5}, 0)};
  EXPECT_FALSE(AssignGroupAdvantages(bad, 2, {}).ok());
}

TEST(RlStepTest, PackingPutsRolloutInputsOnThePredictingPositions) {
  std::vector<Trajectory> t = {MakeTrajectory(0, {2, 7, 8}, {9, 10, 1}, 1),
                               MakeTrajectory(0, {2, 7}, {11, 1}, 0)};
  t[0].advantage = 0.5f;
  t[1].advantage = -0.5f;
  absl::StatusOr<std::vector<RlMicroBatch>> mbs = PackTrajectories(t, 64);
  ASSERT_TRUE(mbs.ok()) << mbs.status();
  ASSERT_EQ(mbs->size(), 1u);
  const RlMicroBatch& mb = (*mbs)[0];
  // Sequence 0: tokens 2 7 8 9 10 1 (positions 0..5); response tokens predicted at 2, 3, 4.
  // Sequence 1: tokens 2 7 11 1 (positions 6..9); response predicted at 7, 8.
  const std::vector<int32_t> targets = {-1, -1, 9, 10, 1, -1, -1, 11, 1, -1};
  EXPECT_EQ(mb.batch.targets, targets);
  const std::vector<int64_t> versions = {-1, -1, 0, 1, 2, -1, -1, 0, 1, -1};
  EXPECT_EQ(mb.version, versions);
  EXPECT_EQ(mb.logp_rollout[3], -0.2f);
  EXPECT_EQ(mb.advantage[4], 0.5f);
  EXPECT_EQ(mb.advantage[8], -0.5f);
  EXPECT_EQ(mb.advantage[5], 0.0f);
  // Two micro-batches when the budget holds one sequence.
  absl::StatusOr<std::vector<RlMicroBatch>> split = PackTrajectories(t, 6);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ(split->size(), 2u);
  t[1].versions.pop_back();
  EXPECT_FALSE(PackTrajectories(t, 64).ok());
}

// Samples from a real engine at version 0, as trajectories.
std::vector<Trajectory> Sample(const model::ModelConfig& config, const model::ModelWeights& w,
                               float temperature) {
  rollout::EngineOptions eo;
  auto engine = rollout::Engine::Create(Context::Cpu(1),
                                        model::HybridModel(config, CopyModelWeights(config, w)),
                                        /*weight_version=*/0, eo);
  EXPECT_TRUE(engine.ok());
  const std::vector<std::vector<int32_t>> prompts = {{2, 5, 6, 7}, {2, 9}, {2, 4, 4, 4, 4, 4, 5}};
  for (size_t p = 0; p < prompts.size(); ++p) {
    rollout::GenerateRequest r;
    r.prompt = prompts[p];
    r.sampling.n = 4;
    r.sampling.temperature = temperature;
    r.sampling.max_new_tokens = 9;
    r.sampling.stop_token_ids = {1};
    r.sampling.seed = 11 + p;
    EXPECT_TRUE((*engine)->Submit(r).ok());
  }
  EXPECT_TRUE((*engine)->RunUntilIdle().ok());
  std::vector<Trajectory> out;
  std::vector<rollout::RequestResult> done = (*engine)->TakeFinished();
  std::sort(done.begin(), done.end(), [](auto& a, auto& b) { return a.id < b.id; });
  for (size_t p = 0; p < done.size(); ++p) {
    for (size_t k = 0; k < done[p].samples.size(); ++k) {
      rollout::SampleResult& s = done[p].samples[k];
      Trajectory t;
      t.group = static_cast<int64_t>(p);
      t.prompt = prompts[p];
      t.response = s.tokens;
      t.logprobs = s.logprobs;
      t.versions = s.weight_versions;
      // Half of each group rewarded, whatever was drawn: every group has non-zero advantages.
      t.reward = static_cast<float>(k % 2);
      out.push_back(std::move(t));
    }
  }
  return out;
}

LogprobMismatch Compare(const model::HybridModel& model, std::span<const Trajectory> t,
                        int64_t budget, int threads, float temperature, int64_t version) {
  absl::StatusOr<std::vector<RlMicroBatch>> mbs = PackTrajectories(t, budget);
  EXPECT_TRUE(mbs.ok());
  LogprobMismatch m;
  const Context ctx = Context::Cpu(threads);
  for (const RlMicroBatch& mb : *mbs) {
    absl::StatusOr<Tensor> logp = model.Forward(ctx, ToForwardInput(mb.batch, temperature));
    EXPECT_TRUE(logp.ok());
    AccumulateMismatch(mb, std::span<const float>(logp->data<float>(), logp->numel()), version, m);
  }
  return m;
}

TEST(RlStepTest, RolloutLogprobsEqualTrainerLogprobsBitwise) {
  absl::StatusOr<model::ModelConfig> config =
      model::LoadModelConfig("configs/models/tiny-hybrid.json");
  ASSERT_TRUE(config.ok()) << config.status();
  model::ModelWeights w = model::AllocateWeights(*config);
  model::InitWeights(*config, 5, w);
  const model::HybridModel model(*config, CopyModelWeights(*config, w));
  for (float temperature : {1.0f, 0.7f}) {
    std::vector<Trajectory> t = Sample(*config, w, temperature);
    ASSERT_EQ(t.size(), 12u);
    int64_t tokens = 0;
    for (const Trajectory& x : t) tokens += static_cast<int64_t>(x.response.size());
    for (int64_t budget : {int64_t{4096}, int64_t{20}}) {
      for (int threads : {1, 2}) {
        const LogprobMismatch m = Compare(model, t, budget, threads, temperature, 0);
        EXPECT_EQ(m.tokens_total, tokens);
        EXPECT_EQ(m.tokens_compared, tokens);
        EXPECT_EQ(m.tokens_differ, 0) << "budget " << budget << " threads " << threads;
        EXPECT_EQ(m.max_abs_diff, 0.0);
      }
    }
    // One flipped low bit is found; tokens of another version are not compared.
    t[3].logprobs[0] = std::bit_cast<float>(std::bit_cast<uint32_t>(t[3].logprobs[0]) ^ 1u);
    t[5].versions.assign(t[5].versions.size(), 7);
    const LogprobMismatch m = Compare(model, t, 4096, 1, temperature, 0);
    EXPECT_EQ(m.tokens_differ, 1);
    EXPECT_GT(m.max_abs_diff, 0.0);
    EXPECT_EQ(m.tokens_compared, tokens - static_cast<int64_t>(t[5].response.size()));
  }
}

TEST(RlStepTest, TrainStepReportsExactMismatchAndUpdatesWeights) {
  absl::StatusOr<model::ModelConfig> config =
      model::LoadModelConfig("configs/models/tiny-hybrid.json");
  ASSERT_TRUE(config.ok());
  model::ModelWeights w = model::AllocateWeights(*config);
  model::InitWeights(*config, 9, w);
  std::vector<Trajectory> t = Sample(*config, w, 1.0f);
  ASSERT_TRUE(AssignGroupAdvantages(t, 4, {}).ok());
  model::HybridModel model(*config, CopyModelWeights(*config, w));
  absl::StatusOr<AdamW> adam = AdamW::Create(*config, {}, {LrScheduleKind::kConstant, 1e-2});
  ASSERT_TRUE(adam.ok());
  model::ModelWeights grads = model::AllocateWeights(*config);
  std::unique_ptr<Collective> local = MakeLocalCollective();
  RlStepOptions options;
  options.max_tokens_per_micro_batch = 24;  // several micro-batches
  absl::StatusOr<RlStepResult> r =
      RlTrainStep(Context::Cpu(2), *local, model, *adam, grads, t, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->mismatch.tokens_differ, 0);
  EXPECT_EQ(r->mismatch.max_abs_diff, 0.0);
  EXPECT_EQ(r->mismatch.tokens_compared, r->trained_tokens);
  EXPECT_EQ(r->approx_kl, 0.0);  // ratio exactly 1 on every token
  EXPECT_EQ(r->mean_ratio, 1.0);
  EXPECT_EQ(r->clip_fraction, 0.0);
  EXPECT_GT(r->entropy, 0.0);
  EXPECT_LT(r->entropy, std::log(64.0) + 1e-3);
  EXPECT_GT(r->optimizer.grad_norm, 0.0);
  EXPECT_NE(model.weights().lm_head.data<float>()[0], w.lm_head.data<float>()[0]);
}

// Σ of the trainer's log-probs over each trajectory's response tokens.
std::vector<double> ResponseLogprobs(const model::HybridModel& model,
                                     std::span<const Trajectory> t) {
  std::vector<double> out;
  for (const Trajectory& x : t) {
    absl::StatusOr<std::vector<RlMicroBatch>> mbs = PackTrajectories(std::span(&x, 1), 4096);
    absl::StatusOr<Tensor> logp = model.Forward(Context::Cpu(1), ToForwardInput((*mbs)[0].batch));
    double sum = 0;
    for (int64_t i = 0; i < logp->numel(); ++i) sum += logp->data<float>()[i];
    out.push_back(sum);
  }
  return out;
}

TEST(RlStepTest, StepRaisesTheLikelihoodOfRewardedSamples) {
  absl::StatusOr<model::ModelConfig> config =
      model::LoadModelConfig("configs/models/tiny-hybrid.json");
  ASSERT_TRUE(config.ok());
  model::ModelWeights w = model::AllocateWeights(*config);
  model::InitWeights(*config, 4, w);
  std::vector<Trajectory> t = Sample(*config, w, 1.0f);
  for (size_t i = 0; i < t.size(); ++i) t[i].sample_index = static_cast<int64_t>(i % 4);
  for (Trajectory& x : t) x.reward = x.sample_index == 0 ? 1.0f : 0.0f;
  ASSERT_TRUE(AssignGroupAdvantages(t, 4, {}).ok());
  model::HybridModel model(*config, CopyModelWeights(*config, w));
  const std::vector<double> before = ResponseLogprobs(model, t);
  absl::StatusOr<AdamW> adam = AdamW::Create(*config, {}, {LrScheduleKind::kConstant, 1e-3});
  ASSERT_TRUE(adam.ok());
  model::ModelWeights grads = model::AllocateWeights(*config);
  std::unique_ptr<Collective> local = MakeLocalCollective();
  for (int step = 0; step < 3; ++step) {
    ASSERT_TRUE(RlTrainStep(Context::Cpu(1), *local, model, *adam, grads, t, {}).ok());
  }
  const std::vector<double> after = ResponseLogprobs(model, t);
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i].advantage > 0) {
      EXPECT_GT(after[i], before[i]) << "rewarded sample " << i;
    }
    if (t[i].advantage < 0) {
      EXPECT_LT(after[i], before[i]) << "unrewarded sample " << i;
    }
  }
}

}  // namespace
}  // namespace tandem::trainer

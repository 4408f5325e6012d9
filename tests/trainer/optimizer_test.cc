// Optimizer: LR schedule at its boundaries, which tensors decay, the fp64 grad norm, AdamW over a
// whole tiny model against an fp64 per-element reference (with clipping and decay), the skip on a
// non-finite norm, and the expert-bias update on hand-computed cases.
#include "trainer/optimizer.h"

#include <cmath>
#include <map>

#include "gtest/gtest.h"
#include "model/config.h"
#include "tests/testing/compare.h"

namespace tandem::trainer {
namespace {

model::ModelConfig TinyConfig() {
  auto c = model::LoadModelConfig("configs/models/tiny-hybrid.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(LrScheduleTest, WarmupCosineBoundaries) {
  LrSchedule s{LrScheduleKind::kCosine, 1.0, 0.1, 4, 14};
  ASSERT_TRUE(ValidateLrSchedule(s).ok());
  EXPECT_DOUBLE_EQ(LearningRate(s, 0), 0.25);
  EXPECT_DOUBLE_EQ(LearningRate(s, 3), 1.0);     // warmup ends at lr
  EXPECT_DOUBLE_EQ(LearningRate(s, 4), 1.0);     // cosine starts at lr
  EXPECT_NEAR(LearningRate(s, 9), 0.55, 1e-15);  // halfway: (lr + min_lr) / 2
  EXPECT_DOUBLE_EQ(LearningRate(s, 14), 0.1);    // total_steps: min_lr
  EXPECT_DOUBLE_EQ(LearningRate(s, 100), 0.1);   // and after
  for (int64_t t = 4; t < 14; ++t) EXPECT_GT(LearningRate(s, t), LearningRate(s, t + 1));

  LrSchedule no_warmup{LrScheduleKind::kCosine, 2.0, 0.0, 0, 10};
  EXPECT_DOUBLE_EQ(LearningRate(no_warmup, 0), 2.0);
  EXPECT_DOUBLE_EQ(LearningRate(no_warmup, 10), 0.0);
  LrSchedule constant{LrScheduleKind::kConstant, 3.0, 0.0, 2, 10};
  EXPECT_DOUBLE_EQ(LearningRate(constant, 0), 1.5);
  EXPECT_DOUBLE_EQ(LearningRate(constant, 1), 3.0);
  EXPECT_DOUBLE_EQ(LearningRate(constant, 1000), 3.0);
  EXPECT_FALSE(ValidateLrSchedule({LrScheduleKind::kCosine, 1.0, 2.0, 0, 10}).ok());
  EXPECT_FALSE(ValidateLrSchedule({LrScheduleKind::kCosine, 0.0, 0.0, 0, 10}).ok());
}

TEST(OptimizerTest, WhatDecays) {
  model::ModelConfig config = TinyConfig();
  model::ModelWeights w = model::AllocateWeights(config);
  std::map<std::string, bool> decays;
  w.ForEachParameter(
      [&](const std::string& n, Tensor& t) { decays[n] = DecaysWeight(n, t, false); });
  EXPECT_FALSE(decays.at("model.word_embeddings.weight"));
  EXPECT_TRUE(decays.at("lm_head.weight"));
  EXPECT_FALSE(decays.at("model.norm.weight"));
  EXPECT_FALSE(decays.at("model.layers.0.input_layernorm.weight"));
  EXPECT_FALSE(decays.at("model.layers.0.attention.key_layernorm.weight"));
  EXPECT_FALSE(decays.at("model.layers.0.attention.g_norm.weight"));
  EXPECT_FALSE(decays.at("model.layers.1.mlp.gate.expert_bias"));
  EXPECT_TRUE(decays.at("model.layers.1.mlp.gate.weight"));
  EXPECT_TRUE(decays.at("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_TRUE(decays.at("model.layers.0.attention.query_key_value.weight"));
  EXPECT_TRUE(DecaysWeight("model.word_embeddings.weight", w.embed, true));
  EXPECT_FALSE(IsGradientTrained("model.layers.1.mlp.gate.expert_bias"));
}

// Fills every tensor of `w` with seeded values in [lo, hi).
void Fill(model::ModelWeights& w, uint64_t seed, float lo, float hi) {
  w.ForEachParameter([&](const std::string&, Tensor& t) {
    std::vector<float> r = testing::RandomVector(t.numel(), seed++, lo, hi);
    std::copy(r.begin(), r.end(), t.data<float>());
  });
}

std::map<std::string, std::vector<double>> Snapshot(const model::ModelWeights& w) {
  std::map<std::string, std::vector<double>> out;
  w.ForEachParameter([&](const std::string& n, const Tensor& t) {
    out[n] = testing::ToDouble(testing::Floats(t));
  });
  return out;
}

TEST(OptimizerTest, TwoStepsMatchFp64ReferenceWithClipAndDecay) {
  model::ModelConfig config = TinyConfig();
  model::ModelWeights w = model::AllocateWeights(config), g = model::AllocateWeights(config);
  Fill(w, 1, -0.5f, 0.5f);
  const AdamWOptions o{
      .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .max_grad_norm = 1.0};
  const LrSchedule s{LrScheduleKind::kConstant, 1e-2, 0.0, 0, 10};
  auto opt = AdamW::Create(config, o, s);
  ASSERT_TRUE(opt.ok()) << opt.status();
  Context ctx = Context::Cpu(2);
  auto p_ref = Snapshot(w);
  std::map<std::string, std::vector<double>> m_ref, v_ref;
  for (int step = 1; step <= 2; ++step) {
    Fill(g, 100 * step, -1.0f, 1.0f);  // norm ≫ 1: clipped
    auto g_ref = Snapshot(g);
    double ss = 0;
    for (auto& [n, gv] : g_ref) {
      if (IsGradientTrained(n))
        for (double x : gv) ss += x * x;
    }
    const double scale = 1.0 / (std::sqrt(ss) + 1e-6);
    auto stats = opt->Step(ctx, w, g);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_NEAR(stats->grad_norm, std::sqrt(ss), 1e-9 * std::sqrt(ss));
    EXPECT_NEAR(stats->clip_scale, scale, 1e-12);
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.95, step);
    w.ForEachParameter([&](const std::string& n, Tensor& t) {
      std::vector<double>& p = p_ref[n];
      if (!IsGradientTrained(n)) {  // expert_bias: untouched
        EXPECT_TRUE(testing::AllClose(testing::Floats(t), p, {.atol = 0}));
        return;
      }
      const double wd = DecaysWeight(n, t, false) ? 0.1 : 0.0;
      m_ref[n].resize(p.size()), v_ref[n].resize(p.size());
      for (size_t i = 0; i < p.size(); ++i) {
        const double gi = g_ref[n][i] * scale;
        double& m = m_ref[n][i];
        double& v = v_ref[n][i];
        m = 0.9 * m + 0.1 * gi;
        v = 0.95 * v + 0.05 * gi * gi;
        p[i] -= 1e-2 * ((m / bc1) / (std::sqrt(v / bc2) + 1e-8) + wd * p[i]);
      }
      EXPECT_TRUE(testing::AllClose(testing::Floats(t), p, {.atol = 2e-6, .rtol = 1e-5}))
          << n << " step " << step;
    });
  }
  EXPECT_EQ(opt->state().step, 2);
}

TEST(OptimizerTest, NonFiniteNormSkipsTheStep) {
  model::ModelConfig config = TinyConfig();
  model::ModelWeights w = model::AllocateWeights(config), g = model::AllocateWeights(config);
  Fill(w, 1, -0.5f, 0.5f);
  auto before = Snapshot(w);
  auto opt = AdamW::Create(config, {}, {LrScheduleKind::kConstant, 1e-2, 0.0, 0, 10});
  ASSERT_TRUE(opt.ok());
  g.final_norm.data<float>()[3] = NAN;
  Context ctx = Context::Cpu(1);
  auto stats = opt->Step(ctx, w, g);
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(stats->skipped);
  EXPECT_EQ(opt->state().step, 0);
  EXPECT_EQ(Snapshot(w), before);
  EXPECT_FALSE(AdamW::Create(config, {.beta2 = 1.0}, {}).ok());
}

TEST(ExpertBiasTest, SignStepThenRecentre) {
  Tensor bias = Tensor::FromVector<float>({0.0f, 0.0f, 0.0f, 0.0f}, {4});
  // Mean load 10: experts 0 and 3 under-loaded (+), 1 over-loaded (−), 2 at the mean (0).
  std::vector<int64_t> load = {4, 20, 10, 6};
  ASSERT_TRUE(UpdateExpertBias(bias, load, 0.5).ok());
  // Raw +0.5, −0.5, 0, +0.5 → mean 0.125 → 0.375, −0.625, −0.125, 0.375.
  EXPECT_TRUE(testing::AllClose(testing::Floats(bias),
                                std::vector<double>{0.375, -0.625, -0.125, 0.375}, {.atol = 0}));
  double sum = 0;
  for (int e = 0; e < 4; ++e) sum += bias.data<float>()[e];
  EXPECT_EQ(sum, 0.0);
  EXPECT_FALSE(UpdateExpertBias(bias, std::vector<int64_t>{1, 2}, 0.5).ok());

  model::ModelConfig config = TinyConfig();
  model::ModelWeights w = model::AllocateWeights(config);
  std::vector<std::vector<int64_t>> loads(config.num_hidden_layers);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.IsMoeLayer(l)) loads[l].assign(config.num_experts, 5), loads[l][0] = 0;
  }
  ASSERT_TRUE(UpdateExpertBiases(config, w, loads, 1e-3).ok());
  EXPECT_GT(w.layers[1].expert_bias.data<float>()[0], 0.0f);
  EXPECT_LT(w.layers[1].expert_bias.data<float>()[1], 0.0f);
  EXPECT_FALSE(UpdateExpertBiases(config, w, {}, 1e-3).ok());
}

}  // namespace
}  // namespace tandem::trainer

// Losses: GRPO advantages against hand values, PPO-clip and SFT gradients against finite
// differences of the returned loss, the clip/KL metrics on constructed cases, entropy vs fp64.
#include "trainer/losses.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/compare.h"

namespace tandem::trainer {
namespace {

using ::tandem::testing::RandomVector;

TEST(GroupAdvantagesTest, UnbiasedStdPerGroup) {
  // Group {1, 0, 0, 1}: mean 0.5, unbiased std sqrt(1/3). Group {2, 4, 6, 8}: mean 5, std
  // sqrt(20/3).
  std::vector<float> r = {1, 0, 0, 1, 2, 4, 6, 8};
  auto a = GroupAdvantages(r, 4, {.normalize_by_std = true, .eps = 0.0});
  ASSERT_TRUE(a.ok()) << a.status();
  const double s1 = std::sqrt(1.0 / 3.0), s2 = std::sqrt(20.0 / 3.0);
  const std::vector<double> want = {0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1,
                                    -3 / s2,  -1 / s2,   1 / s2,    3 / s2};
  EXPECT_TRUE(testing::AllClose(*a, want, {.atol = 1e-6}));
}

TEST(GroupAdvantagesTest, MeanOnlyAndEqualRewards) {
  std::vector<float> r = {3, 3, 3, 1, 2, 6};
  auto a = GroupAdvantages(r, 3, {.normalize_by_std = false});
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(testing::AllClose(*a, std::vector<double>{0, 0, 0, -2, -1, 3}, {.atol = 0}));
  // All-equal rewards: std 0, advantage exactly 0 (no division blow-up thanks to eps).
  auto b = GroupAdvantages(std::vector<float>{5, 5}, 2, {});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)[0], 0.0f);
  EXPECT_EQ((*b)[1], 0.0f);
}

TEST(GroupAdvantagesTest, BadShapesAreErrors) {
  EXPECT_FALSE(GroupAdvantages(std::vector<float>{1, 2, 3}, 2, {}).ok());
  EXPECT_FALSE(GroupAdvantages(std::vector<float>{1, 2}, 1, {}).ok());  // std of one sample
  EXPECT_TRUE(GroupAdvantages(std::vector<float>{1, 2}, 1, {.normalize_by_std = false}).ok());
}

struct PpoCase {
  std::vector<float> logp, old, adv, mask, ref;
};

PpoCase RandomCase(size_t t, uint64_t seed) {
  PpoCase c;
  c.old = RandomVector(t, seed, -3.0f, -0.1f);
  std::vector<float> delta = RandomVector(t, seed + 1, -0.5f, 0.5f);  // many ratios clip
  c.logp.resize(t);
  for (size_t i = 0; i < t; ++i) c.logp[i] = c.old[i] + delta[i];
  c.adv = RandomVector(t, seed + 2, -2.0f, 2.0f);
  c.ref = RandomVector(t, seed + 3, -3.0f, -0.1f);
  std::vector<float> u = RandomVector(t, seed + 4, 0.0f, 1.0f);
  for (float x : u) c.mask.push_back(x < 0.8f ? 1.0f : 0.0f);
  return c;
}

absl::StatusOr<LossOutputs> Ppo(const PpoCase& c, const std::vector<float>& logp,
                                const PpoLossOptions& o) {
  return PpoClipLoss({logp, c.old, c.adv, c.mask, c.ref}, o);
}

TEST(PpoClipLossTest, GradientMatchesFiniteDifferences) {
  for (const PpoLossOptions& o :
       {PpoLossOptions{}, PpoLossOptions{.clip_low = 0.2, .clip_high = 0.28, .kl_coef = 0.1},
        PpoLossOptions{.dual_clip = 3.0, .kl_coef = 0.05, .normalizer = 100}}) {
    PpoCase c = RandomCase(57, 11);
    auto out = Ppo(c, c.logp, o);
    ASSERT_TRUE(out.ok()) << out.status();
    for (size_t i = 0; i < c.logp.size(); ++i) {
      // The loss is piecewise smooth; skip the few points within h of a clip boundary.
      const double lr = static_cast<double>(c.logp[i]) - c.old[i];
      const double r = std::exp(lr);
      if (std::abs(r - (1 - o.clip_low)) < 1e-3 || std::abs(r - (1 + o.clip_high)) < 1e-3) continue;
      auto f = [&](const std::vector<double>& x) {
        std::vector<float> lp = c.logp;
        lp[i] = static_cast<float>(x[0]);
        return Ppo(c, lp, o)->loss;
      };
      const double fd = testing::FiniteDifference(f, {c.logp[i]}, 0, 1e-3);
      EXPECT_NEAR(out->dlogp[i], fd, 2e-4) << "token " << i;
    }
  }
}

TEST(PpoClipLossTest, OnPolicyHasUnitRatioAndZeroKl) {
  PpoCase c = RandomCase(33, 5);
  auto out = PpoClipLoss({c.old, c.old, c.adv, c.mask, {}}, {});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->metrics.approx_kl, 0.0);  // bitwise-equal log-probs: exactly 0
  EXPECT_EQ(out->metrics.mean_ratio, 1.0);
  EXPECT_EQ(out->metrics.clip_fraction, 0.0);
  // On policy the loss is −mean(A) over valid tokens and dlogp = −A·m/N.
  double sum_a = 0, n = 0;
  for (size_t i = 0; i < c.adv.size(); ++i) sum_a += c.mask[i] * c.adv[i], n += c.mask[i];
  EXPECT_NEAR(out->loss, -sum_a / n, 1e-12);
  for (size_t i = 0; i < c.adv.size(); ++i) {
    EXPECT_FLOAT_EQ(out->dlogp[i], static_cast<float>(-c.mask[i] * c.adv[i] / n));
  }
}

TEST(PpoClipLossTest, ClippingSelectsTheRightBranch) {
  // Token 0: A > 0, ratio 1.5 > 1.2 → clipped, loss −1.2·A, gradient 0.
  // Token 1: A < 0, ratio 1.5 → unclipped (−1.5·A is larger), gradient −A·r.
  // Token 2: A < 0, ratio 0.5 < 0.8 → clipped, loss −0.8·A, gradient 0.
  // Token 3: A > 0, ratio 0.5 → unclipped. Token 4 masked out.
  const float l15 = std::log(1.5f), l05 = std::log(0.5f);
  std::vector<float> old = {-1, -1, -1, -1, -1};
  std::vector<float> logp = {-1 + l15, -1 + l15, -1 + l05, -1 + l05, 0};
  std::vector<float> adv = {2, -2, -2, 2, 7}, mask = {1, 1, 1, 1, 0};
  auto out = PpoClipLoss({logp, old, adv, mask, {}}, {});
  ASSERT_TRUE(out.ok());
  const double r15 = std::exp(static_cast<double>(logp[0]) - old[0]);
  const double r05 = std::exp(static_cast<double>(logp[2]) - old[2]);
  EXPECT_NEAR(out->token_loss[0], -1.2 * 2, 1e-6);
  EXPECT_NEAR(out->token_loss[1], r15 * 2, 1e-6);
  EXPECT_NEAR(out->token_loss[2], 0.8 * 2, 1e-6);
  EXPECT_NEAR(out->token_loss[3], -r05 * 2, 1e-6);
  EXPECT_EQ(out->token_loss[4], 0.0f);
  EXPECT_EQ(out->dlogp[0], 0.0f);
  EXPECT_NEAR(out->dlogp[1], 2 * r15 / 4, 1e-6);
  EXPECT_EQ(out->dlogp[2], 0.0f);
  EXPECT_NEAR(out->dlogp[3], -2 * r05 / 4, 1e-6);
  EXPECT_EQ(out->dlogp[4], 0.0f);
  EXPECT_DOUBLE_EQ(out->metrics.clip_fraction, 0.5);
  EXPECT_DOUBLE_EQ(out->metrics.num_tokens, 4);
  // Dual clip c = 1.2 caps token 1 (A < 0, loss 1.5·2 > 1.2·2).
  auto dual = PpoClipLoss({logp, old, adv, mask, {}}, {.dual_clip = 1.2});
  ASSERT_TRUE(dual.ok());
  EXPECT_NEAR(dual->token_loss[1], 1.2 * 2, 1e-6);
  EXPECT_EQ(dual->dlogp[1], 0.0f);
}

TEST(PpoClipLossTest, KlToReferenceIsK3) {
  std::vector<float> logp = {-1.0f}, old = {-1.0f}, adv = {0.0f}, mask = {1.0f}, ref = {-1.5f};
  auto out = PpoClipLoss({logp, old, adv, mask, ref}, {.kl_coef = 0.5});
  ASSERT_TRUE(out.ok());
  const double d = -0.5;  // ref − logp
  EXPECT_NEAR(out->metrics.kl_ref, std::exp(d) - d - 1, 1e-12);
  EXPECT_NEAR(out->loss, 0.5 * (std::exp(d) - d - 1), 1e-12);
  EXPECT_NEAR(out->dlogp[0], 0.5 * (1 - std::exp(d)), 1e-7);
  EXPECT_FALSE(PpoClipLoss({logp, old, adv, mask, {}}, {.kl_coef = 0.5}).ok());  // needs ref
}

TEST(PpoClipLossTest, MismatchedSizesNameTheField) {
  std::vector<float> a(3), b(2);
  auto out = PpoClipLoss({a, a, b, a, {}}, {});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("advantages"), std::string::npos);
}

TEST(SftLossTest, MeanOverMaskAndGradient) {
  std::vector<float> logp = RandomVector(40, 3, -5.0f, 0.0f);
  std::vector<float> mask(40, 0.0f);
  for (int i = 10; i < 40; i += 2) mask[i] = 1.0f;
  auto out = SftLoss(logp, mask);
  ASSERT_TRUE(out.ok());
  double sum = 0;
  for (int i = 10; i < 40; i += 2) sum -= logp[i];
  EXPECT_NEAR(out->loss, sum / 15, 1e-12);
  for (size_t i = 0; i < logp.size(); ++i) {
    auto f = [&](const std::vector<double>& x) {
      std::vector<float> lp = logp;
      lp[i] = static_cast<float>(x[0]);
      return SftLoss(lp, mask)->loss;
    };
    EXPECT_NEAR(out->dlogp[i], testing::FiniteDifference(f, {logp[i]}, 0, 1e-3), 1e-5);
  }
  auto empty = SftLoss(logp, std::vector<float>(40, 0.0f));
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->loss, 0.0);
  auto scaled = SftLoss(logp, mask, 30.0);  // global normaliser
  EXPECT_NEAR(scaled->loss, sum / 30, 1e-12);
}

}  // namespace
}  // namespace tandem::trainer

// Tests for the MoE router: selection (exact indices, ties to the lower index, group limits) and
// weights against the fp64 reference, the backward through the weights by the gradient chain of
// trust (finite differences → reference → CPU), thread-count invariance and argument checks.
#include "kernels/moe_route/moe_route.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/reference/moe_route_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

MoeRouteParams SmallParams() {
  MoeRouteParams p;
  p.num_experts = 8;
  p.top_k = 2;
  p.n_group = 4;
  p.topk_group = 2;
  p.routed_scaling_factor = 2.5f;
  return p;
}

struct RouteOut {
  Tensor idx, weight, scores;
  std::vector<int32_t> Idx() const {
    return {idx.data<int32_t>(), idx.data<int32_t>() + idx.numel()};
  }
};

RouteOut Route(const MoeRouteParams& p, const std::vector<float>& logits,
               const std::vector<float>& bias, int threads = 1) {
  const int64_t t_count = static_cast<int64_t>(logits.size()) / p.num_experts;
  RouteOut r{Tensor::Empty({t_count, p.top_k}, DType::kI32),
             Tensor::Empty({t_count, p.top_k}, DType::kF32),
             Tensor::Empty({t_count, p.num_experts}, DType::kF32)};
  Tensor l = Tensor::FromVector(logits, {t_count, p.num_experts});
  Tensor b = Tensor::FromVector(bias, {p.num_experts});
  absl::Status s = MoeRouteFwd(Context::Cpu(threads), p, l, b, r.idx, r.weight, r.scores);
  EXPECT_TRUE(s.ok()) << s;
  return r;
}

// The logit whose sigmoid is (the float nearest) prob, for crafting scores.
float Logit(double prob) { return static_cast<float>(std::log(prob / (1 - prob))); }

void ExpectMatchesReference(const MoeRouteParams& p, int64_t t_count, uint64_t seed) {
  std::vector<float> logits = RandomVector(t_count * p.num_experts, seed, -3.0f, 3.0f);
  std::vector<float> bias = RandomVector(p.num_experts, seed + 1, -0.2f, 0.2f);
  RouteOut out = Route(p, logits, bias);
  testing::RouteRefResult ref = testing::MoeRouteFwdRef(p, ToDouble(logits), ToDouble(bias));
  EXPECT_EQ(out.Idx(), ref.idx);
  EXPECT_TRUE(AllClose(Floats(out.weight), ref.weight, {.atol = 1e-6, .rtol = 1e-6}));
  EXPECT_TRUE(AllClose(Floats(out.scores), ref.scores, {.atol = 1e-7, .rtol = 1e-6}));
}

TEST(MoeRouteTest, ForwardMatchesReference) {
  MoeRouteParams p = SmallParams();
  ExpectMatchesReference(p, 37, 1);
  ExpectMatchesReference(p, 1, 2);
  p.norm_topk_prob = false;
  ExpectMatchesReference(p, 19, 3);
}

TEST(MoeRouteTest, RingMiniShapeMatchesReference) {
  MoeRouteParams p{
      .num_experts = 256, .top_k = 8, .n_group = 8, .topk_group = 4, .routed_scaling_factor = 2.5f};
  ExpectMatchesReference(p, 9, 4);
}

TEST(MoeRouteTest, GroupsOfOneScoreTheirOnlyExpert) {
  MoeRouteParams p = SmallParams();
  p.n_group = 8;
  p.topk_group = 3;
  ExpectMatchesReference(p, 23, 5);
  // Kept groups {1, 4, 6} are exactly the three best experts.
  std::vector<float> logits = {0, 3, 1, 0, 2, -1, 2.5, 0};
  EXPECT_EQ(Route(p, logits, std::vector<float>(8, 0.0f)).Idx(), (std::vector<int32_t>{1, 6}));
}

TEST(MoeRouteTest, GroupLimitExcludesTheBestSingleExpert) {
  MoeRouteParams p = SmallParams();  // groups {0,1} {2,3} {4,5} {6,7}, keep 2
  // Group scores: 0.99+0.01, 0.6+0.6, 0.55+0.5, 0.1+0.1 → keep groups 1 and 2. Expert 0 has the
  // highest score but its group loses; experts 2 and 3 tie and go in index order.
  std::vector<float> logits = {Logit(0.99), Logit(0.01), Logit(0.6), Logit(0.6),
                               Logit(0.55), Logit(0.5),  Logit(0.1), Logit(0.1)};
  RouteOut out = Route(p, logits, std::vector<float>(8, 0.0f));
  EXPECT_EQ(out.Idx(), (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(out.weight.data<float>()[0], out.weight.data<float>()[1]);
  EXPECT_EQ(testing::SelectRef(p, ToDouble(logits), std::vector<double>(8, 0.0)),
            (std::vector<int32_t>{2, 3}));
  // With every group kept, expert 0 wins.
  p.topk_group = 4;
  EXPECT_EQ(Route(p, logits, std::vector<float>(8, 0.0f)).Idx(), (std::vector<int32_t>{0, 2}));
}

TEST(MoeRouteTest, TiesGoToTheLowerIndex) {
  MoeRouteParams p = SmallParams();
  // All scores equal: groups 0 and 1 are kept, experts 0 and 1 chosen.
  EXPECT_EQ(Route(p, std::vector<float>(8, 0.3f), std::vector<float>(8, 0.0f)).Idx(),
            (std::vector<int32_t>{0, 1}));
  // Groups 1 and 3 tie for the best group score, keep only one: group 1 (experts 2, 3).
  p.topk_group = 1;
  std::vector<float> logits = {0, 0, 1, 2, 0, 0, 2, 1};
  EXPECT_EQ(Route(p, logits, std::vector<float>(8, 0.0f)).Idx(), (std::vector<int32_t>{3, 2}));
  // Equal biased scores inside the kept groups: experts 5 and 7 tie on top → 5 first, then 7.
  p.topk_group = 2;
  p.top_k = 3;
  logits = {-2, -2, -2, -2, 1, 1.5, 0, 1.5};
  EXPECT_EQ(Route(p, logits, std::vector<float>(8, 0.0f)).Idx(), (std::vector<int32_t>{5, 7, 4}));
}

TEST(MoeRouteTest, BiasSelectsButWeightsUseUnbiasedScores) {
  MoeRouteParams p = SmallParams();
  p.topk_group = 4;
  std::vector<float> logits = {Logit(0.9), Logit(0.8), Logit(0.7), Logit(0.2),
                               Logit(0.1), Logit(0.1), Logit(0.1), Logit(0.1)};
  EXPECT_EQ(Route(p, logits, std::vector<float>(8, 0.0f)).Idx(), (std::vector<int32_t>{0, 1}));
  std::vector<float> bias(8, 0.0f);
  bias[3] = 0.75f;  // b_3 = 0.95 > b_0 = 0.9
  RouteOut out = Route(p, logits, bias);
  ASSERT_EQ(out.Idx(), (std::vector<int32_t>{3, 0}));
  const double p3 = 1 / (1 + std::exp(-static_cast<double>(logits[3])));
  const double p0 = 1 / (1 + std::exp(-static_cast<double>(logits[0])));
  std::vector<double> expected = {2.5 * p3 / (p3 + p0), 2.5 * p0 / (p3 + p0)};
  EXPECT_TRUE(AllClose(Floats(out.weight), expected, {.atol = 1e-6}));
}

TEST(MoeRouteTest, ReferenceBackwardMatchesFiniteDifferences) {
  for (bool norm : {true, false}) {
    MoeRouteParams p = SmallParams();
    p.norm_topk_prob = norm;
    const int64_t t_count = 3;
    std::vector<double> logits = ToDouble(RandomVector(t_count * 8, 10, -2.0f, 2.0f));
    std::vector<double> bias = ToDouble(RandomVector(8, 11, -0.2f, 0.2f));
    std::vector<int32_t> idx = testing::MoeRouteFwdRef(p, logits, bias).idx;
    std::vector<double> dw = ToDouble(RandomVector(t_count * 2, 12));
    std::vector<double> grad = testing::MoeRouteBwdRef(p, logits, idx, dw);
    auto loss = [&](const std::vector<double>& l) {  // Σ dw · w with the selection fixed
      double total = 0;
      for (int64_t t = 0; t < t_count; ++t) {
        std::vector<double> row(l.begin() + t * 8, l.begin() + (t + 1) * 8);
        std::vector<int32_t> sel(idx.begin() + t * 2, idx.begin() + (t + 1) * 2);
        std::vector<double> w = testing::WeightsRef(p, row, sel);
        for (int k = 0; k < 2; ++k) total += dw[t * 2 + k] * w[k];
      }
      return total;
    };
    for (size_t i = 0; i < logits.size(); ++i) {
      EXPECT_NEAR(testing::FiniteDifference(loss, logits, i), grad[i], 1e-8) << "logit " << i;
    }
  }
}

TEST(MoeRouteTest, BackwardMatchesReference) {
  for (bool norm : {true, false}) {
    MoeRouteParams p = SmallParams();
    p.norm_topk_prob = norm;
    const int64_t t_count = 29;
    std::vector<float> logits = RandomVector(t_count * 8, 20, -3.0f, 3.0f);
    std::vector<float> bias = RandomVector(8, 21, -0.2f, 0.2f);
    std::vector<float> dw = RandomVector(t_count * 2, 22);
    RouteOut out = Route(p, logits, bias);
    Tensor dlogits = Tensor::Empty({t_count, 8}, DType::kF32);
    ASSERT_TRUE(MoeRouteBwd(Context::Cpu(1), p, out.scores, out.idx,
                            Tensor::FromVector(dw, {t_count, 2}), dlogits)
                    .ok());
    std::vector<double> ref = testing::MoeRouteBwdRef(p, ToDouble(logits), out.Idx(), ToDouble(dw));
    EXPECT_TRUE(AllClose(Floats(dlogits), ref, {.atol = 1e-7, .rtol = 1e-5}));
    for (int64_t t = 0; t < t_count; ++t) {  // unselected experts get exactly zero
      for (int e = 0; e < 8; ++e) {
        const int32_t* idx = out.idx.data<int32_t>() + t * 2;
        if (idx[0] != e && idx[1] != e) {
          EXPECT_EQ(dlogits.data<float>()[t * 8 + e], 0.0f);
        }
      }
    }
  }
}

TEST(MoeRouteTest, ThreadCountDoesNotChangeBits) {
  MoeRouteParams p = SmallParams();
  std::vector<float> logits = RandomVector(101 * 8, 30, -3.0f, 3.0f);
  std::vector<float> bias = RandomVector(8, 31, -0.2f, 0.2f);
  RouteOut a = Route(p, logits, bias, 1), b = Route(p, logits, bias, 3);
  EXPECT_EQ(a.Idx(), b.Idx());
  EXPECT_TRUE(BitwiseEqual(Floats(a.weight), Floats(b.weight)));
  Tensor dw = Tensor::FromVector(RandomVector(101 * 2, 32), {101, 2});
  Tensor da = Tensor::Empty({101, 8}, DType::kF32), db = Tensor::Empty({101, 8}, DType::kF32);
  ASSERT_TRUE(MoeRouteBwd(Context::Cpu(1), p, a.scores, a.idx, dw, da).ok());
  ASSERT_TRUE(MoeRouteBwd(Context::Cpu(3), p, a.scores, a.idx, dw, db).ok());
  EXPECT_TRUE(BitwiseEqual(Floats(da), Floats(db)));
}

TEST(MoeRouteTest, RejectsBadArguments) {
  Context ctx = Context::Cpu(1);
  Tensor logits = Tensor::Zeros({4, 8}, DType::kF32), bias = Tensor::Zeros({8}, DType::kF32);
  Tensor idx = Tensor::Zeros({4, 2}, DType::kI32), w = Tensor::Zeros({4, 2}, DType::kF32);
  Tensor scores = Tensor::Zeros({4, 8}, DType::kF32);
  auto fwd = [&](MoeRouteParams p) {
    return MoeRouteFwd(ctx, p, logits, bias, idx, w, scores).code();
  };
  const auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(fwd(SmallParams()), absl::StatusCode::kOk);
  MoeRouteParams p = SmallParams();
  p.n_group = 3;  // 8 % 3 != 0
  EXPECT_EQ(fwd(p), kBad);
  EXPECT_NE(MoeRouteFwd(ctx, p, logits, bias, idx, w, scores).message().find("n_group"),
            std::string::npos);
  p = SmallParams();
  p.topk_group = 5;
  EXPECT_EQ(fwd(p), kBad);
  p = SmallParams();
  p.topk_group = 1;
  p.top_k = 3;  // only 2 experts in one kept group
  EXPECT_NE(MoeRouteFwd(ctx, p, logits, bias, idx, w, scores).message().find("top_k"),
            std::string::npos);
  Tensor bad_scores = Tensor::Zeros({4, 7}, DType::kF32);
  absl::Status s = MoeRouteFwd(ctx, SmallParams(), logits, bias, idx, w, bad_scores);
  EXPECT_NE(s.message().find("scores"), std::string::npos) << s;
  Tensor f32_idx = Tensor::Zeros({4, 2}, DType::kF32);
  EXPECT_EQ(MoeRouteFwd(ctx, SmallParams(), logits, bias, f32_idx, w, scores).code(), kBad);
  idx.data<int32_t>()[3] = 8;  // out of range in the backward
  EXPECT_EQ(MoeRouteBwd(ctx, SmallParams(), scores, idx, w, logits).code(), kBad);
}

}  // namespace
}  // namespace tandem::kernels

// Tests of the HybridModel training pass (model/hybrid_model_backward.h) on a tiny hybrid model
// with linear and softmax layers, a dense layer and MoE layers with a shared expert: the gradient
// of every parameter tensor against fp64 finite differences of the fp64 reference forward, the
// log-probs bitwise equal to Forward, and the bitwise promises (saved vs recomputed activations,
// thread count).
#include "model/hybrid_model_backward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/gemm/gemm.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "tests/model/reference/hybrid_model_ref.h"
#include "tests/testing/compare.h"
#include "tests/testing/tiny_model.h"

namespace tandem::model {
namespace {

using testing::BitwiseEqual;
using testing::Floats;
using ::testing::HasSubstr;
using testing::RandomVector;

// Three layers: linear/dense, softmax/MoE (GQA 4:2), linear/MoE. V = 61 and Dm = 32 are not
// multiples of any tile; partial RoPE (R = 8 of D = 16); 2 output-norm groups; grouped routing (4
// groups of 2 experts, 2 kept) with a shared expert. Matrices uniform with variance 2/fan_in
// (unit-scale activations, so every block matters), norm weights in [0.5, 1.5], expert bias in
// [−0.05, 0.05] (testing::RandomWeights).
HybridModel TinyModel(uint64_t seed = 1) {
  return testing::RandomModel(testing::OddShapeHybridConfig(3), seed);
}

struct Batch : testing::TokenBatch {
  std::vector<float> dlogprob;  // c_t of the loss L = Σ_t c_t · logprob_t
};

// Random sequences; targets are next tokens, −1 at each sequence's end; c_t uniform in [−1, 1]
// everywhere (also where the target is −1, where it must be ignored).
Batch RandomBatch(const std::vector<int>& lengths, uint64_t seed) {
  Batch b{testing::RandomTokenBatch(lengths, seed, 61), {}};
  b.dlogprob = RandomVector(b.tokens.size(), seed + 77);
  return b;
}

ForwardInput MakeInput(const Batch& b) { return testing::MakeForwardInput(b); }

struct Result {
  std::vector<float> logprob;
  ModelWeights grads;
};

Result RunBackward(const HybridModel& model, const Batch& b, int threads = 1,
                   bool recompute = false) {
  Result r{{}, AllocateWeights(model.config())};
  const int64_t T = b.tokens.size();
  absl::StatusOr<Tensor> lp = ForwardBackward(Context::Cpu(threads), model, MakeInput(b),
                                              Tensor::FromVector(b.dlogprob, {T}), r.grads,
                                              {.recompute_layers = recompute});
  EXPECT_TRUE(lp.ok()) << lp.status();
  if (lp.ok()) r.logprob.assign(Floats(*lp).begin(), Floats(*lp).end());
  return r;
}

// Every gradient tensor (in ForEachParameter order, with its name).
std::vector<std::pair<std::string, Tensor>> Tensors(ModelWeights& w) {
  std::vector<std::pair<std::string, Tensor>> out;
  w.ForEachParameter([&](const std::string& name, Tensor& t) { out.emplace_back(name, t); });
  return out;
}

::testing::AssertionResult GradsBitwiseEqual(ModelWeights& a, ModelWeights& b) {
  auto ta = Tensors(a), tb = Tensors(b);
  for (size_t i = 0; i < ta.size(); ++i) {
    ::testing::AssertionResult eq =
        BitwiseEqual(Floats(ta[i].second), Floats(tb[i].second), ta[i].second.shape());
    if (!eq) return ::testing::AssertionFailure() << ta[i].first << ": " << eq.message();
  }
  return ::testing::AssertionSuccess();
}

// The smallest gap between a routing decision and its runner-up over every token of every MoE
// layer: the topk_group-th vs the next group score, and the K-th vs the (K+1)-th selection score
// among the kept groups' experts (scores b = sigmoid(logit) + bias, as MoeRouteFwd ranks them).
double MinRoutingMargin(const ModelConfig& c, const ModelWeights& w,
                        const ForwardActivations& acts) {
  const int64_t E = c.num_experts, per_group = E / c.n_group, K = c.num_experts_per_tok;
  double margin = std::numeric_limits<double>::infinity();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (!c.IsMoeLayer(l)) continue;
    const Tensor& scores = acts.layers[l].ffn.scores;  // [T, E]
    for (int64_t t = 0; t < scores.dim(0); ++t) {
      std::vector<double> b(E), group(c.n_group, 0.0);
      for (int64_t e = 0; e < E; ++e) {
        b[e] = scores.data<float>()[t * E + e] + w.layers[l].expert_bias.data<float>()[e];
      }
      for (int64_t g = 0; g < c.n_group; ++g) {
        std::vector<double> in(b.begin() + g * per_group, b.begin() + (g + 1) * per_group);
        std::sort(in.rbegin(), in.rend());
        group[g] = in[0] + (per_group > 1 ? in[1] : 0.0);
      }
      std::vector<int64_t> order(c.n_group);
      for (int64_t g = 0; g < c.n_group; ++g) order[g] = g;
      std::sort(order.begin(), order.end(),
                [&](int64_t x, int64_t y) { return group[x] > group[y]; });
      if (c.topk_group < c.n_group) {
        margin = std::min(margin, group[order[c.topk_group - 1]] - group[order[c.topk_group]]);
      }
      std::vector<double> kept;
      for (int64_t i = 0; i < c.topk_group; ++i)
        for (int64_t e = 0; e < per_group; ++e) kept.push_back(b[order[i] * per_group + e]);
      std::sort(kept.rbegin(), kept.rend());
      if (K < static_cast<int64_t>(kept.size())) margin = std::min(margin, kept[K - 1] - kept[K]);
    }
  }
  return margin;
}

// L = Σ_t c_t · logprob_t from the fp64 reference forward (logprob = 0 where the target is −1).
double ReferenceLoss(const HybridModel& model, const Batch& b) {
  std::vector<double> lp =
      reference::Forward(model.config(), model.weights(), b.tokens, b.cu_seqlens, b.targets, 1.0);
  double loss = 0;
  for (size_t t = 0; t < lp.size(); ++t) loss += b.dlogprob[t] * lp[t];
  return loss;
}

// Checks the gradient of the argmax-|g| element and two random elements of every parameter tensor
// whose name contains `only` against central differences of the fp64 reference; returns the
// number of elements checked.
int CheckAgainstFiniteDifferences(HybridModel& model, const Batch& b,
                                  const std::string& only = "") {
  absl::StatusOr<ForwardActivations> acts = TrainingForward(Context::Cpu(1), model, MakeInput(b));
  EXPECT_TRUE(acts.ok()) << acts.status();
  if (!acts.ok()) return 0;
  EXPECT_GT(MinRoutingMargin(model.config(), model.weights(), *acts), 2e-4)
      << "pick a batch without near-tied routing";

  Result r = RunBackward(model, b, 2);
  auto weights = Tensors(model.weights());
  auto grads = Tensors(r.grads);
  std::mt19937_64 rng(9);
  const double delta = 1e-5;
  double worst = 0;
  int checked = 0;
  for (size_t p = 0; p < weights.size(); ++p) {
    auto& [name, w] = weights[p];
    if (name.find(only) == std::string::npos) continue;
    const float* g = grads[p].second.data<float>();
    double gmax = 0;
    int64_t imax = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      if (std::abs(g[i]) > gmax) gmax = std::abs(g[i]), imax = i;
    }
    for (int64_t i :
         {imax, static_cast<int64_t>(rng() % w.numel()), static_cast<int64_t>(rng() % w.numel())}) {
      float& wi = w.data<float>()[i];
      const float w0 = wi;
      const float w_plus = static_cast<float>(w0 + delta);
      const float w_minus = static_cast<float>(w0 - delta);
      wi = w_plus;
      const double l_plus = ReferenceLoss(model, b);
      wi = w_minus;
      const double l_minus = ReferenceLoss(model, b);
      wi = w0;
      const double fd = (l_plus - l_minus) / (static_cast<double>(w_plus) - w_minus);
      const double err = std::abs(g[i] - fd);
      worst = std::max(worst, err / (gmax + 1e-12));
      EXPECT_LE(err, 5e-5 * gmax + 1e-7) << name << "[" << i << "]: analytic " << g[i] << " vs fd "
                                         << fd << " (max|g| " << gmax << ")";
      ++checked;
    }
  }
  std::printf("worst |g - fd| / max|g| over %d elements: %g\n", checked, worst);
  return checked;
}

// The gradient chain of trust at model level: for the argmax-|g| element and two random elements of
// EVERY parameter tensor (86 of them, experts one by one; the expert bias must come out 0), the
// analytic fp32 gradient of L = Σ_t c_t · logprob_t against a central difference of the fp64
// reference forward. The weight is perturbed to the fp32 values w ± 1e-5 and the difference is
// divided by their exact distance, so the FD's own error is O(δ²·|L‴|) + O(1e-16·|L|/δ) < 1e-8. The
// fp32 gradient carries rounding from ~100-token sums through three layers: measured worst |g − fd|
// is 2.6e-6 · max|g| of the tensor. The tolerance 5e-5 · max|g| + 1e-7 keeps 20× headroom; a
// dropped branch, a wrong sign or a swapped operand gives errors of ~0.1–1 · max|g| (checked by
// breaking the backward on purpose). MoE routing is discontinuous: the batch must have no routing
// decision (group or expert) within 2e-4 of a tie, while a 1e-5 step of any weight moves a router
// score by at most 4.4e-5 (measured on this batch), so no token changes experts between the fp32
// forward and the perturbed fp64 ones.
TEST(HybridModelBackwardTest, GradientsMatchFiniteDifferencesOfFp64Reference) {
  HybridModel model = TinyModel();
  // 70 > C = 64: the inter-chunk path runs; the last position of each sequence has no target.
  EXPECT_EQ(CheckAgainstFiniteDifferences(model, RandomBatch({70, 23}, 5)), 3 * 86);
}

// With tied embeddings lm_head is embed's memory: its gradient collects both uses.
TEST(HybridModelBackwardTest, TiedEmbeddingsMatchFiniteDifferences) {
  HybridModel untied = TinyModel(7);
  ModelConfig config = untied.config();
  config.tie_word_embeddings = true;
  ModelWeights weights = untied.weights();
  weights.lm_head = weights.embed;
  HybridModel model(config, std::move(weights));
  EXPECT_EQ(CheckAgainstFiniteDifferences(model, RandomBatch({66}, 11), "word_embeddings"), 3);
}

TEST(HybridModelBackwardTest, LogprobsBitwiseEqualForward) {
  HybridModel model = TinyModel(2);
  Batch b = RandomBatch({1, 130, 64, 9}, 3);
  absl::StatusOr<Tensor> want = model.Forward(Context::Cpu(1), MakeInput(b));
  ASSERT_TRUE(want.ok()) << want.status();
  for (bool recompute : {false, true}) {
    Result r = RunBackward(model, b, 2, recompute);
    EXPECT_TRUE(BitwiseEqual(r.logprob, Floats(*want))) << "recompute " << recompute;
  }
}

TEST(HybridModelBackwardTest, RecomputedLayersGiveBitwiseEqualGradients) {
  HybridModel model = TinyModel(3);
  Batch b = RandomBatch({100, 1, 40}, 4);
  Result saved = RunBackward(model, b, 2, false);
  Result recomputed = RunBackward(model, b, 2, true);
  EXPECT_TRUE(GradsBitwiseEqual(saved.grads, recomputed.grads));
}

// Asking Backward for the entropy changes no gradient bit (its lse is LogprobFromLogits'), and
// each position's entropy is kernels::SoftmaxEntropy of the forward's own logits.
TEST(HybridModelBackwardTest, EntropyComesWithoutChangingGradients) {
  HybridModel model = TinyModel(5);
  Batch b = RandomBatch({70, 9}, 8);
  const int64_t T = b.tokens.size();
  const float temperature = 0.8f;
  ForwardInput input = MakeInput(b);
  input.temperature = temperature;
  const Context ctx = Context::Cpu(2);
  absl::StatusOr<ForwardActivations> acts = TrainingForward(ctx, model, input);
  ASSERT_TRUE(acts.ok()) << acts.status();
  const Tensor dlogprob = Tensor::FromVector(b.dlogprob, {T});
  ModelWeights plain = AllocateWeights(model.config()), with = AllocateWeights(model.config());
  ASSERT_TRUE(Backward(ctx, model, input, *acts, dlogprob, plain).ok());
  Tensor entropy = Tensor::Empty({T}, DType::kF32);
  ASSERT_TRUE(Backward(ctx, model, input, *acts, dlogprob, with, &entropy).ok());
  EXPECT_TRUE(GradsBitwiseEqual(plain, with));
  const int64_t V = model.config().vocab_size;
  Tensor logits = Tensor::Empty({T, V}, DType::kF32);
  ASSERT_TRUE(kernels::GemmNT(ctx, acts->h_final, model.weights().lm_head, logits).ok());
  Tensor want = Tensor::Empty({T}, DType::kF32), lse = Tensor::Empty({T}, DType::kF32);
  ASSERT_TRUE(kernels::SoftmaxEntropy(ctx, logits, temperature, want, lse).ok());
  EXPECT_TRUE(BitwiseEqual(Floats(entropy), Floats(want)));
  Tensor wrong = Tensor::Empty({T + 1}, DType::kF32);
  const absl::Status bad = Backward(ctx, model, input, *acts, dlogprob, with, &wrong);
  EXPECT_NE(bad.message().find("entropy"), std::string::npos) << bad;
}

TEST(HybridModelBackwardTest, ThreadCountDoesNotChangeGradientBits) {
  HybridModel model = TinyModel(4);
  Batch b = RandomBatch({77, 64, 5}, 6);
  Result one = RunBackward(model, b, 1);
  Result two = RunBackward(model, b, 2);
  Result three = RunBackward(model, b, 3, true);
  EXPECT_TRUE(GradsBitwiseEqual(one.grads, two.grads));
  EXPECT_TRUE(GradsBitwiseEqual(one.grads, three.grads));
}

// Weight gradients sum over tokens, so packing changes the order of the sums (not bitwise); the
// packed gradient must equal the sum of the two separate runs up to fp32 rounding.
TEST(HybridModelBackwardTest, PackedGradientIsTheSumOfSeparateRuns) {
  HybridModel model = TinyModel(5);
  Batch first = RandomBatch({90}, 7), second = RandomBatch({33}, 8);
  Batch packed = first;
  packed.tokens.insert(packed.tokens.end(), second.tokens.begin(), second.tokens.end());
  packed.targets.insert(packed.targets.end(), second.targets.begin(), second.targets.end());
  packed.dlogprob.insert(packed.dlogprob.end(), second.dlogprob.begin(), second.dlogprob.end());
  packed.cu_seqlens.push_back(90 + 33);
  Result a = RunBackward(model, first), c = RunBackward(model, second);
  Result both = RunBackward(model, packed, 2);
  auto ta = Tensors(a.grads), tc = Tensors(c.grads), tboth = Tensors(both.grads);
  for (size_t p = 0; p < ta.size(); ++p) {
    const int64_t n = ta[p].second.numel();
    std::vector<double> sum(n);
    double scale = 0;
    for (int64_t i = 0; i < n; ++i) {
      sum[i] = static_cast<double>(ta[p].second.data<float>()[i]) + tc[p].second.data<float>()[i];
      scale = std::max(scale, std::abs(sum[i]));
    }
    EXPECT_TRUE(testing::AllClose(Floats(tboth[p].second), sum,
                                  {.atol = 1e-5 * scale + 1e-7, .max_nmse = 1e-9}))
        << tboth[p].first;
  }
}

// grads are accumulated into (+=): two calls give twice one call, up to fp32 rounding.
TEST(HybridModelBackwardTest, GradientsAccumulate) {
  HybridModel model = TinyModel(6);
  Batch b = RandomBatch({20}, 9);
  Result twice = RunBackward(model, b);
  const int64_t T = b.tokens.size();
  ASSERT_TRUE(ForwardBackward(Context::Cpu(1), model, MakeInput(b),
                              Tensor::FromVector(b.dlogprob, {T}), twice.grads)
                  .ok());
  Result once = RunBackward(model, b);
  auto t2 = Tensors(twice.grads), t1 = Tensors(once.grads);
  for (size_t p = 0; p < t1.size(); ++p) {
    std::vector<double> want(t1[p].second.numel());
    double scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      want[i] = 2.0 * t1[p].second.data<float>()[i];
      scale = std::max(scale, std::abs(want[i]));
    }
    EXPECT_TRUE(testing::AllClose(Floats(t2[p].second), want, {.atol = 1e-6 * scale + 1e-9}))
        << t1[p].first;
  }
}

TEST(HybridModelBackwardTest, RejectsBadArgumentsNamingThem) {
  HybridModel model = TinyModel();
  Batch b = RandomBatch({5}, 1);
  ModelWeights grads = AllocateWeights(model.config());
  absl::Status s =
      ForwardBackward(Context::Cpu(1), model, MakeInput(b), Tensor::Zeros({4}, DType::kF32), grads)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("dlogprob"));

  ModelConfig other = model.config();
  other.intermediate_size = 40;
  ModelWeights wrong = AllocateWeights(other);
  s = ForwardBackward(Context::Cpu(1), model, MakeInput(b), Tensor::Zeros({5}, DType::kF32), wrong)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("grads: tensor 'model.layers.0.mlp.gate_proj"));

  b.tokens[2] = 99;
  s = ForwardBackward(Context::Cpu(1), model, MakeInput(b), Tensor::Zeros({5}, DType::kF32), grads)
          .status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("tokens: id 99"));
}

TEST(HybridModelBackwardTest, EmptyBatchIsANoOp) {
  HybridModel model = TinyModel();
  Batch b{{{}, {0}, {}}, {}};
  Result r = RunBackward(model, b);
  for (auto& [name, t] : Tensors(r.grads)) {
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data<float>()[i], 0.0f) << name;
  }
}

}  // namespace
}  // namespace tandem::model

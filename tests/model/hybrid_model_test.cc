// Tests of HybridModel::Forward on a tiny hybrid model (linear + softmax layers, dense + MoE FFN):
// against a plain fp64 reference of the whole model, the numerics contract bitwise (a sequence's
// log-probs are the same alone or packed, for any thread count), normalisation, and bad inputs.
#include "model/hybrid_model.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/model/reference/hybrid_model_ref.h"
#include "tests/testing/compare.h"

namespace tandem::model {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::Floats;
using ::testing::HasSubstr;
using testing::RandomVector;

// Four layers: linear/dense, softmax/MoE, linear/MoE, softmax/MoE. V = 61 and Dm = 32 are not
// multiples of any tile; GQA 4:2; partial RoPE (R = 8 of D = 16); 2 norm groups; grouped routing.
ModelConfig TinyConfig() {
  ModelConfig c;
  c.model_type = "bailing_moe_linear";
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 48;
  c.first_k_dense_replace = 1;
  c.num_experts = 8;
  c.num_experts_per_tok = 2;
  c.num_shared_experts = 1;
  c.moe_intermediate_size = 16;
  c.moe_shared_expert_intermediate_size = 24;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.group_norm_size = 2;
  c.layer_group_size = 2;
  c.layer_types = {LayerType::kLinear, LayerType::kSoftmax, LayerType::kLinear,
                   LayerType::kSoftmax};
  c.partial_rotary_factor = 0.5;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 4096;
  return c;
}

// Weights large enough that every block matters: matrices uniform with variance 2/fan_in (unit-
// scale activations), norm weights in [0.5, 1.5], expert bias in [−0.05, 0.05].
HybridModel TinyModel(uint64_t seed = 1) {
  ModelConfig config = TinyConfig();
  ModelWeights weights = AllocateWeights(config);
  uint64_t stream = seed * 1000;
  weights.ForEachParameter([&](const std::string& name, Tensor& t) {
    std::vector<float> v;
    if (name.find("expert_bias") != std::string::npos) {
      v = RandomVector(t.numel(), ++stream, -0.05f, 0.05f);
    } else if (t.rank() == 1) {
      v = RandomVector(t.numel(), ++stream, 0.5f, 1.5f);
    } else {
      const float a = std::sqrt(6.0f / static_cast<float>(t.dim(1)));
      v = RandomVector(t.numel(), ++stream, -a, a);
    }
    std::copy(v.begin(), v.end(), t.data<float>());
  });
  return HybridModel(std::move(config), std::move(weights));
}

struct Batch {
  std::vector<int> tokens, cu_seqlens, targets;
};

ForwardInput MakeInput(const Batch& b, float temperature = 1.0f) {
  const int64_t T = b.tokens.size();
  return {Tensor::FromVector<int32_t>(b.tokens, {T}),
          Tensor::FromVector<int32_t>(b.cu_seqlens, {static_cast<int64_t>(b.cu_seqlens.size())}),
          Tensor::FromVector<int32_t>(b.targets, {static_cast<int64_t>(b.targets.size())}),
          temperature};
}

// Random sequences of the given lengths; targets are next tokens, −1 at each sequence's end.
Batch RandomBatch(const std::vector<int>& lengths, uint64_t seed, int vocab) {
  std::mt19937_64 rng(seed);
  Batch b;
  b.cu_seqlens = {0};
  for (int n : lengths) {
    for (int i = 0; i < n; ++i) b.tokens.push_back(static_cast<int>(rng() % vocab));
    for (int i = 0; i < n; ++i)
      b.targets.push_back(i + 1 < n ? b.tokens[b.tokens.size() - n + i + 1] : -1);
    b.cu_seqlens.push_back(b.cu_seqlens.back() + n);
  }
  return b;
}

std::vector<float> Logprobs(const HybridModel& model, const Batch& b, int threads = 1,
                            float temperature = 1.0f) {
  absl::StatusOr<Tensor> out = model.Forward(Context::Cpu(threads), MakeInput(b, temperature));
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  return std::vector<float>(Floats(*out).begin(), Floats(*out).end());
}

// fp32 vs fp64 through 4 layers: the largest error measured is 1.2e-5 on log-probs in [−9, −1.4];
// 1e-4 leaves headroom while a wrong decay, weight, routing or combine (errors ≥ 1) still fails.
TEST(HybridModelTest, MatchesFp64Reference) {
  HybridModel model = TinyModel();
  Batch b = RandomBatch({1, 5, 70, 131}, 7, 61);
  // Every position gets a target (a random one where the sequence ends), except one.
  for (size_t t = 0; t < b.targets.size(); ++t) {
    if (b.targets[t] < 0) b.targets[t] = static_cast<int>((t * 17) % 61);
  }
  b.targets[3] = -1;
  for (float temperature : {1.0f, 0.7f}) {
    std::vector<float> got = Logprobs(model, b, 2, temperature);
    std::vector<double> want = reference::Forward(model.config(), model.weights(), b.tokens,
                                                  b.cu_seqlens, b.targets, temperature);
    EXPECT_TRUE(AllClose(got, want, {.atol = 1e-4, .rtol = 1e-5})) << "temperature " << temperature;
    EXPECT_EQ(got[3], 0.0f);
  }
}

// Contract: a sequence's log-probs are bitwise the same alone and packed among other sequences of
// random lengths (1, around chunk and tile boundaries, beyond the 1024 attention split).
TEST(HybridModelTest, PackingDoesNotChangeBits) {
  HybridModel model = TinyModel();
  const std::vector<int> probe_lengths = {1, 63, 64, 65, 130, 1030};
  for (uint64_t seed = 0; seed < probe_lengths.size(); ++seed) {
    std::mt19937_64 rng(seed);
    Batch probe = RandomBatch({probe_lengths[seed]}, 100 + seed, 61);
    std::vector<float> alone = Logprobs(model, probe);

    std::vector<int> lengths;
    const int n_others = 2 + static_cast<int>(rng() % 3);
    const int slot = static_cast<int>(rng() % (n_others + 1));
    for (int i = 0; i < n_others; ++i) lengths.push_back(1 + static_cast<int>(rng() % 150));
    Batch packed = RandomBatch(lengths, 200 + seed, 61);
    // Splice the probe in as sequence `slot`.
    const int at = packed.cu_seqlens[slot];
    packed.tokens.insert(packed.tokens.begin() + at, probe.tokens.begin(), probe.tokens.end());
    packed.targets.insert(packed.targets.begin() + at, probe.targets.begin(), probe.targets.end());
    packed.cu_seqlens.insert(packed.cu_seqlens.begin() + slot + 1, at);
    for (size_t i = slot + 1; i < packed.cu_seqlens.size(); ++i) {
      packed.cu_seqlens[i] += probe_lengths[seed];
    }
    std::vector<float> all = Logprobs(model, packed, 2);
    std::vector<float> mine(all.begin() + at, all.begin() + at + probe_lengths[seed]);
    EXPECT_TRUE(BitwiseEqual(mine, alone)) << "seed " << seed << " slot " << slot;
  }
}

TEST(HybridModelTest, ThreadCountDoesNotChangeBits) {
  HybridModel model = TinyModel(3);
  Batch b = RandomBatch({1, 77, 64, 200, 3}, 11, 61);
  std::vector<float> one = Logprobs(model, b, 1);
  EXPECT_TRUE(BitwiseEqual(Logprobs(model, b, 2), one));
  EXPECT_TRUE(BitwiseEqual(Logprobs(model, b, 3), one));
}

// Every vocabulary entry as the target of one position (V copies of one prefix, packed): the
// log-probs are ≤ 0 and their exponentials sum to 1, at any temperature.
TEST(HybridModelTest, LogprobsAreANormalisedDistribution) {
  HybridModel model = TinyModel(5);
  const int V = 61, n = 9;
  Batch prefix = RandomBatch({n}, 13, V);
  Batch b;
  b.cu_seqlens = {0};
  for (int v = 0; v < V; ++v) {
    b.tokens.insert(b.tokens.end(), prefix.tokens.begin(), prefix.tokens.end());
    for (int i = 0; i < n; ++i) b.targets.push_back(i + 1 < n ? -1 : v);
    b.cu_seqlens.push_back(b.cu_seqlens.back() + n);
  }
  for (float temperature : {1.0f, 0.5f, 2.0f}) {
    std::vector<float> logprob = Logprobs(model, b, 2, temperature);
    double sum = 0;
    for (int v = 0; v < V; ++v) {
      const float lp = logprob[v * n + n - 1];
      EXPECT_LE(lp, 0.0f);
      sum += std::exp(static_cast<double>(lp));
      for (int i = 0; i + 1 < n; ++i) EXPECT_EQ(logprob[v * n + i], 0.0f);  // target −1
    }
    EXPECT_NEAR(sum, 1.0, 1e-5) << "temperature " << temperature;
  }
}

TEST(HybridModelTest, EmptyBatchGivesEmptyResult) {
  HybridModel model = TinyModel();
  Batch b{{}, {0}, {}};
  absl::StatusOr<Tensor> out = model.Forward(Context::Cpu(1), MakeInput(b));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->numel(), 0);
}

absl::Status ForwardStatus(const HybridModel& model, const Batch& b, float temperature = 1.0f) {
  return model.Forward(Context::Cpu(1), MakeInput(b, temperature)).status();
}

TEST(HybridModelTest, RejectsBadInputsNamingTheField) {
  HybridModel model = TinyModel();
  const Batch good{{1, 2, 3, 4}, {0, 2, 4}, {2, -1, 4, -1}};
  ASSERT_TRUE(ForwardStatus(model, good).ok());
  auto expect_error = [&](const Batch& b, float temperature, const std::string& text) {
    absl::Status s = ForwardStatus(model, b, temperature);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(s.message()), HasSubstr(text));
  };
  Batch b = good;
  b.tokens[2] = 61;
  expect_error(b, 1.0f, "tokens: id 61 at position 2 is outside the vocabulary [0, 61)");
  b.tokens[2] = -5;
  expect_error(b, 1.0f, "tokens: id -5 at position 2");
  b = good;
  b.targets[1] = 61;
  expect_error(b, 1.0f, "targets: 61 at position 1");
  b.targets[1] = -2;
  expect_error(b, 1.0f, "targets: -2 at position 1");
  b = good;
  b.targets.pop_back();
  expect_error(b, 1.0f, "targets:");
  b = good;
  b.cu_seqlens = {1, 2, 4};
  expect_error(b, 1.0f, "cu_seqlens: must start at 0");
  b.cu_seqlens = {0, 3, 2, 4};
  expect_error(b, 1.0f, "cu_seqlens: decreases at index 2");
  b.cu_seqlens = {0, 2, 3};
  expect_error(b, 1.0f, "cu_seqlens: must end at the token count T = 4, got 3");
  b.cu_seqlens = {};
  expect_error(b, 1.0f, "cu_seqlens");
  for (float t : {0.0f, -1.0f, NAN, INFINITY}) expect_error(good, t, "temperature");

  ForwardInput wrong_dtype = MakeInput(good);
  wrong_dtype.tokens = Tensor::Zeros({4}, DType::kF32);
  absl::Status s = model.Forward(Context::Cpu(1), wrong_dtype).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("tokens: expected i32"));
}

}  // namespace
}  // namespace tandem::model

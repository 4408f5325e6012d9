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
#include "tests/testing/tiny_model.h"

namespace tandem::model {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::Floats;
using ::testing::HasSubstr;

using Batch = testing::TokenBatch;
using testing::MakeForwardInput;
using testing::RandomTokenBatch;

// Four layers: linear/dense, softmax/MoE, linear/MoE, softmax/MoE. V = 61 and Dm = 32 are not
// multiples of any tile; GQA 4:2; partial RoPE (R = 8 of D = 16); 2 norm groups; grouped routing.
// Weights large enough that every block matters (testing::RandomWeights).
HybridModel TinyModel(uint64_t seed = 1) {
  return testing::RandomModel(testing::OddShapeHybridConfig(4), seed);
}

std::vector<float> Logprobs(const HybridModel& model, const Batch& b, int threads = 1,
                            float temperature = 1.0f) {
  absl::StatusOr<Tensor> out =
      model.Forward(Context::Cpu(threads), MakeForwardInput(b, temperature));
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  return std::vector<float>(Floats(*out).begin(), Floats(*out).end());
}

// fp32 vs fp64 through 4 layers: the largest error measured is 1.2e-5 on log-probs in [−9, −1.4];
// 1e-4 leaves headroom while a wrong decay, weight, routing or combine (errors ≥ 1) still fails.
TEST(HybridModelTest, MatchesFp64Reference) {
  HybridModel model = TinyModel();
  Batch b = RandomTokenBatch({1, 5, 70, 131}, 7, 61);
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
    Batch probe = RandomTokenBatch({probe_lengths[seed]}, 100 + seed, 61);
    std::vector<float> alone = Logprobs(model, probe);

    std::vector<int> lengths;
    const int n_others = 2 + static_cast<int>(rng() % 3);
    const int slot = static_cast<int>(rng() % (n_others + 1));
    for (int i = 0; i < n_others; ++i) lengths.push_back(1 + static_cast<int>(rng() % 150));
    Batch packed = RandomTokenBatch(lengths, 200 + seed, 61);
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
  Batch b = RandomTokenBatch({1, 77, 64, 200, 3}, 11, 61);
  std::vector<float> one = Logprobs(model, b, 1);
  EXPECT_TRUE(BitwiseEqual(Logprobs(model, b, 2), one));
  EXPECT_TRUE(BitwiseEqual(Logprobs(model, b, 3), one));
}

// Every vocabulary entry as the target of one position (V copies of one prefix, packed): the
// log-probs are ≤ 0 and their exponentials sum to 1, at any temperature.
TEST(HybridModelTest, LogprobsAreANormalisedDistribution) {
  HybridModel model = TinyModel(5);
  const int V = 61, n = 9;
  Batch prefix = RandomTokenBatch({n}, 13, V);
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
  absl::StatusOr<Tensor> out = model.Forward(Context::Cpu(1), MakeForwardInput(b));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->numel(), 0);
}

absl::Status ForwardStatus(const HybridModel& model, const Batch& b, float temperature = 1.0f) {
  return model.Forward(Context::Cpu(1), MakeForwardInput(b, temperature)).status();
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

  ForwardInput wrong_dtype = MakeForwardInput(good);
  wrong_dtype.tokens = Tensor::Zeros({4}, DType::kF32);
  absl::Status s = model.Forward(Context::Cpu(1), wrong_dtype).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("tokens: expected i32"));
}

}  // namespace
}  // namespace tandem::model

// Tests for Philox4x32-10 and token sampling.
#include "kernels/sample/sample.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::kernels {
namespace {

// Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32_10).
TEST(PhiloxTest, KnownAnswers) {
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(
      Philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}),
      (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(
      Philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}),
      (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(SampleTest, UniformDependsOnEveryKeyField) {
  SampleKey k{1, 2, 3};
  double u = UniformFromKey(k);
  EXPECT_GE(u, 0.0);
  EXPECT_LT(u, 1.0);
  EXPECT_EQ(u, UniformFromKey(k));
  EXPECT_NE(u, UniformFromKey({2, 2, 3}));
  EXPECT_NE(u, UniformFromKey({1, 3, 3}));
  EXPECT_NE(u, UniformFromKey({1, 2, 4}));
  EXPECT_NE(u, UniformFromKey({1, 2, 3 + (uint64_t{1} << 32)}));
}

std::vector<float> LogSoftmax(const std::vector<double>& p) {
  std::vector<float> out;
  for (double x : p) out.push_back(static_cast<float>(std::log(x)));
  return out;
}

TEST(SampleTest, FrequenciesFollowTheDistribution) {
  std::vector<double> p = {0.5, 0.25, 0.125, 0.125};
  std::vector<float> lp = LogSoftmax(p);
  std::map<int, int> counts;
  const int n = 20000;
  for (int pos = 0; pos < n; ++pos) {
    auto tok = SampleToken(lp.data(), 4, {}, {42, 0, static_cast<uint64_t>(pos)});
    ASSERT_TRUE(tok.ok());
    counts[*tok]++;
  }
  for (int v = 0; v < 4; ++v) {
    double freq = static_cast<double>(counts[v]) / n;
    EXPECT_NEAR(freq, p[v], 0.015) << "token " << v;
  }
}

TEST(SampleTest, TopKAndTopPRestrictTheDraw) {
  std::vector<float> lp = LogSoftmax({0.1, 0.4, 0.3, 0.2});
  for (int pos = 0; pos < 2000; ++pos) {
    SampleKey key{7, 1, static_cast<uint64_t>(pos)};
    auto k2 = SampleToken(lp.data(), 4, {.top_k = 2}, key);
    ASSERT_TRUE(k2.ok());
    EXPECT_TRUE(*k2 == 1 || *k2 == 2);
    auto p05 = SampleToken(lp.data(), 4, {.top_p = 0.5f}, key);  // {1: 0.4, 2: 0.3} reaches 0.5
    ASSERT_TRUE(p05.ok());
    EXPECT_TRUE(*p05 == 1 || *p05 == 2);
    auto p01 = SampleToken(lp.data(), 4, {.top_p = 0.1f}, key);
    EXPECT_EQ(*p01, 1);
  }
}

TEST(SampleTest, GreedyBreaksTiesToTheLowerId) {
  std::vector<float> lp = {-2.0f, -0.5f, -0.5f, -3.0f};
  EXPECT_EQ(*SampleToken(lp.data(), 4, {.greedy = true}, {}), 1);
  // Top-k among ties also prefers lower ids.
  std::vector<float> flat(5, std::log(0.2f));
  for (int pos = 0; pos < 100; ++pos) {
    auto t = SampleToken(flat.data(), 5, {.top_k = 2}, {3, 0, static_cast<uint64_t>(pos)});
    EXPECT_LT(*t, 2);
  }
}

TEST(SampleTest, NeverDrawsImpossibleTokens) {
  std::vector<float> lp = {-INFINITY, 0.0f, -INFINITY};
  for (int pos = 0; pos < 100; ++pos) {
    EXPECT_EQ(*SampleToken(lp.data(), 3, {}, {9, 0, static_cast<uint64_t>(pos)}), 1);
  }
}

// SampleToken's definition (sample.h) written out plainly: sort the whole row, cut, walk in id
// order.
int32_t DefinitionDraw(const std::vector<float>& lp, const SamplingParams& params,
                       const SampleKey& key) {
  const int64_t vocab = static_cast<int64_t>(lp.size());
  const auto prob = [&](int32_t v) {
    const double p = std::exp(static_cast<double>(lp[v]));
    return std::isfinite(p) && p > 0.0 ? p : 0.0;
  };
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    if (std::isnan(lp[a]) || std::isnan(lp[b])) return !std::isnan(lp[a]) && std::isnan(lp[b]);
    return lp[a] > lp[b];
  });
  std::vector<int32_t> kept;
  double prefix = 0.0;
  for (int64_t i = 0; i < (params.top_k > 0 ? std::min(params.top_k, vocab) : vocab); ++i) {
    if (prob(order[i]) == 0.0) break;
    kept.push_back(order[i]);
    prefix += prob(order[i]);
    if (params.top_p < 1.0f && prefix >= params.top_p) break;
  }
  // p over the whole vocabulary, 0 where not kept; sums per chunk of kSampleChunk ids.
  std::vector<double> p(vocab, 0.0);
  for (int32_t v : kept) p[v] = prob(v);
  double total = 0.0;
  for (int64_t c = 0; c < vocab; c += kSampleChunk) {
    double sum = 0.0;
    for (int64_t v = c; v < std::min(vocab, c + kSampleChunk); ++v) sum += p[v];
    total += sum;
  }
  const double target = UniformFromKey(key) * total;
  double before = 0.0;
  for (int64_t c = 0; c < vocab; c += kSampleChunk) {
    double part = 0.0;
    for (int64_t v = c; v < std::min(vocab, c + kSampleChunk); ++v) {
      part += p[v];
      if (p[v] > 0.0 && target < before + part) return static_cast<int32_t>(v);
    }
    before += part;
  }
  return *std::max_element(kept.begin(), kept.end());
}

// Rows large enough that top-p needs more than the first candidates SampleToken sorts (256, then
// 2048, ...), with ties, impossible tokens and NaNs, against the definition.
TEST(SampleTest, MatchesTheDefinitionOnLargeRows) {
  std::mt19937 rng(5);
  for (float sigma : {0.5f, 3.0f, 12.0f}) {
    const int64_t vocab = 20000;
    std::normal_distribution<float> logit(0.0f, sigma);
    std::vector<double> x(vocab);
    for (double& v : x) v = logit(rng);
    for (int64_t v = 0; v < vocab; v += 97) x[v] = x[v / 2];  // ties
    const double mx = *std::max_element(x.begin(), x.end());
    double sum = 0.0;
    for (double v : x) sum += std::exp(v - mx);
    std::vector<float> lp(vocab);
    for (int64_t v = 0; v < vocab; ++v) lp[v] = static_cast<float>(x[v] - mx - std::log(sum));
    for (int64_t v = 3; v < vocab; v += 1001) lp[v] = -INFINITY;
    lp[11] = lp[4001] = NAN;
    for (const SamplingParams& params :
         {SamplingParams{}, SamplingParams{.top_p = 0.3f}, SamplingParams{.top_p = 0.97f},
          SamplingParams{.top_k = 5}, SamplingParams{.top_k = 3000, .top_p = 0.9f},
          SamplingParams{.top_k = vocab + 1}}) {
      for (uint64_t pos = 0; pos < 24; ++pos) {
        const SampleKey key{11, 2, pos};
        absl::StatusOr<int32_t> token = SampleToken(lp.data(), vocab, params, key);
        ASSERT_TRUE(token.ok()) << token.status();
        ASSERT_EQ(*token, DefinitionDraw(lp, params, key))
            << "sigma " << sigma << " top_k " << params.top_k << " top_p " << params.top_p;
      }
    }
  }
}

TEST(SampleTest, SeveralNansAreNeverDrawnOrKept) {
  std::vector<float> lp = {NAN, std::log(0.5f), NAN, std::log(0.5f), NAN};
  for (uint64_t pos = 0; pos < 200; ++pos) {
    for (const SamplingParams& params :
         {SamplingParams{}, SamplingParams{.top_k = 4}, SamplingParams{.top_p = 0.9f}}) {
      absl::StatusOr<int32_t> token = SampleToken(lp.data(), 5, params, {1, 0, pos});
      ASSERT_TRUE(token.ok());
      EXPECT_TRUE(*token == 1 || *token == 3);
    }
  }
}

// SampleRows on the CPU: each draw is SampleToken on its row, with the row's log-prob of the
// token; the same for any thread count; a bad draw's error names it and spares the others.
TEST(SampleTest, SampleRowsDrawsEachRowBySampleToken) {
  const int64_t rows = 3, vocab = 600;
  std::mt19937 rng(3);
  std::normal_distribution<float> logit(0.0f, 2.0f);
  std::vector<float> lp(rows * vocab);
  for (float& x : lp) x = logit(rng) - 8.0f;  // not normalised: SampleToken does not need it
  const Tensor t = Tensor::FromVector(lp, {rows, vocab});
  std::vector<RowDraw> draws;
  for (uint64_t pos = 0; pos < 30; ++pos) {
    draws.push_back({static_cast<int64_t>(pos % rows),
                     pos % 3 == 0 ? SamplingParams{.top_p = 0.8f} : SamplingParams{},
                     {9, pos % 2, pos}});
  }
  draws.push_back({rows, {}, {}});
  draws.push_back({0, {.top_k = -2}, {}});
  const auto one = SampleRows(Context::Cpu(1), t, draws);
  const auto three = SampleRows(Context::Cpu(3), t, draws);
  for (size_t i = 0; i + 2 < draws.size(); ++i) {
    ASSERT_TRUE(one[i].ok()) << one[i].status();
    const float* row = lp.data() + draws[i].row * vocab;
    EXPECT_EQ(one[i]->token, *SampleToken(row, vocab, draws[i].params, draws[i].key));
    EXPECT_EQ(one[i]->logprob, row[one[i]->token]);
    ASSERT_TRUE(three[i].ok());
    EXPECT_EQ(three[i]->token, one[i]->token);
  }
  EXPECT_EQ(one[30].status().message(), "draws[30].row: 3 is outside the 3 rows of logprobs");
  EXPECT_EQ(one[31].status().message(), "draws[31].top_k: expected >= 0, got -2");
}

TEST(SampleTest, BadInput) {
  std::vector<float> lp = {0.0f};
  EXPECT_FALSE(SampleToken(lp.data(), 0, {}, {}).ok());
  EXPECT_FALSE(SampleToken(lp.data(), 1, {.top_k = -1}, {}).ok());
  EXPECT_FALSE(SampleToken(lp.data(), 1, {.top_p = 0.0f}, {}).ok());
  EXPECT_FALSE(SampleToken(lp.data(), 1, {.top_p = 1.5f}, {}).ok());
  std::vector<float> none = {-INFINITY, NAN};
  EXPECT_FALSE(SampleToken(none.data(), 2, {}, {}).ok());
  EXPECT_FALSE(SampleToken(none.data(), 2, {.greedy = true}, {}).ok());
}

}  // namespace
}  // namespace tandem::kernels

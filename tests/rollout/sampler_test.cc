// rollout::SampleTokens, the engine's sampling step: every draw of a step (several temperatures,
// greedy, top-k / top-p, samples sharing a row) gives the token and log-prob of LogSoftmax on its
// row alone followed by kernels::SampleToken, for 1 and 3 threads; a bad draw fails alone.
#include "rollout/sampler.h"

#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "kernels/sample/sample.h"

namespace tandem::rollout {
namespace {

// The reference for one draw: the row's distribution computed alone, then SampleToken.
SampledToken AloneDraw(const std::vector<float>& logits, int64_t vocab, const TokenDraw& d) {
  const float temperature = d.sampling->temperature == 0.0f ? 1.0f : d.sampling->temperature;
  const Tensor row = Tensor::FromVector(
      std::vector<float>(logits.begin() + d.row * vocab, logits.begin() + (d.row + 1) * vocab),
      {1, vocab});
  Tensor lp = Tensor::Empty({1, vocab}, DType::kF32), lse = Tensor::Empty({1}, DType::kF32);
  EXPECT_TRUE(kernels::LogSoftmax(Context::Cpu(1), row, temperature, lp, lse).ok());
  kernels::SamplingParams params;
  params.greedy = d.sampling->temperature == 0.0f;
  params.top_k = d.sampling->top_k;
  params.top_p = d.sampling->top_p;
  const absl::StatusOr<int32_t> token = kernels::SampleToken(
      lp.data<float>(), vocab, params,
      {d.sampling->seed, static_cast<uint64_t>(d.sample_index), static_cast<uint64_t>(d.position)});
  EXPECT_TRUE(token.ok()) << token.status();
  return {*token, lp.data<float>()[*token]};
}

TEST(SamplerTest, EveryDrawIsItsRowAloneThenSampleToken) {
  const int64_t rows = 5, vocab = 700;
  std::mt19937 rng(7);
  std::normal_distribution<float> logit(0.0f, 3.0f);
  std::vector<float> logits(rows * vocab);
  for (float& x : logits) x = logit(rng);
  std::vector<SamplingOptions> options(5);
  options[0].temperature = 1.0f;
  options[1].temperature = 0.7f;
  options[2].temperature = 0.0f;  // greedy
  options[3].temperature = 0.7f, options[3].top_p = 0.8f;
  options[4].temperature = 1.3f, options[4].top_k = 20;
  for (size_t i = 0; i < options.size(); ++i) options[i].seed = 100 + i;
  std::vector<TokenDraw> draws;
  for (int64_t i = 0; i < 40; ++i) {  // rows drawn from several times (forks share a row)
    draws.push_back({i % rows, &options[(i / 3) % options.size()], i % 4, 50 + i});
  }
  const Tensor t = Tensor::FromVector(logits, {rows, vocab});
  for (int threads : {1, 3}) {
    const std::vector<absl::StatusOr<SampledToken>> got =
        SampleTokens(Context::Cpu(threads), t, draws);
    ASSERT_EQ(got.size(), draws.size());
    for (size_t i = 0; i < draws.size(); ++i) {
      ASSERT_TRUE(got[i].ok()) << got[i].status();
      const SampledToken want = AloneDraw(logits, vocab, draws[i]);
      EXPECT_EQ(got[i]->token, want.token) << "draw " << i << ", " << threads << " threads";
      EXPECT_EQ(got[i]->logprob, want.logprob) << "draw " << i << ", " << threads << " threads";
    }
  }
}

TEST(SamplerTest, ABadDrawFailsAlone) {
  const int64_t vocab = 50;
  std::vector<float> logits(2 * vocab, 0.5f);
  SamplingOptions good, bad;
  bad.top_p = 1.5f;
  SamplingOptions cooler = good;
  cooler.temperature = 0.5f;
  // The bad draw comes after another temperature's: it is named by its index in the step.
  const std::vector<TokenDraw> draws = {
      {0, &cooler, 0, 3}, {0, &good, 0, 3}, {1, &bad, 0, 3}, {1, &good, 1, 3}};
  const std::vector<absl::StatusOr<SampledToken>> got =
      SampleTokens(Context::Cpu(2), Tensor::FromVector(logits, {2, vocab}), draws);
  EXPECT_TRUE(got[0].ok());
  EXPECT_TRUE(got[1].ok());
  ASSERT_FALSE(got[2].ok());
  EXPECT_EQ(got[2].status().message(), "draws[2].top_p: expected in (0, 1], got 1.5");
  EXPECT_TRUE(got[3].ok());
}

}  // namespace
}  // namespace tandem::rollout

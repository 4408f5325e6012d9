// Log-prob tests: CPU vs the fp64 reference over vocab sizes around the 8-lane reduction and
// several temperatures, the reference gradient vs finite differences, the sampler/trainer
// agreement (LogSoftmax at the target is bitwise LogprobFromLogits), row and thread-count
// invariance, the LM-head convenience, and bad arguments.
#include "kernels/lm_head_logprob/lm_head_logprob.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gemm/gemm.h"
#include "tests/kernels/reference/lm_head_logprob_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

std::vector<int32_t> Targets(int64_t t, int64_t v, uint64_t seed) {
  std::vector<int32_t> out;
  for (float f : RandomVector(t, seed, 0.0f, static_cast<float>(v))) {
    out.push_back(std::min(static_cast<int32_t>(f), static_cast<int32_t>(v - 1)));
  }
  return out;
}

struct Out {
  Tensor logprob, lse, all, lse2, dlogits;
};

Out RunAll(const Context& ctx, const std::vector<float>& logits, const std::vector<int32_t>& tg,
           const std::vector<float>& dlogprob, int64_t v, float temperature) {
  const int64_t t = static_cast<int64_t>(tg.size());
  Tensor lg = Tensor::FromVector(logits, {t, v}), tgt = Tensor::FromVector(tg, {t});
  Out o{Tensor::Empty({t}, DType::kF32), Tensor::Empty({t}, DType::kF32),
        Tensor::Empty({t, v}, DType::kF32), Tensor::Empty({t}, DType::kF32),
        Tensor::Empty({t, v}, DType::kF32)};
  EXPECT_TRUE(LogprobFromLogits(ctx, lg, tgt, temperature, o.logprob, o.lse).ok());
  EXPECT_TRUE(LogSoftmax(ctx, lg, temperature, o.all, o.lse2).ok());
  EXPECT_TRUE(LogprobFromLogitsBwd(ctx, lg, tgt, o.lse, temperature,
                                   Tensor::FromVector(dlogprob, {t}), o.dlogits)
                  .ok());
  return o;
}

TEST(LmHeadLogprobTest, MatchesReferenceAndSamplerAgreesWithTrainer) {
  Context ctx = Context::Cpu(1);
  for (auto [t, v] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 7}, {3, 8}, {5, 33}, {9, 1000}}) {
    for (float temperature : {1.0f, 0.7f, 1.3f}) {
      auto logits = RandomVector(t * v, 3 * v + t, -8.0f, 8.0f);
      auto tg = Targets(t, v, v);
      auto dlp = RandomVector(t, 5);
      Out o = RunAll(ctx, logits, tg, dlp, v, temperature);
      auto ld = ToDouble(logits);
      std::string where =
          std::to_string(t) + "x" + std::to_string(v) + " T=" + std::to_string(temperature);
      EXPECT_TRUE(AllClose(Floats(o.logprob), reference::Logprob(ld, tg, v, temperature),
                           {.atol = 4e-6, .rtol = 1e-6}))
          << where;
      EXPECT_TRUE(AllClose(Floats(o.all), reference::LogSoftmax(ld, t, v, temperature),
                           {.atol = 4e-6, .rtol = 1e-6, .shape = {t, v}}))
          << where;
      EXPECT_TRUE(AllClose(Floats(o.dlogits),
                           reference::LogprobBwd(ld, tg, ToDouble(dlp), v, temperature),
                           {.atol = 1e-7, .rtol = 4e-6, .shape = {t, v}}))
          << where;
      // The sampler's distribution at the target is the trainer's log-prob, bit for bit.
      EXPECT_TRUE(BitwiseEqual(Floats(o.lse), Floats(o.lse2))) << where;
      for (int64_t r = 0; r < t; ++r) {
        EXPECT_TRUE(BitwiseEqual({o.all.data<float>() + r * v + tg[r], 1},
                                 {o.logprob.data<float>() + r, 1}))
            << where << " row " << r;
        float lse = cpu::RowLogSumExp(logits.data() + r * v, v, temperature);
        EXPECT_TRUE(BitwiseEqual({&lse, 1}, {o.lse.data<float>() + r, 1})) << where;
      }
    }
  }
}

// Pins the documented vocab order (a GPU twin must reproduce it): 8 lanes, v ≡ l mod 8, a fixed
// combine tree, z = logits / temperature as a division.
TEST(LmHeadLogprobTest, ReductionOrderIsTheDocumentedOne) {
  for (int64_t v = 1; v < 400; v += 7) {
    auto row = RandomVector(v, 31 + v, -3.0f, 3.0f);
    const float temperature = 0.7f;
    float m = -INFINITY;
    for (float x : row) m = std::max(m, x / temperature);
    float lane[8] = {};
    for (int64_t j = 0; j < v; ++j) lane[j % 8] += std::exp(row[j] / temperature - m);
    float expect = m + std::log(((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                                ((lane[4] + lane[5]) + (lane[6] + lane[7])));
    float got = cpu::RowLogSumExp(row.data(), v, temperature);
    EXPECT_TRUE(BitwiseEqual({&got, 1}, {&expect, 1})) << v;
  }
}

TEST(LmHeadLogprobTest, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t t = 3, v = 5;
  const double temperature = 0.8;
  auto logits = ToDouble(RandomVector(t * v, 7, -3.0f, 3.0f));
  std::vector<int32_t> tg = {4, 0, 2};
  auto dlp = ToDouble(RandomVector(t, 8));
  auto g = reference::LogprobBwd(logits, tg, dlp, v, temperature);
  auto loss = [&](const std::vector<double>& lg) {
    auto lp = reference::Logprob(lg, tg, v, temperature);
    double l = 0;
    for (int64_t r = 0; r < t; ++r) l += dlp[r] * lp[r];
    return l;
  };
  for (size_t i = 0; i < logits.size(); ++i) {
    double fd = testing::FiniteDifference(loss, logits, i);
    EXPECT_NEAR(g[i], fd, 1e-8 * (1 + std::abs(fd))) << i;
  }
}

TEST(LmHeadLogprobTest, ExtremeLogits) {
  Context ctx = Context::Cpu(1);
  const int64_t v = 11;
  auto logits = RandomVector(2 * v, 9, -1.0f, 1.0f);
  for (int64_t j = 0; j < v; ++j) logits[j] *= 1e4f;  // row 0: huge spread, exp underflows
  logits[v + 3] = -INFINITY;                          // row 1: a masked-out vocab entry
  std::vector<int32_t> tg = {5, 3};
  Out o = RunAll(ctx, logits, tg, {1.0f, 1.0f}, v, 1.0f);
  auto ld = ToDouble(logits);
  EXPECT_TRUE(
      AllClose(Floats(o.all), reference::LogSoftmax(ld, 2, v, 1.0), {.atol = 4e-6, .rtol = 1e-6}));
  EXPECT_EQ(o.logprob.data<float>()[1], -INFINITY);
  EXPECT_EQ(o.dlogits.data<float>()[v + 4], -std::exp(o.all.data<float>()[v + 4]));
}

TEST(LmHeadLogprobTest, RowsAndThreadsDoNotChangeBits) {
  const int64_t t = 23, v = 517, row = 17;
  auto logits = RandomVector(t * v, 11, -6.0f, 6.0f);
  auto tg = Targets(t, v, 12);
  auto dlp = RandomVector(t, 13);
  Context c1 = Context::Cpu(1), c2 = Context::Cpu(2);
  Out a = RunAll(c1, logits, tg, dlp, v, 0.9f), b = RunAll(c2, logits, tg, dlp, v, 0.9f);
  EXPECT_TRUE(BitwiseEqual(Floats(a.logprob), Floats(b.logprob)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.all), Floats(b.all), {t, v}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dlogits), Floats(b.dlogits), {t, v}));
  std::vector<float> one(logits.begin() + row * v, logits.begin() + (row + 1) * v);
  Out c = RunAll(c2, one, {tg[row]}, {dlp[row]}, v, 0.9f);
  EXPECT_TRUE(BitwiseEqual(Floats(a.logprob.Rows(row, row + 1)), Floats(c.logprob)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.all.Rows(row, row + 1)), Floats(c.all)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dlogits.Rows(row, row + 1)), Floats(c.dlogits)));
}

TEST(LmHeadLogprobTest, LmHeadIsGemmThenLogprob) {
  Context ctx = Context::Cpu(2);
  const int64_t t = 6, v = 45, dm = 19;
  auto h = RandomVector(t * dm, 21), w = RandomVector(v * dm, 22);
  auto tg = Targets(t, v, 23);
  Tensor ht = Tensor::FromVector(h, {t, dm}), wt = Tensor::FromVector(w, {v, dm});
  Tensor tgt = Tensor::FromVector(tg, {t});
  Tensor logits = Tensor::Empty({t, v}, DType::kF32), lp = Tensor::Empty({t}, DType::kF32);
  Tensor lse = Tensor::Empty({t}, DType::kF32);
  ASSERT_TRUE(LmHeadLogprobFwd(ctx, ht, wt, tgt, 1.0f, logits, lp, lse).ok());
  auto ref_logits = reference::LmHead(ToDouble(h), ToDouble(w), t, v, dm);
  EXPECT_TRUE(AllClose(Floats(logits), ref_logits, {.atol = 1e-5, .shape = {t, v}}));
  EXPECT_TRUE(AllClose(Floats(lp), reference::Logprob(ref_logits, tg, v, 1.0), {.atol = 2e-5}));
  Tensor logits2 = Tensor::Empty({t, v}, DType::kF32), lp2 = Tensor::Empty({t}, DType::kF32);
  ASSERT_TRUE(GemmNT(ctx, ht, wt, logits2).ok());
  ASSERT_TRUE(LogprobFromLogits(ctx, logits2, tgt, 1.0f, lp2, lse).ok());
  EXPECT_TRUE(BitwiseEqual(Floats(lp), Floats(lp2)));
}

// The entropy against its definition in fp64 (−Σ p log p with p = softmax(z)), with the lse of
// LogprobFromLogits; −inf entries, an all −inf row (0) and a NaN row (NaN).
TEST(LmHeadLogprobTest, SoftmaxEntropyIsTheEntropy) {
  const int64_t t = 5, v = 300;
  std::vector<float> x = RandomVector(t * v, 21, -6.0f, 6.0f);
  for (int64_t i = 0; i < v; ++i) x[3 * v + i] = -INFINITY;  // row 3: all −inf
  x[v + 17] = x[v + 250] = -INFINITY;                        // row 1: two masked entries
  x[4 * v + 9] = NAN;                                        // row 4: NaN
  for (float temp : {1.0f, 0.6f}) {
    const Context ctx = Context::Cpu(2);
    Tensor lg = Tensor::FromVector(x, {t, v});
    Tensor entropy = Tensor::Empty({t}, DType::kF32), lse = Tensor::Empty({t}, DType::kF32);
    Tensor logprob = Tensor::Empty({t}, DType::kF32), lse2 = Tensor::Empty({t}, DType::kF32);
    ASSERT_TRUE(SoftmaxEntropy(ctx, lg, temp, entropy, lse).ok());
    ASSERT_TRUE(LogprobFromLogits(ctx, lg, Tensor::FromVector(std::vector<int32_t>(t, 0), {t}),
                                  temp, logprob, lse2)
                    .ok());
    EXPECT_TRUE(BitwiseEqual(Floats(lse), Floats(lse2)));
    for (int64_t r : {0, 1, 2}) {
      double m = -INFINITY, s = 0, h = 0;
      for (int64_t i = 0; i < v; ++i) m = std::max(m, double{x[r * v + i]} / temp);
      for (int64_t i = 0; i < v; ++i) s += std::exp(double{x[r * v + i]} / temp - m);
      for (int64_t i = 0; i < v; ++i) {
        const double p = std::exp(double{x[r * v + i]} / temp - m) / s;
        if (p > 0) h -= p * std::log(p);
      }
      EXPECT_NEAR(entropy.data<float>()[r], h, 1e-5 * (1 + h)) << "row " << r;
    }
    EXPECT_EQ(entropy.data<float>()[3], 0.0f);
    EXPECT_TRUE(std::isnan(entropy.data<float>()[4]));
  }
  // A uniform row has entropy log V; one finite entry among −inf has entropy 0.
  std::vector<float> rows(64, 0.5f);
  rows.insert(rows.end(), {-INFINITY, 3.0f, -INFINITY});
  rows.resize(128, -INFINITY);
  Tensor two = Tensor::Empty({2}, DType::kF32), two_lse = Tensor::Empty({2}, DType::kF32);
  ASSERT_TRUE(
      SoftmaxEntropy(Context::Cpu(1), Tensor::FromVector(rows, {2, 64}), 1.0f, two, two_lse).ok());
  EXPECT_NEAR(two.data<float>()[0], std::log(64.0), 1e-6);
  EXPECT_EQ(two.data<float>()[1], 0.0f);
  Tensor entropy = Tensor::Empty({2}, DType::kF32), lse = Tensor::Empty({3}, DType::kF32);
  const absl::Status bad =
      SoftmaxEntropy(Context::Cpu(1), Tensor::FromVector(x, {t, v}), 1.0f, entropy, lse);
  EXPECT_NE(bad.message().find("entropy"), std::string::npos) << bad;
}

TEST(LmHeadLogprobTest, BadInputsNameTheArgument) {
  Context ctx = Context::Cpu(1);
  Tensor logits = Tensor::Zeros({3, 10}, DType::kF32), t3 = Tensor::Zeros({3}, DType::kF32);
  Tensor lse = Tensor::Zeros({3}, DType::kF32), t4 = Tensor::Zeros({4}, DType::kF32);
  Tensor tg = Tensor::FromVector(std::vector<int32_t>{0, 9, 2}, {3});
  Tensor tg_big = Tensor::FromVector(std::vector<int32_t>{0, 10, 2}, {3});
  Tensor tg_neg = Tensor::FromVector(std::vector<int32_t>{0, 1, -1}, {3});
  auto expect_bad = [](absl::Status s, const std::string& name) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.message().substr(0, name.size() + 1), name + ":") << s.message();
  };
  expect_bad(LogprobFromLogits(ctx, logits, tg_big, 1.0f, t3, lse), "targets");
  expect_bad(LogprobFromLogits(ctx, logits, tg_neg, 1.0f, t3, lse), "targets");
  expect_bad(LogprobFromLogits(ctx, logits, t3, 1.0f, t3, lse), "targets");
  for (float bad_t : {0.0f, -1.0f, NAN, INFINITY}) {
    expect_bad(LogprobFromLogits(ctx, logits, tg, bad_t, t3, lse), "temperature");
    expect_bad(LogSoftmax(ctx, logits, bad_t, logits, lse), "temperature");
  }
  expect_bad(LogprobFromLogits(ctx, logits, tg, 1.0f, t4, lse), "logprob");
  expect_bad(LogprobFromLogits(ctx, logits, tg, 1.0f, t3, t4), "lse");
  Tensor empty_vocab = Tensor::Zeros({3, 0}, DType::kF32);
  expect_bad(LogprobFromLogits(ctx, empty_vocab, tg, 1.0f, t3, lse), "logits");
  Tensor out_bad = Tensor::Zeros({3, 9}, DType::kF32);
  expect_bad(LogSoftmax(ctx, logits, 1.0f, out_bad, lse), "out");
  Tensor dl = Tensor::Zeros({3, 10}, DType::kF32);
  expect_bad(LogprobFromLogitsBwd(ctx, logits, tg, lse, 1.0f, t4, dl), "dlogprob");
  expect_bad(LogprobFromLogitsBwd(ctx, logits, tg, lse, 1.0f, t3, out_bad), "dlogits");
  expect_bad(LogprobFromLogitsBwd(ctx, logits, tg_big, lse, 1.0f, t3, dl), "targets");
  expect_bad(LogprobFromLogitsBwd(ctx, logits, tg, lse, 0.0f, t3, dl), "temperature");
  Tensor h = Tensor::Zeros({3, 5}, DType::kF32), w = Tensor::Zeros({10, 5}, DType::kF32);
  Tensor w_bad = Tensor::Zeros({10, 6}, DType::kF32);
  expect_bad(LmHeadLogprobFwd(ctx, h, w_bad, tg, 1.0f, logits, t3, lse), "w");
  expect_bad(LmHeadLogprobFwd(ctx, h, w, tg, 1.0f, out_bad, t3, lse), "logits");
  expect_bad(LmHeadLogprobFwd(ctx, h, w, tg_big, 1.0f, logits, t3, lse), "targets");
  expect_bad(LmHeadLogprobFwd(ctx, h, w, tg, -2.0f, logits, t3, lse), "temperature");
}

}  // namespace
}  // namespace tandem::kernels

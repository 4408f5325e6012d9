// Cross-entropy tests: CPU vs the fp64 reference (masked tokens, padding targets, an all-zero
// mask), the reference gradient vs finite differences, agreement with LogprobFromLogits' bits,
// thread-count invariance, and bad targets / shapes.
#include "kernels/cross_entropy/cross_entropy.h"

#include <vector>

#include "gtest/gtest.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "tests/kernels/reference/cross_entropy_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

struct Data {
  std::vector<float> logits, mask;
  std::vector<int32_t> targets;
  int64_t t, v;
};

// Every third token masked out with a −100 padding target; the others weighted 1 or 0.5.
Data MakeData(int64_t t, int64_t v, uint64_t seed) {
  Data d{RandomVector(t * v, seed, -6.0f, 6.0f), {}, {}, t, v};
  auto r = RandomVector(t, seed + 1, 0.0f, static_cast<float>(v));
  for (int64_t i = 0; i < t; ++i) {
    bool pad = i % 3 == 2;
    d.mask.push_back(pad ? 0.0f : (i % 4 == 1 ? 0.5f : 1.0f));
    d.targets.push_back(pad ? -100 : std::min<int32_t>(static_cast<int32_t>(r[i]), v - 1));
  }
  return d;
}

struct Out {
  Tensor loss, lse, dlogits;
};

Out RunFwdBwd(const Context& ctx, const Data& d, float dloss) {
  Tensor lg = Tensor::FromVector(d.logits, {d.t, d.v});
  Tensor tg = Tensor::FromVector(d.targets, {d.t}), mk = Tensor::FromVector(d.mask, {d.t});
  Out o{Tensor::Empty({1}, DType::kF32), Tensor::Empty({d.t}, DType::kF32),
        Tensor::Empty({d.t, d.v}, DType::kF32)};
  EXPECT_TRUE(CrossEntropyFwd(ctx, lg, tg, mk, o.loss, o.lse).ok());
  EXPECT_TRUE(CrossEntropyBwd(ctx, lg, tg, mk, o.lse, dloss, o.dlogits).ok());
  return o;
}

TEST(CrossEntropyTest, MatchesReference) {
  Context ctx = Context::Cpu(1);
  for (auto [t, v] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 9}, {6, 33}, {10, 500}}) {
    Data d = MakeData(t, v, 7 * t + v);
    Out o = RunFwdBwd(ctx, d, 1.7f);
    auto lg = ToDouble(d.logits), mk = ToDouble(d.mask);
    double loss = reference::CrossEntropy(lg, d.targets, mk, v);
    std::string where = std::to_string(t) + "x" + std::to_string(v);
    EXPECT_TRUE(AllClose(Floats(o.loss), {&loss, 1}, {.atol = 1e-6, .rtol = 2e-6})) << where;
    EXPECT_TRUE(AllClose(Floats(o.dlogits), reference::CrossEntropyBwd(lg, d.targets, mk, v, 1.7),
                         {.atol = 1e-7, .rtol = 4e-6, .shape = {t, v}}))
        << where;
  }
}

TEST(CrossEntropyTest, AllMaskedGivesZero) {
  Context ctx = Context::Cpu(1);
  Data d = MakeData(4, 10, 3);
  d.mask.assign(4, 0.0f);
  Out o = RunFwdBwd(ctx, d, 1.0f);
  EXPECT_EQ(o.loss.data<float>()[0], 0.0f);
  std::vector<float> zeros(40, 0.0f);
  EXPECT_TRUE(BitwiseEqual(Floats(o.dlogits), zeros));
}

TEST(CrossEntropyTest, ReferenceBackwardMatchesFiniteDifferences) {
  Data d = MakeData(4, 5, 11);
  auto lg = ToDouble(d.logits), mk = ToDouble(d.mask);
  auto g = reference::CrossEntropyBwd(lg, d.targets, mk, d.v, 1.3);
  auto loss = [&](const std::vector<double>& x) {
    return 1.3 * reference::CrossEntropy(x, d.targets, mk, d.v);
  };
  for (size_t i = 0; i < lg.size(); ++i) {
    double fd = testing::FiniteDifference(loss, lg, i);
    EXPECT_NEAR(g[i], fd, 1e-8 * (1 + std::abs(fd))) << i;
  }
}

TEST(CrossEntropyTest, ReadsTheSameBitsAsLogprobs) {
  Context ctx = Context::Cpu(2);
  Data d = MakeData(7, 301, 21);
  for (int32_t& tg : d.targets) tg = std::max(tg, 0);
  Tensor lg = Tensor::FromVector(d.logits, {d.t, d.v}), tg = Tensor::FromVector(d.targets, {d.t});
  Tensor lp = Tensor::Empty({d.t}, DType::kF32), lse = Tensor::Empty({d.t}, DType::kF32);
  ASSERT_TRUE(LogprobFromLogits(ctx, lg, tg, 1.0f, lp, lse).ok());
  for (int64_t r = 0; r < d.t; ++r) {
    d.mask.assign(d.t, 0.0f);
    d.mask[r] = 1.0f;  // one token: loss = −logprob exactly
    Out o = RunFwdBwd(ctx, d, 1.0f);
    float neg = -lp.data<float>()[r];
    EXPECT_TRUE(BitwiseEqual(Floats(o.loss), {&neg, 1})) << r;
    EXPECT_TRUE(BitwiseEqual(Floats(o.lse), Floats(lse)));
  }
}

TEST(CrossEntropyTest, ThreadCountDoesNotChangeBits) {
  Data d = MakeData(29, 257, 31);
  Context c1 = Context::Cpu(1), c2 = Context::Cpu(2);
  Out a = RunFwdBwd(c1, d, 0.8f), b = RunFwdBwd(c2, d, 0.8f);
  EXPECT_TRUE(BitwiseEqual(Floats(a.loss), Floats(b.loss)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.lse), Floats(b.lse)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dlogits), Floats(b.dlogits), {d.t, d.v}));
}

TEST(CrossEntropyTest, BadInputsNameTheArgument) {
  Context ctx = Context::Cpu(1);
  Tensor lg = Tensor::Zeros({3, 10}, DType::kF32), t3 = Tensor::Zeros({3}, DType::kF32);
  Tensor ones = Tensor::FromVector(std::vector<float>{1, 1, 1}, {3});
  Tensor loss = Tensor::Zeros({1}, DType::kF32), lse = Tensor::Zeros({3}, DType::kF32);
  Tensor neg = Tensor::FromVector(std::vector<int32_t>{0, -100, 2}, {3});
  Tensor big = Tensor::FromVector(std::vector<int32_t>{0, 10, 2}, {3});
  auto expect_bad = [](absl::Status s, const std::string& name) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.message().substr(0, name.size() + 1), name + ":") << s.message();
  };
  expect_bad(CrossEntropyFwd(ctx, lg, neg, ones, loss, lse), "targets");
  expect_bad(CrossEntropyFwd(ctx, lg, big, ones, loss, lse), "targets");
  expect_bad(CrossEntropyFwd(ctx, lg, t3, ones, loss, lse), "targets");
  Tensor pad_mask = Tensor::FromVector(std::vector<float>{1, 0, 1}, {3});
  EXPECT_TRUE(CrossEntropyFwd(ctx, lg, neg, pad_mask, loss, lse).ok());  // masked padding is fine
  Tensor tg = Tensor::FromVector(std::vector<int32_t>{0, 1, 2}, {3});
  Tensor t4 = Tensor::Zeros({4}, DType::kF32), dl_bad = Tensor::Zeros({3, 9}, DType::kF32);
  expect_bad(CrossEntropyFwd(ctx, lg, tg, t4, loss, lse), "mask");
  expect_bad(CrossEntropyFwd(ctx, lg, tg, ones, t3, lse), "loss");
  expect_bad(CrossEntropyFwd(ctx, lg, tg, ones, loss, t4), "lse");
  expect_bad(CrossEntropyFwd(ctx, t3, tg, ones, loss, lse), "logits");
  expect_bad(CrossEntropyBwd(ctx, lg, tg, ones, lse, 1.0f, dl_bad), "dlogits");
  expect_bad(CrossEntropyBwd(ctx, lg, big, ones, lse, 1.0f, lg), "targets");
}

}  // namespace
}  // namespace tandem::kernels

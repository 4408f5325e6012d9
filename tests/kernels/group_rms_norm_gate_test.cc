// Grouped RMSNorm + sigmoid gate tests: CPU vs the fp64 reference for groups = 1 and 4 and odd
// group sizes, the reference backward vs finite differences, row and thread-count invariance,
// and bad arguments.
#include "kernels/group_rms_norm_gate/group_rms_norm_gate.h"

#include <vector>

#include "gtest/gtest.h"
#include "kernels/rms_norm/rms_norm.h"
#include "tests/kernels/reference/group_rms_norm_gate_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

struct Case {
  int64_t t, ch, groups;
};

struct Data {
  GroupRmsNormGateParams p;
  std::vector<float> x, gate, w, dy, dw0;
};

Data MakeData(const Case& c, uint64_t seed) {
  Data d;
  d.p.groups = c.groups;
  d.x = RandomVector(c.t * c.ch, seed, -2.0f, 2.0f);
  d.gate = RandomVector(c.t * c.ch, seed + 1, -4.0f, 4.0f);
  d.w = RandomVector(c.ch, seed + 2, 0.5f, 1.5f);
  d.dy = RandomVector(c.t * c.ch, seed + 3);
  d.dw0 = RandomVector(c.ch, seed + 4);
  return d;
}

struct Out {
  Tensor y, rstd, dx, dgate, dw;
};

Out RunFwdBwd(const Context& ctx, const Data& d, int64_t t) {
  const int64_t ch = static_cast<int64_t>(d.w.size());
  Tensor x = Tensor::FromVector(d.x, {t, ch}), gate = Tensor::FromVector(d.gate, {t, ch});
  Tensor w = Tensor::FromVector(d.w, {ch}), dy = Tensor::FromVector(d.dy, {t, ch});
  Out o{Tensor::Empty({t, ch}, DType::kF32), Tensor::Empty({t, d.p.groups}, DType::kF32),
        Tensor::Empty({t, ch}, DType::kF32), Tensor::Empty({t, ch}, DType::kF32),
        Tensor::FromVector(d.dw0, {ch})};
  EXPECT_TRUE(GroupRmsNormGateFwd(ctx, d.p, x, gate, w, o.y, o.rstd).ok());
  EXPECT_TRUE(GroupRmsNormGateBwd(ctx, d.p, x, gate, w, o.rstd, dy, o.dx, o.dgate, o.dw).ok());
  return o;
}

TEST(GroupRmsNormGateTest, MatchesReference) {
  Context ctx = Context::Cpu(1);
  for (const Case& c :
       std::vector<Case>{{1, 8, 1}, {1, 8, 4}, {5, 12, 4}, {7, 33, 1}, {6, 33, 3}, {9, 256, 4}}) {
    Data d = MakeData(c, 10 * c.ch + c.groups);
    Out o = RunFwdBwd(ctx, d, c.t);
    const double eps = d.p.eps;
    auto f = reference::GroupRmsNormGateFwd(ToDouble(d.x), ToDouble(d.gate), ToDouble(d.w), c.t,
                                            c.ch, c.groups, eps);
    auto g = reference::GroupRmsNormGateBwd(ToDouble(d.x), ToDouble(d.gate), ToDouble(d.w),
                                            ToDouble(d.dy), c.t, c.ch, c.groups, eps);
    for (int64_t i = 0; i < c.ch; ++i) g.dw[i] += d.dw0[i];
    Shape shape = {c.t, c.ch};
    std::string where =
        std::to_string(c.t) + "x" + std::to_string(c.ch) + "/" + std::to_string(c.groups);
    EXPECT_TRUE(AllClose(Floats(o.y), f.y, {.atol = 1e-6, .rtol = 4e-6, .shape = shape})) << where;
    EXPECT_TRUE(AllClose(Floats(o.rstd), f.rstd, {.atol = 0, .rtol = 2e-6})) << where;
    EXPECT_TRUE(AllClose(Floats(o.dx), g.dx, {.atol = 2e-6, .rtol = 1e-5, .shape = shape}))
        << where;
    EXPECT_TRUE(AllClose(Floats(o.dgate), g.dgate, {.atol = 1e-6, .rtol = 4e-6, .shape = shape}))
        << where;
    EXPECT_TRUE(AllClose(Floats(o.dw), g.dw, {.atol = 2e-6 * c.t, .rtol = 1e-5})) << where;
  }
}

TEST(GroupRmsNormGateTest, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t t = 2, ch = 6, groups = 2;
  Data d = MakeData({t, ch, groups}, 5);
  auto x = ToDouble(d.x), gate = ToDouble(d.gate), w = ToDouble(d.w), dy = ToDouble(d.dy);
  const double eps = d.p.eps;
  auto g = reference::GroupRmsNormGateBwd(x, gate, w, dy, t, ch, groups, eps);
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& gg,
                  const std::vector<double>& ww) {
    return testing::Dot(reference::GroupRmsNormGateFwd(xx, gg, ww, t, ch, groups, eps).y, dy);
  };
  testing::ExpectGradientMatchesFiniteDifferences(
      g.dx, [&](const auto& v) { return loss(v, gate, w); }, x, 1e-7, "dx");
  testing::ExpectGradientMatchesFiniteDifferences(
      g.dgate, [&](const auto& v) { return loss(x, v, w); }, gate, 1e-7, "dgate");
  testing::ExpectGradientMatchesFiniteDifferences(
      g.dw, [&](const auto& v) { return loss(x, gate, v); }, w, 1e-7, "dw");
}

TEST(GroupRmsNormGateTest, OneGroupUsesRmsNormsRstd) {
  Context ctx = Context::Cpu(2);
  const Case c{5, 40, 1};
  Data d = MakeData(c, 61);
  Out o = RunFwdBwd(ctx, d, c.t);
  Tensor y = Tensor::Empty({c.t, c.ch}, DType::kF32), rstd = Tensor::Empty({c.t}, DType::kF32);
  ASSERT_TRUE(RmsNormFwd(ctx, Tensor::FromVector(d.x, {c.t, c.ch}), Tensor::FromVector(d.w, {c.ch}),
                         d.p.eps, y, rstd)
                  .ok());
  EXPECT_TRUE(BitwiseEqual(Floats(o.rstd), Floats(rstd)));
}

TEST(GroupRmsNormGateTest, RowsAreBatchInvariant) {
  Context ctx = Context::Cpu(2);
  const Case c{8, 48, 4};
  const int64_t row = 6;
  Data all = MakeData(c, 71), one = all;
  auto slice = [&](const std::vector<float>& v) {
    return std::vector<float>(v.begin() + row * c.ch, v.begin() + (row + 1) * c.ch);
  };
  one.x = slice(all.x);
  one.gate = slice(all.gate);
  one.dy = slice(all.dy);
  Out a = RunFwdBwd(ctx, all, c.t), b = RunFwdBwd(ctx, one, 1);
  EXPECT_TRUE(BitwiseEqual(Floats(a.y.Rows(row, row + 1)), Floats(b.y)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dx.Rows(row, row + 1)), Floats(b.dx)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dgate.Rows(row, row + 1)), Floats(b.dgate)));
}

TEST(GroupRmsNormGateTest, ThreadCountDoesNotChangeBits) {
  const Case c{21, 64, 4};
  Data d = MakeData(c, 81);
  Context c1 = Context::Cpu(1), c2 = Context::Cpu(2);
  Out a = RunFwdBwd(c1, d, c.t), b = RunFwdBwd(c2, d, c.t);
  EXPECT_TRUE(BitwiseEqual(Floats(a.y), Floats(b.y), {c.t, c.ch}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.rstd), Floats(b.rstd)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dx), Floats(b.dx), {c.t, c.ch}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dgate), Floats(b.dgate), {c.t, c.ch}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dw), Floats(b.dw)));
}

TEST(GroupRmsNormGateTest, BadInputsNameTheArgument) {
  Context ctx = Context::Cpu(1);
  Tensor x = Tensor::Zeros({3, 12}, DType::kF32), w = Tensor::Zeros({12}, DType::kF32);
  Tensor y = Tensor::Zeros({3, 12}, DType::kF32), rstd = Tensor::Zeros({3, 4}, DType::kF32);
  Tensor bad = Tensor::Zeros({3, 11}, DType::kF32), rstd_bad = Tensor::Zeros({3, 2}, DType::kF32);
  GroupRmsNormGateParams p{.groups = 4}, p5{.groups = 5}, p0{.groups = 0};
  auto expect_bad = [](absl::Status s, const std::string& name) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.message().substr(0, name.size() + 1), name + ":") << s.message();
  };
  expect_bad(GroupRmsNormGateFwd(ctx, p5, x, x, w, y, rstd), "groups");
  expect_bad(GroupRmsNormGateFwd(ctx, p0, x, x, w, y, rstd), "groups");
  expect_bad(GroupRmsNormGateFwd(ctx, p, x, bad, w, y, rstd), "gate");
  expect_bad(GroupRmsNormGateFwd(ctx, p, x, x, y, y, rstd), "w");
  expect_bad(GroupRmsNormGateFwd(ctx, p, x, x, w, bad, rstd), "y");
  expect_bad(GroupRmsNormGateFwd(ctx, p, x, x, w, y, rstd_bad), "rstd");
  Tensor dx = Tensor::Zeros({3, 12}, DType::kF32), dg = Tensor::Zeros({3, 12}, DType::kF32);
  expect_bad(GroupRmsNormGateBwd(ctx, p5, x, x, w, rstd, y, dx, dg, w), "groups");
  expect_bad(GroupRmsNormGateBwd(ctx, p, x, x, w, rstd, bad, dx, dg, w), "dy");
  expect_bad(GroupRmsNormGateBwd(ctx, p, x, x, w, rstd, y, bad, dg, w), "dx");
  expect_bad(GroupRmsNormGateBwd(ctx, p, x, x, w, rstd, y, dx, bad, w), "dgate");
  expect_bad(GroupRmsNormGateBwd(ctx, p, x, x, w, rstd, y, dx, dg, dx), "dw");
}

}  // namespace
}  // namespace tandem::kernels

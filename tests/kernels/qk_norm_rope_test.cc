// QK-norm + partial RoPE tests: CPU vs the fp64 reference over awkward shapes (T = 1, odd D,
// R < D, R = 0), the reference backward vs finite differences, R = 0 as bitwise RmsNorm, head-row
// and thread-count invariance, bad arguments.
#include "kernels/qk_norm_rope/qk_norm_rope.h"

#include <vector>

#include "gtest/gtest.h"
#include "kernels/rms_norm/rms_norm.h"
#include "tests/kernels/reference/qk_norm_rope_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

struct Case {
  int64_t t, h, d, r;
};
const std::vector<Case> kCases = {
    {1, 1, 8, 8}, {5, 3, 12, 4}, {4, 2, 7, 0}, {3, 2, 9, 6}, {9, 4, 128, 64}};

struct Inputs {
  QkNormRopeParams p;
  std::vector<float> x, w, dy;
  std::vector<int32_t> pos;
  Tensor xt, wt, post, dyt;
};

Inputs MakeInputs(const Case& c, uint64_t seed) {
  Inputs in;
  in.p.rotary_dim = c.r;
  in.x = RandomVector(c.t * c.h * c.d, seed, -2.0f, 2.0f);
  in.w = RandomVector(c.d, seed + 1, 0.5f, 1.5f);
  in.dy = RandomVector(c.t * c.h * c.d, seed + 2);
  for (float f : RandomVector(c.t, seed + 3, 0.0f, 5000.0f)) in.pos.push_back(static_cast<int>(f));
  in.pos[0] = c.t > 1 ? 0 : 131071;  // position 0 and a long-context one
  in.xt = Tensor::FromVector(in.x, {c.t, c.h, c.d});
  in.wt = Tensor::FromVector(in.w, {c.d});
  in.post = Tensor::FromVector(in.pos, {c.t});
  in.dyt = Tensor::FromVector(in.dy, {c.t, c.h, c.d});
  return in;
}

reference::QkNormRopeShape RefShape(const Case& c, const QkNormRopeParams& p) {
  return {c.t, c.h, c.d, c.r, p.theta, p.eps};
}

struct Out {
  Tensor y, rstd, dx, dw;
};

Out RunFwdBwd(const Context& ctx, const Inputs& in, const std::vector<float>& dw0) {
  const Tensor& x = in.xt;
  Out o{Tensor::Empty(x.shape(), DType::kF32), Tensor::Empty({x.dim(0), x.dim(1)}, DType::kF32),
        Tensor::Empty(x.shape(), DType::kF32), Tensor::FromVector(dw0, {x.dim(2)})};
  EXPECT_TRUE(QkNormRopeFwd(ctx, in.p, x, in.wt, in.post, o.y, o.rstd).ok());
  EXPECT_TRUE(QkNormRopeBwd(ctx, in.p, x, in.wt, in.post, o.rstd, in.dyt, o.dx, o.dw).ok());
  return o;
}

TEST(QkNormRopeTest, ForwardAndBackwardMatchReference) {
  Context ctx = Context::Cpu(1);
  for (const Case& c : kCases) {
    Inputs in = MakeInputs(c, 7 * c.d + c.r);
    auto dw0 = RandomVector(c.d, 99);
    Out o = RunFwdBwd(ctx, in, dw0);
    auto s = RefShape(c, in.p);
    auto y = reference::QkNormRopeFwd(ToDouble(in.x), ToDouble(in.w), in.pos, s);
    Shape shape = {c.t, c.h, c.d};
    EXPECT_TRUE(AllClose(Floats(o.y), y, {.atol = 1e-6, .rtol = 4e-6, .shape = shape}))
        << c.t << " " << c.h << " " << c.d << " " << c.r;
    auto g = reference::QkNormRopeBwd(ToDouble(in.x), ToDouble(in.w), in.pos, ToDouble(in.dy), s);
    for (int64_t i = 0; i < c.d; ++i) g.dw[i] += dw0[i];
    EXPECT_TRUE(AllClose(Floats(o.dx), g.dx, {.atol = 2e-6, .rtol = 1e-5, .shape = shape}))
        << c.t << " " << c.h << " " << c.d << " " << c.r;
    EXPECT_TRUE(AllClose(Floats(o.dw), g.dw, {.atol = 2e-6 * c.t * c.h, .rtol = 1e-5}))
        << c.t << " " << c.h << " " << c.d << " " << c.r;
  }
}

TEST(QkNormRopeTest, ReferenceBackwardMatchesFiniteDifferences) {
  for (const Case& c : std::vector<Case>{{2, 2, 6, 4}, {2, 1, 5, 2}}) {
    Inputs in = MakeInputs(c, 17);
    auto s = RefShape(c, in.p);
    auto x = ToDouble(in.x), w = ToDouble(in.w), dy = ToDouble(in.dy);
    auto g = reference::QkNormRopeBwd(x, w, in.pos, dy, s);
    auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww) {
      return testing::Dot(reference::QkNormRopeFwd(xx, ww, in.pos, s), dy);
    };
    testing::ExpectGradientMatchesFiniteDifferences(
        g.dx, [&](const auto& v) { return loss(v, w); }, x, 1e-7, "dx");
    testing::ExpectGradientMatchesFiniteDifferences(
        g.dw, [&](const auto& v) { return loss(x, v); }, w, 1e-7, "dw");
  }
}

TEST(QkNormRopeTest, NoRotationIsBitwiseRmsNorm) {
  Context ctx = Context::Cpu(2);
  const Case c{6, 3, 33, 0};
  Inputs in = MakeInputs(c, 23);
  Out o = RunFwdBwd(ctx, in, std::vector<float>(c.d));
  Tensor y = Tensor::Empty({c.t * c.h, c.d}, DType::kF32),
         rstd = Tensor::Empty({c.t * c.h}, DType::kF32);
  ASSERT_TRUE(
      RmsNormFwd(ctx, Tensor::FromVector(in.x, {c.t * c.h, c.d}), in.wt, in.p.eps, y, rstd).ok());
  EXPECT_TRUE(BitwiseEqual(Floats(o.y), Floats(y)));
  EXPECT_TRUE(BitwiseEqual(Floats(o.rstd), Floats(rstd)));
}

TEST(QkNormRopeTest, TokensAreBatchInvariant) {
  Context ctx = Context::Cpu(2);
  const Case c{7, 4, 24, 16};
  const int64_t tok = 5, n = c.h * c.d;
  Inputs all = MakeInputs(c, 31);
  Inputs one = all;  // the same token alone, as a decode step would see it
  one.x.assign(all.x.begin() + tok * n, all.x.begin() + (tok + 1) * n);
  one.dy.assign(all.dy.begin() + tok * n, all.dy.begin() + (tok + 1) * n);
  one.pos = {all.pos[tok]};
  one.xt = Tensor::FromVector(one.x, {1, c.h, c.d});
  one.dyt = Tensor::FromVector(one.dy, {1, c.h, c.d});
  one.post = Tensor::FromVector(one.pos, {1});
  Out a = RunFwdBwd(ctx, all, std::vector<float>(c.d)),
      b = RunFwdBwd(ctx, one, std::vector<float>(c.d));
  EXPECT_TRUE(BitwiseEqual(Floats(a.y.Rows(tok, tok + 1)), Floats(b.y), {1, c.h, c.d}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dx.Rows(tok, tok + 1)), Floats(b.dx), {1, c.h, c.d}));
}

TEST(QkNormRopeTest, ThreadCountDoesNotChangeBits) {
  const Case c{13, 5, 40, 32};
  Inputs in = MakeInputs(c, 41);
  auto dw0 = RandomVector(c.d, 42);
  Context c1 = Context::Cpu(1), c2 = Context::Cpu(2);
  Out a = RunFwdBwd(c1, in, dw0), b = RunFwdBwd(c2, in, dw0);
  EXPECT_TRUE(BitwiseEqual(Floats(a.y), Floats(b.y), {c.t, c.h, c.d}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.rstd), Floats(b.rstd)));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dx), Floats(b.dx), {c.t, c.h, c.d}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dw), Floats(b.dw)));
}

TEST(QkNormRopeTest, BadInputsNameTheArgument) {
  Context ctx = Context::Cpu(1);
  Inputs in = MakeInputs({3, 2, 8, 4}, 51);
  Tensor y = Tensor::Empty({3, 2, 8}, DType::kF32), rstd = Tensor::Empty({3, 2}, DType::kF32);
  auto expect_bad = [&](const QkNormRopeParams& p, const Tensor& x, const Tensor& w,
                        const Tensor& pos, Tensor& yy, Tensor& rr, const std::string& name) {
    absl::Status s = QkNormRopeFwd(ctx, p, x, w, pos, yy, rr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.message().substr(0, name.size() + 1), name + ":") << s.message();
  };
  QkNormRopeParams odd = in.p, big = in.p, neg = in.p, theta = in.p;
  odd.rotary_dim = 3;
  big.rotary_dim = 10;
  neg.rotary_dim = -2;
  theta.theta = 0;
  expect_bad(odd, in.xt, in.wt, in.post, y, rstd, "rotary_dim");
  expect_bad(big, in.xt, in.wt, in.post, y, rstd, "rotary_dim");
  expect_bad(neg, in.xt, in.wt, in.post, y, rstd, "rotary_dim");
  expect_bad(theta, in.xt, in.wt, in.post, y, rstd, "theta");
  Tensor w_bad = Tensor::Zeros({7}, DType::kF32), r_bad = Tensor::Zeros({3, 3}, DType::kF32);
  Tensor y_bad = Tensor::Zeros({3, 2, 9}, DType::kF32), x2 = Tensor::Zeros({3, 16}, DType::kF32);
  Tensor pos_neg = Tensor::FromVector(std::vector<int32_t>{0, -1, 2}, {3});
  Tensor pos_f32 = Tensor::Zeros({3}, DType::kF32);
  expect_bad(in.p, in.xt, w_bad, in.post, y, rstd, "w");
  expect_bad(in.p, in.xt, in.wt, in.post, y, r_bad, "rstd");
  expect_bad(in.p, in.xt, in.wt, in.post, y_bad, rstd, "y");
  expect_bad(in.p, x2, in.wt, in.post, y, rstd, "x");
  expect_bad(in.p, in.xt, in.wt, pos_neg, y, rstd, "positions");
  expect_bad(in.p, in.xt, in.wt, pos_f32, y, rstd, "positions");
  Tensor alias = in.xt;
  expect_bad(in.p, in.xt, in.wt, in.post, alias, rstd, "y");
  Tensor dx = Tensor::Empty({3, 2, 8}, DType::kF32), dw = Tensor::Zeros({8}, DType::kF32);
  absl::Status s = QkNormRopeBwd(ctx, in.p, in.xt, in.wt, in.post, rstd, y_bad, dx, dw);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().substr(0, 3), "dy:") << s.message();
  s = QkNormRopeBwd(ctx, odd, in.xt, in.wt, in.post, rstd, y, dx, dw);
  EXPECT_EQ(s.message().substr(0, 11), "rotary_dim:") << s.message();
}

}  // namespace
}  // namespace tandem::kernels

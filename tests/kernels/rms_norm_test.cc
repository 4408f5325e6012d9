// RMSNorm tests: CPU vs the fp64 reference, the reference backward vs finite differences, the
// fused residual-add form vs the plain one (bitwise), row and thread-count invariance, bad inputs.
#include "kernels/rms_norm/rms_norm.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/reference/rms_norm_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

constexpr float kEps = 1e-6f;

struct Fwd {
  Tensor y, rstd;
};

Fwd RunFwd(const Context& ctx, const Tensor& x, const Tensor& w) {
  Fwd f{Tensor::Empty(x.shape(), DType::kF32), Tensor::Empty({x.dim(0)}, DType::kF32)};
  EXPECT_TRUE(RmsNormFwd(ctx, x, w, kEps, f.y, f.rstd).ok());
  return f;
}

struct Bwd {
  Tensor dx, dw;
};

// dw starts from `dw0` to exercise the += contract.
Bwd RunBwd(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
           const std::vector<float>& dw0) {
  Fwd f = RunFwd(ctx, x, w);
  Bwd b{Tensor::Empty(x.shape(), DType::kF32), Tensor::FromVector(dw0, {x.dim(1)})};
  EXPECT_TRUE(RmsNormBwd(ctx, x, w, f.rstd, dy, b.dx, b.dw).ok());
  return b;
}

TEST(RmsNormTest, ForwardMatchesReference) {
  Context ctx = Context::Cpu(1);
  // The 4x16 case has mean(x²) ~ 1e-6, where eps matters as much as the data.
  for (auto [t, d] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 7}, {5, 33}, {17, 256}, {4, 16}}) {
    float scale = d == 16 ? 2e-3f : 2.0f;
    auto xv = RandomVector(t * d, 1 + t, -scale, scale);
    auto wv = RandomVector(d, 2 + d, 0.5f, 1.5f);
    Tensor x = Tensor::FromVector(xv, {t, d}), w = Tensor::FromVector(wv, {d});
    Fwd f = RunFwd(ctx, x, w);
    auto ref = reference::RmsNormFwd(ToDouble(xv), ToDouble(wv), t, d, kEps);
    EXPECT_TRUE(AllClose(Floats(f.y), ref.y, {.atol = 1e-6, .rtol = 2e-6, .shape = {t, d}}))
        << t << "x" << d;
    EXPECT_TRUE(AllClose(Floats(f.rstd), ref.rstd, {.atol = 0, .rtol = 2e-6})) << t << "x" << d;
  }
}

TEST(RmsNormTest, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t t = 3, d = 5;
  auto x = ToDouble(RandomVector(t * d, 11));
  auto w = ToDouble(RandomVector(d, 12, 0.5f, 1.5f));
  auto dy = ToDouble(RandomVector(t * d, 13));
  auto g = reference::RmsNormBwd(x, w, dy, t, d, kEps);
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww) {
    return testing::Dot(reference::RmsNormFwd(xx, ww, t, d, kEps).y, dy);
  };
  testing::ExpectGradientMatchesFiniteDifferences(
      g.dx, [&](const auto& v) { return loss(v, w); }, x, 1e-7, "dx");
  testing::ExpectGradientMatchesFiniteDifferences(
      g.dw, [&](const auto& v) { return loss(x, v); }, w, 1e-7, "dw");
}

TEST(RmsNormTest, BackwardMatchesReference) {
  Context ctx = Context::Cpu(1);
  // No D = 1: there dx = dn·rstd·eps/(x² + eps) is pure cancellation, not a useful comparison.
  for (auto [t, d] : std::vector<std::pair<int64_t, int64_t>>{{1, 3}, {1, 9}, {6, 33}, {19, 128}}) {
    auto xv = RandomVector(t * d, 21 + t, -2.0f, 2.0f);
    auto wv = RandomVector(d, 22, 0.5f, 1.5f);
    auto dyv = RandomVector(t * d, 23);
    auto dw0 = RandomVector(d, 24);
    Bwd b = RunBwd(ctx, Tensor::FromVector(xv, {t, d}), Tensor::FromVector(wv, {d}),
                   Tensor::FromVector(dyv, {t, d}), dw0);
    auto ref = reference::RmsNormBwd(ToDouble(xv), ToDouble(wv), ToDouble(dyv), t, d, kEps);
    for (int64_t i = 0; i < d; ++i) ref.dw[i] += dw0[i];
    EXPECT_TRUE(AllClose(Floats(b.dx), ref.dx, {.atol = 2e-6, .rtol = 1e-5, .shape = {t, d}}))
        << t << "x" << d;
    EXPECT_TRUE(AllClose(Floats(b.dw), ref.dw, {.atol = 2e-6 * t, .rtol = 1e-5})) << t << "x" << d;
  }
}

TEST(RmsNormTest, AddRmsNormIsBitwiseRmsNormOfTheSum) {
  Context ctx = Context::Cpu(2);
  const int64_t t = 13, d = 47;
  auto xv = RandomVector(t * d, 31, -3.0f, 3.0f);
  auto dv = RandomVector(t * d, 32);
  Tensor x = Tensor::FromVector(xv, {t, d}), delta = Tensor::FromVector(dv, {t, d});
  Tensor w = Tensor::FromVector(RandomVector(d, 33), {d});
  Tensor sum = Tensor::Empty({t, d}, DType::kF32), y = Tensor::Empty({t, d}, DType::kF32);
  Tensor rstd = Tensor::Empty({t}, DType::kF32);
  ASSERT_TRUE(AddRmsNormFwd(ctx, x, delta, w, kEps, sum, y, rstd).ok());
  std::vector<float> expect_sum(t * d);
  for (int64_t i = 0; i < t * d; ++i) expect_sum[i] = xv[i] + dv[i];
  EXPECT_TRUE(BitwiseEqual(Floats(sum), expect_sum, {t, d}));
  Fwd plain = RunFwd(ctx, Tensor::FromVector(expect_sum, {t, d}), w);
  EXPECT_TRUE(BitwiseEqual(Floats(y), Floats(plain.y), {t, d}));
  EXPECT_TRUE(BitwiseEqual(Floats(rstd), Floats(plain.rstd)));
  // In place: sum aliases x (the residual stream is updated where it lives).
  Tensor y2 = Tensor::Empty({t, d}, DType::kF32);
  ASSERT_TRUE(AddRmsNormFwd(ctx, x, delta, w, kEps, x, y2, rstd).ok());
  EXPECT_TRUE(BitwiseEqual(Floats(x), expect_sum, {t, d}));
  EXPECT_TRUE(BitwiseEqual(Floats(y2), Floats(plain.y), {t, d}));
}

TEST(RmsNormTest, RowsAreBatchInvariant) {
  Context ctx = Context::Cpu(2);
  const int64_t t = 9, d = 61, row = 4;
  auto xv = RandomVector(t * d, 41, -2.0f, 2.0f);
  auto dyv = RandomVector(t * d, 42);
  Tensor w = Tensor::FromVector(RandomVector(d, 43), {d});
  Tensor x = Tensor::FromVector(xv, {t, d}), dy = Tensor::FromVector(dyv, {t, d});
  std::vector<float> x1(xv.begin() + row * d, xv.begin() + (row + 1) * d);
  std::vector<float> dy1(dyv.begin() + row * d, dyv.begin() + (row + 1) * d);
  Tensor xa = Tensor::FromVector(x1, {1, d}), dya = Tensor::FromVector(dy1, {1, d});
  Fwd all = RunFwd(ctx, x, w), alone = RunFwd(ctx, xa, w);
  EXPECT_TRUE(BitwiseEqual(Floats(all.y.Rows(row, row + 1)), Floats(alone.y)));
  Bwd ball = RunBwd(ctx, x, w, dy, std::vector<float>(d)), balone = RunBwd(ctx, xa, w, dya, {});
  EXPECT_TRUE(BitwiseEqual(Floats(ball.dx.Rows(row, row + 1)), Floats(balone.dx)));
}

TEST(RmsNormTest, ThreadCountDoesNotChangeBits) {
  const int64_t t = 37, d = 70;
  Tensor x = Tensor::FromVector(RandomVector(t * d, 51, -2.0f, 2.0f), {t, d});
  Tensor w = Tensor::FromVector(RandomVector(d, 52), {d});
  Tensor dy = Tensor::FromVector(RandomVector(t * d, 53), {t, d});
  auto dw0 = RandomVector(d, 54);
  Context c1 = Context::Cpu(1), c2 = Context::Cpu(2);
  Fwd f1 = RunFwd(c1, x, w), f2 = RunFwd(c2, x, w);
  EXPECT_TRUE(BitwiseEqual(Floats(f1.y), Floats(f2.y), {t, d}));
  EXPECT_TRUE(BitwiseEqual(Floats(f1.rstd), Floats(f2.rstd)));
  Bwd b1 = RunBwd(c1, x, w, dy, dw0), b2 = RunBwd(c2, x, w, dy, dw0);
  EXPECT_TRUE(BitwiseEqual(Floats(b1.dx), Floats(b2.dx), {t, d}));
  EXPECT_TRUE(BitwiseEqual(Floats(b1.dw), Floats(b2.dw)));
  // Accumulating dw over two calls (rows split) gives the bits of one call over all rows.
  Fwd f = RunFwd(c2, x, w);
  Tensor dx = Tensor::Empty({t, d}, DType::kF32), dw = Tensor::FromVector(dw0, {d});
  for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 20}, {20, t}}) {
    Tensor dxr = dx.Rows(r0, r1);
    ASSERT_TRUE(
        RmsNormBwd(c2, x.Rows(r0, r1), w, f.rstd.Rows(r0, r1), dy.Rows(r0, r1), dxr, dw).ok());
  }
  EXPECT_TRUE(BitwiseEqual(Floats(dw), Floats(b1.dw)));
}

TEST(RmsNormTest, BadInputsNameTheArgument) {
  Context ctx = Context::Cpu(1);
  Tensor x = Tensor::Zeros({4, 8}, DType::kF32), w = Tensor::Zeros({8}, DType::kF32);
  Tensor y = Tensor::Zeros({4, 8}, DType::kF32), rstd = Tensor::Zeros({4}, DType::kF32);
  Tensor w_bad = Tensor::Zeros({7}, DType::kF32), y_bad = Tensor::Zeros({4, 9}, DType::kF32);
  Tensor r_bad = Tensor::Zeros({3}, DType::kF32), x_i32 = Tensor::Zeros({4, 8}, DType::kI32);
  auto expect_bad = [](absl::Status s, const std::string& name) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.message().substr(0, name.size() + 1), name + ":") << s.message();
  };
  expect_bad(RmsNormFwd(ctx, x, w_bad, kEps, y, rstd), "w");
  expect_bad(RmsNormFwd(ctx, x, w, kEps, y_bad, rstd), "y");
  expect_bad(RmsNormFwd(ctx, x, w, kEps, y, r_bad), "rstd");
  expect_bad(RmsNormFwd(ctx, x_i32, w, kEps, y, rstd), "x");
  expect_bad(RmsNormFwd(ctx, x, w, -1.0f, y, rstd), "eps");
  expect_bad(AddRmsNormFwd(ctx, x, y_bad, w, kEps, y, y, rstd), "delta");
  expect_bad(AddRmsNormFwd(ctx, x, x, w, kEps, y_bad, y, rstd), "sum");
  Tensor dx = Tensor::Zeros({4, 8}, DType::kF32);
  expect_bad(RmsNormBwd(ctx, x, w, rstd, y_bad, dx, w), "dy");
  expect_bad(RmsNormBwd(ctx, x, w, rstd, y, y_bad, w), "dx");
  expect_bad(RmsNormBwd(ctx, x, w, rstd, y, dx, w_bad), "dw");
  expect_bad(RmsNormBwd(ctx, x, w, r_bad, y, dx, w), "rstd");
}

}  // namespace
}  // namespace tandem::kernels

// SwiGLU tests: CPU vs the fp64 reference (including large |g|), the reference gradient vs
// finite differences, forward/backward silu agreement, raw-pointer vs Tensor form and thread-count
// invariance (bitwise), and bad shapes.
#include "kernels/swiglu/swiglu.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/reference/swiglu_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

struct Out {
  Tensor h, dgate, dup;
};

Out RunFwdBwd(const Context& ctx, const std::vector<float>& g, const std::vector<float>& u,
              const std::vector<float>& dh, int64_t t, int64_t n) {
  Tensor gt = Tensor::FromVector(g, {t, n}), ut = Tensor::FromVector(u, {t, n});
  Out o{Tensor::Empty({t, n}, DType::kF32), Tensor::Empty({t, n}, DType::kF32),
        Tensor::Empty({t, n}, DType::kF32)};
  EXPECT_TRUE(SwigluFwd(ctx, gt, ut, o.h).ok());
  EXPECT_TRUE(SwigluBwd(ctx, gt, ut, Tensor::FromVector(dh, {t, n}), o.dgate, o.dup).ok());
  return o;
}

TEST(SwigluTest, MatchesReference) {
  Context ctx = Context::Cpu(1);
  for (auto [t, n] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 7}, {5, 33}, {16, 512}}) {
    auto g = RandomVector(t * n, t + n, -8.0f, 8.0f);
    g[0] = t == 16 ? -100.0f : g[0];  // exp(−g) overflows to inf: silu → −0, no NaN
    auto u = RandomVector(t * n, 2 * n, -2.0f, 2.0f);
    auto dh = RandomVector(t * n, 3 * n);
    Out o = RunFwdBwd(ctx, g, u, dh, t, n);
    auto gd = ToDouble(g), ud = ToDouble(u);
    auto ref = reference::SwigluBwd(gd, ud, ToDouble(dh));
    Shape shape = {t, n};
    EXPECT_TRUE(AllClose(Floats(o.h), reference::SwigluFwd(gd, ud),
                         {.atol = 1e-7, .rtol = 2e-6, .shape = shape}));
    EXPECT_TRUE(AllClose(Floats(o.dup), ref.dup, {.atol = 1e-7, .rtol = 2e-6, .shape = shape}));
    EXPECT_TRUE(AllClose(Floats(o.dgate), ref.dgate, {.atol = 1e-6, .rtol = 4e-6, .shape = shape}));
  }
}

TEST(SwigluTest, ReferenceBackwardMatchesFiniteDifferences) {
  auto g = ToDouble(RandomVector(12, 5, -5.0f, 5.0f)), u = ToDouble(RandomVector(12, 6));
  auto dh = ToDouble(RandomVector(12, 7));
  auto ref = reference::SwigluBwd(g, u, dh);
  auto loss = [&](const std::vector<double>& gg, const std::vector<double>& uu) {
    return testing::Dot(reference::SwigluFwd(gg, uu), dh);
  };
  testing::ExpectGradientMatchesFiniteDifferences(
      ref.dgate, [&](const auto& v) { return loss(v, u); }, g, 1e-8, "dgate");
  testing::ExpectGradientMatchesFiniteDifferences(
      ref.dup, [&](const auto& v) { return loss(g, v); }, u, 1e-8, "dup");
}

TEST(SwigluTest, BackwardSiluHasTheForwardsBits) {
  Context ctx = Context::Cpu(1);
  const int64_t n = 301;
  auto g = RandomVector(n, 9, -10.0f, 10.0f);
  std::vector<float> ones(n, 1.0f);
  Out o = RunFwdBwd(ctx, g, ones, ones, 1, n);  // h = silu(g), dup = 1 · silu(g)
  EXPECT_TRUE(BitwiseEqual(Floats(o.h), Floats(o.dup)));
}

TEST(SwigluTest, RawFormAndThreadsGiveTheSameBits) {
  const int64_t t = 19, n = 77;
  auto g = RandomVector(t * n, 11, -6.0f, 6.0f), u = RandomVector(t * n, 12);
  auto dh = RandomVector(t * n, 13);
  Context c1 = Context::Cpu(1), c2 = Context::Cpu(2);
  Out a = RunFwdBwd(c1, g, u, dh, t, n), b = RunFwdBwd(c2, g, u, dh, t, n);
  EXPECT_TRUE(BitwiseEqual(Floats(a.h), Floats(b.h), {t, n}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dgate), Floats(b.dgate), {t, n}));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dup), Floats(b.dup), {t, n}));
  // The MoE expert loop calls the raw form on row ranges; one row alone gives the same bits.
  const int64_t row = 13;
  std::vector<float> h(n), dg(n), du(n);
  cpu::SwigluFwd(n, &g[row * n], &u[row * n], h.data());
  cpu::SwigluBwd(n, &g[row * n], &u[row * n], &dh[row * n], dg.data(), du.data());
  EXPECT_TRUE(BitwiseEqual(Floats(a.h.Rows(row, row + 1)), h));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dgate.Rows(row, row + 1)), dg));
  EXPECT_TRUE(BitwiseEqual(Floats(a.dup.Rows(row, row + 1)), du));
}

TEST(SwigluTest, BadInputsNameTheArgument) {
  Context ctx = Context::Cpu(1);
  Tensor g = Tensor::Zeros({3, 8}, DType::kF32), bad = Tensor::Zeros({3, 7}, DType::kF32);
  Tensor h = Tensor::Zeros({3, 8}, DType::kF32), d = Tensor::Zeros({3, 8}, DType::kF32);
  Tensor g1 = Tensor::Zeros({24}, DType::kF32);
  auto expect_bad = [](absl::Status s, const std::string& name) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.message().substr(0, name.size() + 1), name + ":") << s.message();
  };
  expect_bad(SwigluFwd(ctx, g1, g, h), "gate");
  expect_bad(SwigluFwd(ctx, g, bad, h), "up");
  expect_bad(SwigluFwd(ctx, g, g, bad), "h");
  expect_bad(SwigluBwd(ctx, g, g, bad, h, d), "dh");
  expect_bad(SwigluBwd(ctx, g, g, g, bad, d), "dgate");
  expect_bad(SwigluBwd(ctx, g, g, g, h, bad), "dup");
}

}  // namespace
}  // namespace tandem::kernels

// AdamW against a plain fp64 implementation, and thread-count invariance.
#include "kernels/adamw/adamw.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;

struct Ref {
  std::vector<double> p, m, v;
};

void RefStep(const AdamWParams& a, Ref& r, const std::vector<float>& g) {
  for (size_t i = 0; i < r.p.size(); ++i) {
    r.m[i] = a.beta1 * r.m[i] + (1 - a.beta1) * g[i];
    r.v[i] = a.beta2 * r.v[i] + (1 - a.beta2) * g[i] * g[i];
    double mh = r.m[i] / (1 - std::pow(a.beta1, a.step));
    double vh = r.v[i] / (1 - std::pow(a.beta2, a.step));
    r.p[i] -= a.lr * (mh / (std::sqrt(vh) + a.eps) + a.weight_decay * r.p[i]);
  }
}

TEST(AdamWTest, MatchesReferenceOverSteps) {
  const int n = 1001;
  Context ctx = Context::Cpu(2);
  Tensor p = Tensor::FromVector(RandomVector(n, 1), {n});
  Tensor m = Tensor::Zeros({n}, DType::kF32), v = Tensor::Zeros({n}, DType::kF32);
  Ref ref{std::vector<double>(Floats(p).begin(), Floats(p).end()), std::vector<double>(n, 0.0),
          std::vector<double>(n, 0.0)};
  AdamWParams a{.lr = 1e-2f, .weight_decay = 0.1f};
  for (int step = 1; step <= 5; ++step) {
    a.step = step;
    std::vector<float> g = RandomVector(n, 100 + step);
    ASSERT_TRUE(AdamWStep(ctx, a, p, Tensor::FromVector(g, {n}), m, v).ok());
    RefStep(a, ref, g);
  }
  EXPECT_TRUE(AllClose(Floats(p), ref.p, {.atol = 1e-6, .rtol = 1e-5}));
}

TEST(AdamWTest, ThreadCountDoesNotChangeBits) {
  const int n = 50000;
  std::vector<float> init = RandomVector(n, 3), g = RandomVector(n, 4);
  auto run = [&](int threads) {
    Context ctx = Context::Cpu(threads);
    Tensor p = Tensor::FromVector(init, {n});
    Tensor m = Tensor::Zeros({n}, DType::kF32), v = Tensor::Zeros({n}, DType::kF32);
    EXPECT_TRUE(AdamWStep(ctx, {.weight_decay = 0.01f}, p, Tensor::FromVector(g, {n}), m, v).ok());
    return p;
  };
  Tensor a = run(1), b = run(2);
  EXPECT_TRUE(BitwiseEqual(Floats(a), Floats(b)));
}

TEST(AdamWTest, RejectsBadInput) {
  Context ctx = Context::Cpu(1);
  Tensor p = Tensor::Zeros({4}, DType::kF32), m = Tensor::Zeros({4}, DType::kF32);
  Tensor v = Tensor::Zeros({4}, DType::kF32), g = Tensor::Zeros({5}, DType::kF32);
  EXPECT_EQ(AdamWStep(ctx, {}, p, g, m, v).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(AdamWStep(ctx, {.step = 0}, p, m, m, v).ok());
}

}  // namespace
}  // namespace tandem::kernels

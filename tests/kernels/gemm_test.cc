// Tests for the CPU GEMM (kernels/gemm): each layout against the fp64 reference on awkward shapes,
// accumulate mode, the numerics contract bitwise (a row's bits do not depend on M, on its position
// among other rows, or on the thread count; the scalar and AVX2 paths agree), and bad shapes.
#include "kernels/gemm/gemm.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/cpu_features.h"
#include "kernels/gemm/gemm_internal.h"
#include "tests/kernels/reference/gemm_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using cpu::internal::GemmArgs;
using cpu::internal::GemmLayout;
using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomVector;

constexpr GemmLayout kLayouts[] = {GemmLayout::kNT, GemmLayout::kNN, GemmLayout::kTN};

std::string Name(GemmLayout layout) {
  return layout == GemmLayout::kNT ? "NT" : layout == GemmLayout::kNN ? "NN" : "TN";
}

// One problem: dense row-major operands in the layout's shapes, and an initial c.
struct Problem {
  GemmLayout layout;
  int64_t m, n, k;
  std::vector<float> a, b,
      c;  // a: [M, K] ([K, M] for TN); b: [N, K] for NT, else [K, N]; c: [M, N]

  Shape AShape() const { return layout == GemmLayout::kTN ? Shape{k, m} : Shape{m, k}; }
  Shape BShape() const { return layout == GemmLayout::kNT ? Shape{n, k} : Shape{k, n}; }
  int64_t Lda() const { return layout == GemmLayout::kTN ? m : k; }
  int64_t Ldb() const { return layout == GemmLayout::kNT ? k : n; }
  GemmArgs Args(std::vector<float>& out, bool accumulate) const {
    return {layout, m, n, k, a.data(), Lda(), b.data(), Ldb(), out.data(), n, accumulate};
  }
};

Problem MakeProblem(GemmLayout layout, int64_t m, int64_t n, int64_t k, uint64_t seed) {
  return {layout,
          m,
          n,
          k,
          RandomVector(m * k, seed),
          RandomVector(n * k, seed + 1),
          RandomVector(m * n, seed + 2)};
}

// Runs the Tensor-level function for the problem's layout; returns the new c.
std::vector<float> RunTensorGemm(const Context& ctx, const Problem& p, bool accumulate) {
  Tensor a = Tensor::FromVector(p.a, p.AShape());  // [M, K] or [K, M]
  Tensor b = Tensor::FromVector(p.b, p.BShape());  // [N, K] or [K, N]
  Tensor c = Tensor::FromVector(p.c, {p.m, p.n});  // [M, N]
  absl::Status s = p.layout == GemmLayout::kNT   ? GemmNT(ctx, a, b, c, accumulate)
                   : p.layout == GemmLayout::kNN ? GemmNN(ctx, a, b, c, accumulate)
                                                 : GemmTN(ctx, a, b, c, accumulate);
  EXPECT_TRUE(s.ok()) << s;
  return std::vector<float>(c.data<float>(), c.data<float>() + c.numel());
}

std::vector<double> Reference(const Problem& p, bool accumulate) {
  return reference::Gemm(p.m, p.n, p.k, p.a, p.layout == GemmLayout::kTN, p.b,
                         p.layout == GemmLayout::kNT, p.c, accumulate);
}

// Inputs lie in [-1, 1], so a k-term fp32 FMA chain has partial sums of size ~sqrt(k) and errs by
// far less than 4·k·2^-24; a wrong index or a dropped term errs by ~0.1 or more.
testing::CompareOptions Tolerance(const Problem& p) {
  testing::CompareOptions o;
  o.atol = 4.0 * static_cast<double>(std::max<int64_t>(p.k, 1)) * std::ldexp(1.0, -24);
  o.shape = {p.m, p.n};
  return o;
}

struct Dims {
  int64_t m, n, k;
};

std::string Name(GemmLayout layout, const Dims& d) {
  return Name(layout) + " m=" + std::to_string(d.m) + " n=" + std::to_string(d.n) +
         " k=" + std::to_string(d.k);
}

// Edges of every blocking: M vs the 6-row micro-tile and 144-row block, N vs the 16-column tile and
// 512-column block, K vs the 256-deep k-block (K = 257 and 513 park partial sums in c).
constexpr Dims kShapes[] = {{1, 1, 1},     {1, 33, 70},    {7, 17, 1},    {13, 50, 300},
                            {37, 70, 513}, {64, 130, 257}, {5, 1030, 40}, {150, 20, 30}};

TEST(GemmTest, MatchesReferenceInEveryLayout) {
  const Context ctx = Context::Cpu(2);
  uint64_t seed = 1;
  for (GemmLayout layout : kLayouts) {
    for (const Dims& d : kShapes) {
      const Problem p = MakeProblem(layout, d.m, d.n, d.k, seed += 3);
      SCOPED_TRACE(Name(layout, d));
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(accumulate ? "accumulate" : "overwrite");
        EXPECT_TRUE(
            AllClose(RunTensorGemm(ctx, p, accumulate), Reference(p, accumulate), Tolerance(p)));
      }
    }
  }
}

TEST(GemmTest, RawPointersWithLeadingDimensions) {
  // Sub-matrices of wider buffers, as a caller working on one expert's rows would pass them.
  const Context ctx = Context::Cpu(1);
  const int64_t m = 9, n = 21, k = 270, pad = 5;
  const Problem p = MakeProblem(GemmLayout::kNT, m, n, k, 77);
  std::vector<float> a(m * (k + pad)), b(n * (k + pad)), c(m * (n + pad), 7.0f);
  for (int64_t i = 0; i < m; ++i) std::copy_n(&p.a[i * k], k, &a[i * (k + pad)]);
  for (int64_t j = 0; j < n; ++j) std::copy_n(&p.b[j * k], k, &b[j * (k + pad)]);
  cpu::GemmNT(ctx, m, n, k, a.data(), k + pad, b.data(), k + pad, c.data(), n + pad, false);
  std::vector<float> got(m * n);
  for (int64_t i = 0; i < m; ++i) {
    std::copy_n(&c[i * (n + pad)], n, &got[i * n]);
    for (int64_t j = n; j < n + pad; ++j) EXPECT_EQ(c[i * (n + pad) + j], 7.0f);  // untouched
  }
  EXPECT_TRUE(AllClose(got, Reference(p, false), Tolerance(p)));
}

TEST(GemmTest, EmptyDimensions) {
  const Context ctx = Context::Cpu(2);
  for (GemmLayout layout : kLayouts) {
    SCOPED_TRACE(Name(layout));
    EXPECT_TRUE(RunTensorGemm(ctx, MakeProblem(layout, 0, 8, 5, 3), false).empty());  // M = 0
    EXPECT_TRUE(RunTensorGemm(ctx, MakeProblem(layout, 4, 0, 5, 3), false).empty());  // N = 0
    const Problem p = MakeProblem(layout, 3, 4, 0, 3);  // K = 0: an empty sum is 0
    EXPECT_EQ(RunTensorGemm(ctx, p, false), std::vector<float>(12, 0.0f));
    EXPECT_EQ(RunTensorGemm(ctx, p, true), p.c);
  }
}

// Row `row` of a GEMM whose A has `m` rows: the probe row of A at position `pos`, random rows
// elsewhere (for TN the probe is column `pos` of A [K, M]).
std::vector<float> ProbeRow(const Context& ctx, GemmLayout layout, const std::vector<float>& probe,
                            const std::vector<float>& b, int64_t m, int64_t n, int64_t k,
                            int64_t pos) {
  Problem p = MakeProblem(layout, m, n, k, 1000 + m);
  p.b = b;
  for (int64_t q = 0; q < k; ++q) {
    (layout == GemmLayout::kTN ? p.a[q * m + pos] : p.a[pos * k + q]) = probe[q];
  }
  const std::vector<float> c = RunTensorGemm(ctx, p, false);
  return std::vector<float>(c.begin() + pos * n, c.begin() + (pos + 1) * n);
}

TEST(GemmTest, RowIsBitwiseIndependentOfBatchAndThreads) {
  const Context one = Context::Cpu(1), two = Context::Cpu(2);
  const int64_t n = 600, k = 300;  // two k-blocks; N spans two column blocks
  const std::vector<float> probe = RandomVector(k, 5), b = RandomVector(n * k, 6);
  for (GemmLayout layout : kLayouts) {
    SCOPED_TRACE(Name(layout));
    const std::vector<float> alone = ProbeRow(one, layout, probe, b, 1, n, k, 0);
    // Position 36 of 37 is a one-row edge tile; 301 of 512 sits mid-tile in the third row block.
    EXPECT_TRUE(BitwiseEqual(alone, ProbeRow(one, layout, probe, b, 37, n, k, 36)));
    EXPECT_TRUE(BitwiseEqual(alone, ProbeRow(one, layout, probe, b, 37, n, k, 3)));
    EXPECT_TRUE(BitwiseEqual(alone, ProbeRow(one, layout, probe, b, 512, n, k, 301)));
    EXPECT_TRUE(BitwiseEqual(alone, ProbeRow(two, layout, probe, b, 512, n, k, 301)));
    EXPECT_TRUE(BitwiseEqual(alone, ProbeRow(two, layout, probe, b, 1, n, k, 0)));
    // Whole matrices for 1 vs 2 threads (the two thread counts cut the tasks differently).
    const Problem p = MakeProblem(layout, 97, n, k, 8);
    for (bool accumulate : {false, true}) {
      EXPECT_TRUE(BitwiseEqual(RunTensorGemm(one, p, accumulate), RunTensorGemm(two, p, accumulate),
                               {p.m, p.n}));
    }
  }
}

TEST(GemmTest, ScalarAndAvx2PathsAgreeBitwise) {
  if (!CpuHasAvx2Fma()) GTEST_SKIP() << "no AVX2/FMA on this CPU";
  const Context ctx = Context::Cpu(2);
  uint64_t seed = 500;
  for (GemmLayout layout : kLayouts) {
    for (const Dims& d : kShapes) {
      const Problem p = MakeProblem(layout, d.m, d.n, d.k, seed += 3);
      SCOPED_TRACE(Name(layout, d));
      for (bool accumulate : {false, true}) {
        std::vector<float> scalar = p.c, avx2 = p.c;
        cpu::internal::GemmScalar(ctx, p.Args(scalar, accumulate));
        cpu::internal::GemmAvx2(ctx, p.Args(avx2, accumulate));
        EXPECT_TRUE(BitwiseEqual(scalar, avx2, {p.m, p.n}));
      }
    }
  }
}

TEST(GemmTest, ScalarPathMatchesReference) {
  const Context ctx = Context::Cpu(1);
  for (GemmLayout layout : kLayouts) {
    SCOPED_TRACE(Name(layout));
    const Problem p = MakeProblem(layout, 11, 19, 260, 900);
    std::vector<float> out = p.c;
    cpu::internal::GemmScalar(ctx, p.Args(out, true));
    EXPECT_TRUE(AllClose(out, Reference(p, true), Tolerance(p)));
  }
}

TEST(GemmTest, BadShapesAreInvalidArgument) {
  const Context ctx = Context::Cpu(1);
  Tensor a = Tensor::Zeros({4, 8}, DType::kF32);      // [M, K]
  Tensor c = Tensor::Zeros({4, 6}, DType::kF32);      // [M, N]
  Tensor b_nt = Tensor::Zeros({6, 8}, DType::kF32);   // [N, K]
  Tensor b_nn = Tensor::Zeros({8, 6}, DType::kF32);   // [K, N]
  Tensor b_bad = Tensor::Zeros({6, 9}, DType::kF32);  // K mismatch
  Tensor vec = Tensor::Zeros({8}, DType::kF32);       // rank 1
  Tensor bf16 = Tensor::Zeros({4, 8}, DType::kBF16);  // wrong dtype
  Tensor c_bad = Tensor::Zeros({4, 7}, DType::kF32);  // N mismatch
  ASSERT_TRUE(GemmNT(ctx, a, b_nt, c).ok());
  ASSERT_TRUE(GemmNN(ctx, a, b_nn, c).ok());
  const auto expect_invalid = [](const absl::Status& s, const std::string& arg) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(std::string(s.message()).rfind(arg + ":", 0), 0u) << s;
  };
  expect_invalid(GemmNT(ctx, a, b_bad, c), "b");
  expect_invalid(GemmNT(ctx, a, vec, c), "b");
  expect_invalid(GemmNT(ctx, vec, b_nt, c), "a");
  expect_invalid(GemmNT(ctx, bf16, b_nt, c), "a");
  expect_invalid(GemmNT(ctx, a, b_nt, c_bad), "c");
  expect_invalid(GemmNN(ctx, a, b_nt, c), "b");
  expect_invalid(GemmNN(ctx, a, b_nn, c_bad), "c");
  Tensor a_t = Tensor::Zeros({8, 4}, DType::kF32);  // [K, M]
  ASSERT_TRUE(GemmTN(ctx, a_t, b_nn, c).ok());
  expect_invalid(GemmTN(ctx, a, b_nn, c), "b");
  expect_invalid(GemmTN(ctx, a_t, b_nt, c), "b");
  expect_invalid(GemmTN(ctx, a_t, b_nn, c_bad), "c");
}

}  // namespace
}  // namespace tandem::kernels

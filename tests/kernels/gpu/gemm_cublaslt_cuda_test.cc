// Tests for cuda::GemmNTPinned (cuBLASLt with one pinned algorithm per weight shape): agreement
// with an fp64 reference and the CPU GEMM, the batch-invariance promise of contract rule 1 (a row's
// bits do not depend on M or on its position in the batch), which shapes fall back to our kernel,
// and that the fallback is per shape, never per M.
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gemm/gemm_cuda.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::RoundedToBf16;
using testing::ToDevice;
using testing::ToHostFloats;

cuda::GemmNTArgs Args(const Tensor& a, const Tensor& b, Tensor& c) {
  cuda::GemmNTArgs g;
  g.m = a.dim(0), g.n = b.dim(0), g.k = b.dim(1);
  g.a = a.raw_data(), g.a_dtype = a.dtype(), g.lda = g.k;
  g.b = b.raw_data(), g.b_dtype = b.dtype(), g.ldb = g.k;
  g.c = c.raw_data(), g.c_dtype = c.dtype(), g.ldc = g.n;
  return g;
}

// fp64 reference of a·bᵀ and the bound 2·K·2⁻²⁴·max Σ|a·b| (exact bf16 products, fp32 sums).
std::vector<double> Reference(const std::vector<float>& a, const std::vector<float>& b, int64_t m,
                              int64_t n, int64_t k, double* tol) {
  std::vector<double> c(m * n);
  double max_abs = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0, abs_sum = 0.0;
      for (int64_t q = 0; q < k; ++q) {
        s += double{a[i * k + q]} * b[j * k + q];
        abs_sum += std::fabs(double{a[i * k + q]} * b[j * k + q]);
      }
      c[i * n + j] = s;
      max_abs = std::max(max_abs, abs_sum);
    }
  }
  *tol = 2.0 * k * std::ldexp(1.0, -24) * max_abs;
  return c;
}

TEST(GemmCublasLtTest, MatchesReference) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t shapes[][3] = {
      {1, 8, 16}, {37, 200, 264}, {130, 136, 40}, {64, 72, 36}, {300, 256, 1024}};
  for (const auto& s : shapes) {
    const int64_t m = s[0], n = s[1], k = s[2];
    SCOPED_TRACE(::testing::Message() << "M=" << m << " N=" << n << " K=" << k);
    const std::vector<float> a = RoundedToBf16(RandomVector(m * k, 1));
    const std::vector<float> b = RoundedToBf16(RandomVector(n * k, 2));
    Tensor ad = ToDevice(a, {m, k}, DType::kBF16), bd = ToDevice(b, {n, k}, DType::kBF16);
    for (DType ct : {DType::kF32, DType::kBF16}) {
      Tensor c = Tensor::Empty({m, n}, ct, Device::kCUDA);
      TANDEM_ASSERT_OK(cuda::GemmNTPinned(GpuTestContext(), ad, bd, c));
      double tol = 0.0;
      const std::vector<double> ref = Reference(a, b, m, n, k, &tol);
      testing::CompareOptions opt;
      opt.atol = tol;
      opt.shape = {m, n};
      if (ct == DType::kBF16) {
        opt.rtol = std::ldexp(1.0, -8);  // one rounding of the fp32 result to bf16
        opt.max_nmse = 1e-5;
      }
      EXPECT_TRUE(AllClose(ToHostFloats(c), ref, opt)) << DTypeName(ct) << " c";
    }
  }
}

// Rows of c for slices [begin, begin + m) of a must be the bits of the full product's rows.
void ExpectBatchInvariant(int64_t n, int64_t k, DType c_dtype, bool expect_cublaslt) {
  SCOPED_TRACE(::testing::Message() << "N=" << n << " K=" << k << " c " << DTypeName(c_dtype));
  constexpr int64_t kRows = 4096;
  Tensor a = ToDevice(RandomVector(kRows * k, 11), {kRows, k}, DType::kBF16);
  Tensor b = ToDevice(RoundedToBf16(RandomVector(n * k, 12)), {n, k}, DType::kBF16);
  Tensor full = Tensor::Empty({kRows, n}, c_dtype, Device::kCUDA);
  auto info = cuda::GemmNTPinnedInfo(GpuTestContext(), Args(a, b, full));
  ASSERT_TRUE(info.ok()) << info.status();
  std::cout << "[ pinned   ] N=" << n << " K=" << k << " c " << DTypeName(c_dtype) << ": "
            << (info->cublaslt ? "cuBLASLt " + info->algo : "ours (" + info->why + ")")
            << " [rule: " << info->rule << "]\n";
  EXPECT_EQ(info->cublaslt, expect_cublaslt) << info->why;
  if (info->cublaslt) {
    EXPECT_TRUE(info->rule == "table" || info->rule.rfind("heuristic", 0) == 0) << info->rule;
  } else {
    EXPECT_EQ(info->rule, "ours");
  }
  // A table entry for this GPU and library that AlgoCheck rejects is a stale table.
  EXPECT_EQ(info->rule.find("rejected"), std::string::npos) << info->rule;
  TANDEM_ASSERT_OK(cuda::GemmNTPinned(GpuTestContext(), a, b, full));
  const std::vector<float> want = ToHostFloats(full);
  const struct {
    int64_t m, begin;
  } slices[] = {{1, 0},    {1, 1},     {1, 77},  {1, 4095}, {37, 0},     {37, 5},
                {37, 127}, {37, 4059}, {512, 0}, {512, 64}, {512, 3001}, {4096, 0}};
  for (const auto& s : slices) {
    SCOPED_TRACE(::testing::Message() << "M=" << s.m << " rows from " << s.begin);
    Tensor c = Tensor::Empty({s.m, n}, c_dtype, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::GemmNTPinned(GpuTestContext(), a.Rows(s.begin, s.begin + s.m), b, c));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(c),
                             {want.data() + s.begin * n, static_cast<size_t>(s.m * n)}, {s.m, n}));
  }
}

TEST(GemmCublasLtTest, RowsAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  ExpectBatchInvariant(384, 520, DType::kF32, true);
  ExpectBatchInvariant(200, 36, DType::kF32, false);  // K % 8 != 0: our kernel for every M
}

// Every Ring-mini-linear-2.0 weight shape (those kAlgoTable may hold), both c dtypes.
TEST(GemmCublasLtTest, ModelShapeRowsAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t shapes[][2] = {
      {6144, 2048},  // linear-attention fused qkv
      {3072, 2048},  // softmax-attention qkv (16 q + 2 x 4 kv heads)
      {2048, 2048},  // g_proj, dense
      {5120, 2048},  // layer-0 MLP gate / up
      {2048, 5120},  // layer-0 MLP down
      {512, 2048},   // shared expert gate / up
      {2048, 512},   // shared expert down
  };
  for (const auto& s : shapes) {
    for (DType ct : {DType::kF32, DType::kBF16}) ExpectBatchInvariant(s[0], s[1], ct, true);
  }
}

TEST(GemmCublasLtTest, AccumulateAddsC) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t m = 70, n = 136, k = 96;
  Tensor a = ToDevice(RandomVector(m * k, 5), {m, k}, DType::kBF16);
  Tensor b = ToDevice(RandomVector(n * k, 6), {n, k}, DType::kBF16);
  Tensor c = Tensor::Empty({m, n}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::GemmNTPinned(GpuTestContext(), a, b, c));
  const std::vector<float> product = ToHostFloats(c);
  const std::vector<float> c0 = RandomVector(m * n, 7);
  Tensor acc = ToDevice(c0, {m, n});
  TANDEM_ASSERT_OK(cuda::GemmNTPinned(GpuTestContext(), a, b, acc, /*accumulate=*/true));
  std::vector<double> want(c0.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = double{c0[i]} + product[i];
  testing::CompareOptions opt;
  opt.atol = 2e-6;  // c0 + product rounded in fp32: half an ulp for |values| < 32
  EXPECT_TRUE(AllClose(ToHostFloats(acc), want, opt));
}

TEST(GemmCublasLtTest, IneligibleInputsUseOurKernelForEveryM) {
  TANDEM_SKIP_WITHOUT_GPU();
  // f32 a: cuBLASLt has no mixed f32 x bf16 product, so the whole shape runs our kernel, with its
  // bits.
  const int64_t m = 33, n = 64, k = 64;
  Tensor a = ToDevice(RandomVector(m * k, 8), {m, k}, DType::kF32);
  Tensor b = ToDevice(RoundedToBf16(RandomVector(n * k, 9)), {n, k}, DType::kBF16);
  Tensor c1 = Tensor::Empty({m, n}, DType::kF32, Device::kCUDA);
  Tensor c2 = Tensor::Empty({m, n}, DType::kF32, Device::kCUDA);
  auto info = cuda::GemmNTPinnedInfo(GpuTestContext(), Args(a, b, c1));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(info->cublaslt);
  TANDEM_ASSERT_OK(cuda::GemmNTPinned(GpuTestContext(), a, b, c1));
  TANDEM_ASSERT_OK(cuda::GemmNT(GpuTestContext(), a, b, c2));
  EXPECT_TRUE(BitwiseEqual(ToHostFloats(c1), ToHostFloats(c2)));
}

TEST(GemmCublasLtTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);
  auto dev = [&](Shape s, DType t) { return Tensor::View(fake, std::move(s), t, Device::kCUDA); };
  Tensor c = dev({4, 9}, DType::kF32);
  absl::Status s = cuda::GemmNTPinned(GpuTestContext(), dev({4, 16}, DType::kBF16),
                                      dev({8, 16}, DType::kBF16), c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  cuda::GemmNTArgs args;
  args.m = 4, args.n = 8, args.k = 16, args.a = fake, args.b = fake, args.c = fake;
  args.lda = 16, args.ldb = 16, args.ldc = 7;
  EXPECT_EQ(cuda::GemmNTPinned(GpuTestContext(), args).message(), "ldc: expected >= n = 8, got 7");
}

}  // namespace
}  // namespace tandem::kernels

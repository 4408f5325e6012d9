// Tests for cuda::GemmNT: bf16 tensor-core and fp32 paths against the CPU GEMM and an fp64
// reference on bf16-rounded inputs, the contract's bitwise promises (rows identical for any M and
// any position in the batch, bf16 output = rounded f32 output, f32 input = host-rounded bf16
// input, accumulate = one add after the sum), and argument errors (checked without a GPU too).
#include "kernels/gemm/gemm_cuda.h"

#include <cmath>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kernels/gemm/gemm.h"
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

struct Problem {
  int64_t m, n, k;
  std::vector<float> a, b;  // [M, K], [N, K], bf16-representable
};

Problem MakeProblem(int64_t m, int64_t n, int64_t k, uint64_t seed) {
  return {m, n, k, RoundedToBf16(RandomVector(m * k, seed)),
          RoundedToBf16(RandomVector(n * k, seed + 1))};
}

// fp64 reference and the largest Σ|a·b| of any output (for the error bound).
std::vector<double> Reference(const Problem& p, double* max_abs_sum) {
  std::vector<double> c(p.m * p.n);
  *max_abs_sum = 0.0;
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t j = 0; j < p.n; ++j) {
      double s = 0.0, abs_sum = 0.0;
      for (int64_t q = 0; q < p.k; ++q) {
        const double prod = double{p.a[i * p.k + q]} * p.b[j * p.k + q];
        s += prod;
        abs_sum += std::fabs(prod);
      }
      c[i * p.n + j] = s;
      *max_abs_sum = std::max(*max_abs_sum, abs_sum);
    }
  }
  return c;
}

// Products of bf16 values are exact in fp32; K fp32 additions err by at most ~K·2⁻²⁴·Σ|a·b|.
double Tolerance(int64_t k, double max_abs_sum) {
  return 2.0 * k * std::ldexp(1.0, -24) * max_abs_sum;
}

std::vector<float> GpuGemm(const Problem& p, DType a_dtype, DType b_dtype, DType c_dtype) {
  Tensor a = ToDevice(p.a, {p.m, p.k}, a_dtype);
  Tensor b = ToDevice(p.b, {p.n, p.k}, b_dtype);
  Tensor c = Tensor::Empty({p.m, p.n}, c_dtype, Device::kCUDA);
  absl::Status s = cuda::GemmNT(GpuTestContext(), a, b, c);
  EXPECT_TRUE(s.ok()) << s;
  return ToHostFloats(c);
}

std::vector<float> CpuGemm(const Problem& p) {
  Tensor a = Tensor::FromVector(p.a, {p.m, p.k});
  Tensor b = Tensor::FromVector(p.b, {p.n, p.k});
  Tensor c = Tensor::Empty({p.m, p.n}, DType::kF32);
  absl::Status s = GemmNT(Context::Cpu(2), a, b, c);
  EXPECT_TRUE(s.ok()) << s;
  return std::vector<float>(c.data<float>(), c.data<float>() + c.numel());
}

// Shapes: single row, ragged M/N, k tails inside a 32-slice (k % 8 == 0: vector loads) and
// k % 8 != 0 (scalar loads), a deep k.
const Problem kShapes[] = {MakeProblem(1, 8, 16, 1), MakeProblem(37, 200, 264, 2),
                           MakeProblem(130, 129, 40, 3), MakeProblem(64, 72, 36, 4),
                           MakeProblem(300, 256, 1024, 5)};

TEST(GemmCudaTest, Bf16MatchesCpuAndReference) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const Problem& p : kShapes) {
    SCOPED_TRACE(::testing::Message() << "M=" << p.m << " N=" << p.n << " K=" << p.k);
    double max_abs_sum = 0.0;
    const std::vector<double> ref = Reference(p, &max_abs_sum);
    const std::vector<float> gpu = GpuGemm(p, DType::kBF16, DType::kBF16, DType::kF32);
    const std::vector<float> cpu = CpuGemm(p);
    testing::CompareOptions opt;
    opt.atol = Tolerance(p.k, max_abs_sum);
    opt.shape = {p.m, p.n};
    EXPECT_TRUE(AllClose(gpu, ref, opt));
    EXPECT_TRUE(AllClose(gpu, testing::ToDouble(cpu), opt));
  }
}

TEST(GemmCudaTest, OutputAndInputCastsAreExactRoundings) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const Problem& p : kShapes) {
    SCOPED_TRACE(::testing::Message() << "M=" << p.m << " N=" << p.n << " K=" << p.k);
    const std::vector<float> f32 = GpuGemm(p, DType::kBF16, DType::kBF16, DType::kF32);
    // bf16 c: the fp32 result rounded once.
    EXPECT_TRUE(
        BitwiseEqual(GpuGemm(p, DType::kBF16, DType::kBF16, DType::kBF16), RoundedToBf16(f32)));
    // f32 a: rounded to bf16 on load, like FloatToBf16 on the host.
    Problem raw = p;
    raw.a = RandomVector(p.m * p.k, 99);
    Problem rounded = raw;
    rounded.a = RoundedToBf16(raw.a);
    EXPECT_TRUE(BitwiseEqual(GpuGemm(raw, DType::kF32, DType::kBF16, DType::kF32),
                             GpuGemm(rounded, DType::kBF16, DType::kBF16, DType::kF32)));
  }
}

TEST(GemmCudaTest, AccumulateAddsOnceAfterTheSum) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem p = MakeProblem(70, 130, 96, 7);
  const std::vector<float> result = GpuGemm(p, DType::kBF16, DType::kBF16, DType::kF32);
  const std::vector<float> c0 = RoundedToBf16(RandomVector(p.m * p.n, 8));
  for (DType ct : {DType::kF32, DType::kBF16}) {
    Tensor a = ToDevice(p.a, {p.m, p.k}, DType::kBF16);
    Tensor b = ToDevice(p.b, {p.n, p.k}, DType::kBF16);
    Tensor c = ToDevice(c0, {p.m, p.n}, ct);
    TANDEM_ASSERT_OK(cuda::GemmNT(GpuTestContext(), a, b, c, /*accumulate=*/true));
    std::vector<float> want(c0.size());
    for (size_t i = 0; i < want.size(); ++i) want[i] = c0[i] + result[i];
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(c), ct == DType::kBF16 ? RoundedToBf16(want) : want));
  }
}

// Rows of c for every slice [begin, begin + m) of a must be the bits of the full product's rows.
void ExpectBatchInvariant(int64_t n, int64_t k, DType a_dtype, DType b_dtype) {
  SCOPED_TRACE(::testing::Message() << "N=" << n << " K=" << k << " a " << DTypeName(a_dtype)
                                    << " b " << DTypeName(b_dtype));
  constexpr int64_t kRows = 4096;
  const std::vector<float> a_host = RandomVector(kRows * k, 11);
  Tensor a = ToDevice(a_host, {kRows, k}, a_dtype);
  Tensor b = ToDevice(RoundedToBf16(RandomVector(n * k, 12)), {n, k}, b_dtype);
  Tensor full = Tensor::Empty({kRows, n}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::GemmNT(GpuTestContext(), a, b, full));
  const std::vector<float> want = ToHostFloats(full);
  const struct {
    int64_t m, begin;
  } slices[] = {{1, 0},    {1, 1},     {1, 77},  {1, 4095}, {37, 0},     {37, 5},
                {37, 127}, {37, 4059}, {512, 0}, {512, 64}, {512, 3001}, {4096, 0}};
  for (const auto& s : slices) {
    SCOPED_TRACE(::testing::Message() << "M=" << s.m << " rows from " << s.begin);
    Tensor c = Tensor::Empty({s.m, n}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::GemmNT(GpuTestContext(), a.Rows(s.begin, s.begin + s.m), b, c));
    const std::vector<float> got = ToHostFloats(c);
    EXPECT_TRUE(
        BitwiseEqual(got, {want.data() + s.begin * n, static_cast<size_t>(s.m * n)}, {s.m, n}));
  }
}

TEST(GemmCudaTest, RowsAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  ExpectBatchInvariant(384, 520, DType::kBF16, DType::kBF16);  // k tail, vector loads
  ExpectBatchInvariant(200, 36, DType::kBF16, DType::kBF16);   // k % 8 != 0, scalar loads
  ExpectBatchInvariant(256, 2048, DType::kF32, DType::kBF16);  // f32 a, cast on load
  ExpectBatchInvariant(130, 100, DType::kF32, DType::kF32);    // fp32 FMA path
  // The router's shape: the fp32 product of up to a few thousand rows takes the narrow tiling, the
  // full 4096 rows the wide one (on a GPU of fewer than 256 SMs); the rows must not notice.
  ExpectBatchInvariant(256, 2048, DType::kF32, DType::kF32);
}

TEST(GemmCudaTest, F32PathMatchesCpuBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  // Both compute one fp32 FMA chain from 0 over k ascending per element, then round nothing.
  for (const Problem& shape : kShapes) {
    Problem p = shape;
    p.a = RandomVector(p.m * p.k, 21);
    p.b = RandomVector(p.n * p.k, 22);
    SCOPED_TRACE(::testing::Message() << "M=" << p.m << " N=" << p.n << " K=" << p.k);
    EXPECT_TRUE(
        BitwiseEqual(GpuGemm(p, DType::kF32, DType::kF32, DType::kF32), CpuGemm(p), {p.m, p.n}));
  }
}

TEST(GemmCudaTest, RawFormHonoursLeadingDimensions) {
  TANDEM_SKIP_WITHOUT_GPU();
  // A [40, 64] block inside a [40, 100] matrix, written into columns 8.. of a [40, 200] c.
  const Problem p = MakeProblem(40, 96, 64, 31);
  const std::vector<float> want = GpuGemm(p, DType::kBF16, DType::kBF16, DType::kF32);
  std::vector<float> wide(40 * 100, 5.0f);
  for (int64_t i = 0; i < 40; ++i) {
    for (int64_t q = 0; q < 64; ++q) wide[i * 100 + q] = p.a[i * 64 + q];
  }
  Tensor a = ToDevice(wide, {40, 100}, DType::kBF16);
  Tensor b = ToDevice(p.b, {96, 64}, DType::kBF16);
  Tensor c = Tensor::Zeros({40, 200}, DType::kF32, Device::kCUDA);
  cuda::GemmNTArgs args;
  args.m = 40, args.n = 96, args.k = 64;
  args.a = a.raw_data(), args.lda = 100;
  args.b = b.raw_data(), args.ldb = 64;
  args.c = c.data<float>() + 8, args.ldc = 200;
  TANDEM_ASSERT_OK(cuda::GemmNT(nullptr, args));
  const std::vector<float> got = ToHostFloats(c);
  for (int64_t i = 0; i < 40; ++i) {
    for (int64_t j = 0; j < 200; ++j) {
      const float expect = j >= 8 && j < 104 ? want[i * 96 + j - 8] : 0.0f;
      ASSERT_EQ(got[i * 200 + j], expect) << "row " << i << " col " << j;
    }
  }
}

// Argument checks run before any CUDA call, so these run on machines without a GPU too.
TEST(GemmCudaTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  auto dev = [&](Shape s, DType t) { return Tensor::View(fake, std::move(s), t, Device::kCUDA); };
  const Context& ctx = GpuTestContext();
  Tensor c = dev({4, 8}, DType::kF32);
  absl::Status s =
      cuda::GemmNT(ctx, Tensor::Zeros({4, 16}, DType::kBF16), dev({8, 16}, DType::kBF16), c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "a: expected bf16 [*, 16] on cuda, got bf16 [4, 16] on cpu");
  s = cuda::GemmNT(ctx, dev({4, 12}, DType::kBF16), dev({8, 16}, DType::kBF16), c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(s.message(), "a: expected bf16 [*, 16]")) << s;
  Tensor wrong_c = dev({4, 9}, DType::kF32);
  s = cuda::GemmNT(ctx, dev({4, 16}, DType::kBF16), dev({8, 16}, DType::kBF16), wrong_c);
  EXPECT_TRUE(absl::StartsWith(s.message(), "c: expected f32 [4, 8]")) << s;
  s = cuda::GemmNT(ctx, dev({4, 16}, DType::kBF16), dev({8, 16}, DType::kF32), c);
  EXPECT_TRUE(absl::StartsWith(s.message(), "a: expected f32")) << s;
  s = cuda::GemmNT(ctx, dev({4, 16}, DType::kBF16), dev({8, 16}, DType::kI32), c);
  EXPECT_TRUE(absl::StartsWith(s.message(), "b: expected bf16")) << s;
  cuda::GemmNTArgs args;
  args.m = 4, args.n = 8, args.k = 16, args.a = fake, args.b = fake, args.c = fake;
  args.lda = 16, args.ldb = 16, args.ldc = 7;
  s = cuda::GemmNT(nullptr, args);
  EXPECT_EQ(s.message(), "ldc: expected >= n = 8, got 7");
}

}  // namespace
}  // namespace tandem::kernels

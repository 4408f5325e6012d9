// Tests for cuda::GemmNN and cuda::GemmTN (the backward layouts): agreement with the CPU GEMM on
// bf16-rounded inputs within the fp32 summation-order bound, bitwise agreement on the fallback
// path (same FMA chain as the CPU), `accumulate` (c added once), an f32 a, determinism, GemmNN row
// batch invariance, GemmTN across its token chunks and split token ranges, and the
// kernels::GemmNN/TN dispatch.
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gemm/gemm.h"
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

struct Shape3 {
  int64_t m, n, k;
};

// a [m, k] (NN) or [k, m] (TN); b [k, n].
Shape AShape(bool tn, const Shape3& s) { return tn ? Shape{s.k, s.m} : Shape{s.m, s.k}; }

absl::Status RunGpu(bool tn, const Tensor& a, const Tensor& b, Tensor& c, bool accumulate = false) {
  return tn ? cuda::GemmTN(GpuTestContext(), a, b, c, accumulate)
            : cuda::GemmNN(GpuTestContext(), a, b, c, accumulate);
}

cuda::GemmBackwardArgs Args(bool tn, const Tensor& a, const Tensor& b, Tensor& c) {
  cuda::GemmBackwardArgs g;
  g.m = c.dim(0), g.n = c.dim(1), g.k = b.dim(0);
  g.a = a.raw_data(), g.a_dtype = a.dtype(), g.lda = tn ? g.m : g.k;
  g.b = b.raw_data(), g.b_dtype = b.dtype(), g.ldb = g.n;
  g.c = c.raw_data(), g.c_dtype = c.dtype(), g.ldc = g.n;
  return g;
}

std::string PathOf(bool tn, const Tensor& a, const Tensor& b, Tensor& c, bool* cublaslt) {
  const cuda::GemmBackwardArgs g = Args(tn, a, b, c);
  auto info = tn ? cuda::GemmTNPinnedInfo(GpuTestContext(), g)
                 : cuda::GemmNNPinnedInfo(GpuTestContext(), g);
  EXPECT_TRUE(info.ok()) << info.status();
  if (!info.ok()) return "";
  *cublaslt = info->cublaslt;
  return info->cublaslt ? "cuBLASLt " + info->algo + " [" + info->rule + "]"
                        : "ours (" + info->why + ")";
}

// The CPU GEMM on the same (already rounded) values, and the bound 2·K·2⁻²⁴·max Σ_k |a·b|: both
// sides sum exact products in fp32, in different orders.
std::vector<float> Cpu(bool tn, const std::vector<float>& a, const std::vector<float>& b,
                       const Shape3& s, double* tol) {
  const Context cpu = Context::Cpu(1);
  Tensor at = Tensor::FromVector(a, AShape(tn, s)), bt = Tensor::FromVector(b, {s.k, s.n});
  Tensor c = Tensor::Empty({s.m, s.n}, DType::kF32);
  const absl::Status st = tn ? GemmTN(cpu, at, bt, c) : GemmNN(cpu, at, bt, c);
  EXPECT_TRUE(st.ok()) << st;
  std::vector<double> abs_sum(s.m * s.n, 0.0);
  for (int64_t i = 0; i < s.m; ++i) {
    for (int64_t p = 0; p < s.k; ++p) {
      const double av = std::fabs(tn ? a[p * s.m + i] : a[i * s.k + p]);
      for (int64_t j = 0; j < s.n; ++j) abs_sum[i * s.n + j] += av * std::fabs(b[p * s.n + j]);
    }
  }
  double max_abs = 0.0;
  for (double v : abs_sum) max_abs = std::max(max_abs, v);
  *tol = 2.0 * s.k * std::ldexp(1.0, -24) * max_abs;
  return std::vector<float>(c.data<float>(), c.data<float>() + c.numel());
}

void ExpectMatchesCpu(bool tn, const Shape3& s) {
  SCOPED_TRACE(::testing::Message()
               << (tn ? "TN" : "NN") << " M=" << s.m << " N=" << s.n << " K=" << s.k);
  const std::vector<float> a = RoundedToBf16(RandomVector(s.m * s.k, 21));
  const std::vector<float> b = RoundedToBf16(RandomVector(s.k * s.n, 22));
  double tol = 0.0;
  const std::vector<float> cpu = Cpu(tn, a, b, s, &tol);
  const std::vector<double> ref(cpu.begin(), cpu.end());
  Tensor ad = ToDevice(a, AShape(tn, s), DType::kBF16), bd = ToDevice(b, {s.k, s.n}, DType::kBF16);
  for (DType ct : {DType::kF32, DType::kBF16}) {
    Tensor c = Tensor::Empty({s.m, s.n}, ct, Device::kCUDA);
    bool lt = false;
    std::cout << "[ path     ] " << (tn ? "TN" : "NN") << " M=" << s.m << " N=" << s.n
              << " K=" << s.k << " c " << DTypeName(ct) << ": " << PathOf(tn, ad, bd, c, &lt)
              << "\n";
    TANDEM_ASSERT_OK(RunGpu(tn, ad, bd, c));
    testing::CompareOptions opt;
    opt.atol = tol;
    opt.shape = {s.m, s.n};
    if (ct == DType::kBF16) {
      opt.rtol = std::ldexp(1.0, -8);  // one rounding of the fp32 result to bf16
      opt.max_nmse = 1e-5;
    }
    EXPECT_TRUE(AllClose(ToHostFloats(c), ref, opt)) << DTypeName(ct) << " c";
  }
}

TEST(GemmBackwardCudaTest, NnMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const Shape3& s : {Shape3{1, 64, 128}, Shape3{37, 136, 256}, Shape3{300, 256, 1024},
                          Shape3{100, 72, 100}, Shape3{37, 40, 1}, Shape3{1, 8, 1}}) {
    ExpectMatchesCpu(false, s);
  }
}

TEST(GemmBackwardCudaTest, TnMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  // K = 9000: three token chunks (4096, 4096, 808) summed in order; M = 1 and 37: unaligned rows.
  for (const Shape3& s :
       {Shape3{64, 64, 1}, Shape3{128, 96, 100}, Shape3{40, 48, 4096}, Shape3{256, 128, 9000},
        Shape3{1, 64, 128}, Shape3{37, 136, 256}, Shape3{37, 40, 1}}) {
    ExpectMatchesCpu(true, s);
  }
}

// Shapes the fallback takes run the CPU's arithmetic: bit for bit the CPU GEMM.
TEST(GemmBackwardCudaTest, FallbackIsBitwiseTheCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  struct Case {
    bool tn;
    Shape3 s;
    DType a_dtype, b_dtype;
  } cases[] = {{false, {100, 72, 100}, DType::kBF16, DType::kBF16},  // K % 8 != 0
               {false, {70, 64, 96}, DType::kF32, DType::kF32},
               {false, {33, 20, 100}, DType::kF32, DType::kBF16},   // a rounded on load
               {true, {37, 136, 256}, DType::kBF16, DType::kBF16},  // M % 8 != 0
               {true, {64, 48, 300}, DType::kF32, DType::kF32},
               {true, {37, 20, 77}, DType::kF32, DType::kBF16}};  // N % 8 != 0
  for (const Case& t : cases) {
    SCOPED_TRACE(::testing::Message() << (t.tn ? "TN" : "NN") << " M=" << t.s.m << " N=" << t.s.n
                                      << " K=" << t.s.k << " a " << DTypeName(t.a_dtype));
    const std::vector<float> a = RandomVector(t.s.m * t.s.k, 31);
    std::vector<float> b = RandomVector(t.s.k * t.s.n, 32);
    if (t.b_dtype == DType::kBF16) b = RoundedToBf16(b);
    Tensor ad = ToDevice(a, AShape(t.tn, t.s), t.a_dtype);
    Tensor bd = ToDevice(b, {t.s.k, t.s.n}, t.b_dtype);
    Tensor c = Tensor::Empty({t.s.m, t.s.n}, DType::kF32, Device::kCUDA);
    bool lt = true;
    std::cout << "[ path     ] " << PathOf(t.tn, ad, bd, c, &lt) << "\n";
    EXPECT_FALSE(lt);
    TANDEM_ASSERT_OK(RunGpu(t.tn, ad, bd, c));
    double tol = 0.0;
    const std::vector<float> cpu =
        Cpu(t.tn, t.a_dtype == DType::kBF16 || t.b_dtype == DType::kBF16 ? RoundedToBf16(a) : a, b,
            t.s, &tol);
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(c), cpu, {t.s.m, t.s.n}));
  }
}

TEST(GemmBackwardCudaTest, AccumulateAddsCOnceAfterTheSum) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (bool tn : {false, true}) {
    for (const Shape3& s : {Shape3{72, 136, 96}, Shape3{64, 40, 100}, Shape3{128, 64, 9000}}) {
      for (DType ct : {DType::kF32, DType::kBF16}) {
        SCOPED_TRACE(::testing::Message() << (tn ? "TN" : "NN") << " M=" << s.m << " N=" << s.n
                                          << " K=" << s.k << " c " << DTypeName(ct));
        Tensor a = ToDevice(RandomVector(s.m * s.k, 5), AShape(tn, s), DType::kBF16);
        Tensor b = ToDevice(RandomVector(s.k * s.n, 6), {s.k, s.n}, DType::kBF16);
        Tensor c = Tensor::Empty({s.m, s.n}, DType::kF32, Device::kCUDA);
        TANDEM_ASSERT_OK(RunGpu(tn, a, b, c));
        const std::vector<float> product = ToHostFloats(c);
        const std::vector<float> c0 = RoundedToBf16(RandomVector(s.m * s.n, 7, -4.0f, 4.0f));
        Tensor acc = ToDevice(c0, {s.m, s.n}, ct);
        TANDEM_ASSERT_OK(RunGpu(tn, a, b, acc, /*accumulate=*/true));
        std::vector<double> want(c0.size());
        for (size_t i = 0; i < want.size(); ++i) want[i] = double{c0[i]} + product[i];
        testing::CompareOptions opt;
        opt.atol = 1e-30;
        // c0 + product rounded once, to fp32 or to bf16.
        opt.rtol = ct == DType::kF32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -8);
        opt.max_nmse = ct == DType::kF32 ? 1e-12 : 1e-5;
        const std::vector<float> got = ToHostFloats(acc);
        EXPECT_TRUE(AllClose(got, want, opt));
        if (ct == DType::kBF16) {
          // A bf16 c takes the same fp32 product (N % 8 == 0: the same pinned algorithm as the f32
          // call above) plus c once, rounded once: bit for bit bf16(fp32(c0 + product)).
          std::vector<float> once(c0.size());
          for (size_t i = 0; i < once.size(); ++i) once[i] = c0[i] + product[i];
          EXPECT_TRUE(BitwiseEqual(got, RoundedToBf16(once), {s.m, s.n}));
        }
      }
    }
  }
}

// An f32 a on the cuBLASLt path is rounded into a bf16 copy in the workspace (per token chunk for
// TN, per slice of rows for NN): bit for bit the call with the bf16-rounded a, for every c dtype
// and `accumulate`. TN K = 9000: three chunks, each rounded into the same buffer in turn.
TEST(GemmBackwardCudaTest, F32AMatchesTheBf16RoundedA) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (bool tn : {false, true}) {
    const Shape3 s = tn ? Shape3{128, 64, 9000} : Shape3{300, 256, 1024};
    const std::vector<float> a = RandomVector(s.m * s.k, 71);
    Tensor a32 = ToDevice(a, AShape(tn, s), DType::kF32);
    Tensor a16 = ToDevice(a, AShape(tn, s), DType::kBF16);
    Tensor b = ToDevice(RandomVector(s.k * s.n, 72), {s.k, s.n}, DType::kBF16);
    const std::vector<float> c0 = RoundedToBf16(RandomVector(s.m * s.n, 73, -4.0f, 4.0f));
    for (DType ct : {DType::kF32, DType::kBF16}) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(::testing::Message() << (tn ? "TN" : "NN") << " c " << DTypeName(ct)
                                          << (accumulate ? " accumulate" : ""));
        Tensor c1 = ToDevice(c0, {s.m, s.n}, ct), c2 = ToDevice(c0, {s.m, s.n}, ct);
        bool lt = false;
        std::cout << "[ path     ] f32 a: " << PathOf(tn, a32, b, c1, &lt) << "\n";
        EXPECT_TRUE(lt);
        TANDEM_ASSERT_OK(RunGpu(tn, a32, b, c1, accumulate));
        TANDEM_ASSERT_OK(RunGpu(tn, a16, b, c2, accumulate));
        EXPECT_TRUE(BitwiseEqual(ToHostFloats(c1), ToHostFloats(c2), {s.m, s.n}));
      }
    }
  }
}

TEST(GemmBackwardCudaTest, RunsAreBitwiseDeterministic) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (bool tn : {false, true}) {
    // TN K = 3·4096 + 5: three full chunks in one batched call plus a short one.
    const Shape3 s = tn ? Shape3{256, 256, 3 * 4096 + 5} : Shape3{1000, 512, 2048};
    SCOPED_TRACE(tn ? "TN" : "NN");
    Tensor a = ToDevice(RandomVector(s.m * s.k, 41), AShape(tn, s), DType::kBF16);
    Tensor b = ToDevice(RandomVector(s.k * s.n, 42), {s.k, s.n}, DType::kBF16);
    for (DType ct : {DType::kF32, DType::kBF16}) {
      Tensor c1 = Tensor::Empty({s.m, s.n}, ct, Device::kCUDA);
      Tensor c2 = Tensor::Empty({s.m, s.n}, ct, Device::kCUDA);
      TANDEM_ASSERT_OK(RunGpu(tn, a, b, c1));
      TANDEM_ASSERT_OK(RunGpu(tn, a, b, c2));
      EXPECT_TRUE(BitwiseEqual(ToHostFloats(c1), ToHostFloats(c2), {s.m, s.n}));
    }
  }
}

// Contract rule 1 for dX = dY · W: a row's bits do not depend on M or on its place in the batch.
TEST(GemmBackwardCudaTest, NnRowsAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const auto& nk : {std::pair<int64_t, int64_t>{2048, 512}, {512, 2048}, {384, 520}}) {
    const int64_t n = nk.first, k = nk.second, rows = 4096;
    SCOPED_TRACE(::testing::Message() << "N=" << n << " K=" << k);
    Tensor a = ToDevice(RandomVector(rows * k, 11), {rows, k}, DType::kBF16);
    Tensor b = ToDevice(RandomVector(k * n, 12), {k, n}, DType::kBF16);
    Tensor full = Tensor::Empty({rows, n}, DType::kF32, Device::kCUDA);
    bool lt = false;
    std::cout << "[ path     ] NN N=" << n << " K=" << k << ": " << PathOf(false, a, b, full, &lt)
              << "\n";
    EXPECT_TRUE(lt);
    TANDEM_ASSERT_OK(RunGpu(false, a, b, full));
    const std::vector<float> want = ToHostFloats(full);
    const std::pair<int64_t, int64_t> slices[] = {{1, 0},     {1, 77},   {37, 5},
                                                  {37, 4059}, {512, 64}, {1000, 3000}};
    for (const auto& [m, begin] : slices) {
      SCOPED_TRACE(::testing::Message() << "M=" << m << " rows from " << begin);
      Tensor c = Tensor::Empty({m, n}, DType::kF32, Device::kCUDA);
      TANDEM_ASSERT_OK(RunGpu(false, a.Rows(begin, begin + m), b, c));
      EXPECT_TRUE(BitwiseEqual(ToHostFloats(c),
                               {want.data() + begin * n, static_cast<size_t>(m * n)}, {m, n}));
    }
  }
}

// dW over K tokens in one call vs. the first K1 tokens, then the rest with `accumulate` (how the
// trainer adds micro-batches): the same sum in another association, so equal within the fp32
// bound, not bitwise (gemm_cuda.h). The line printed says whether the bits happened to agree.
TEST(GemmBackwardCudaTest, TnSplitTokenRangeAgreesWithinBound) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t m = 128, n = 192, k = 6000;
  for (int64_t k1 : {int64_t{4096}, int64_t{1000}}) {
    SCOPED_TRACE(::testing::Message() << "K1=" << k1);
    const std::vector<float> a = RoundedToBf16(RandomVector(k * m, 51));
    const std::vector<float> b = RoundedToBf16(RandomVector(k * n, 52));
    Tensor ad = ToDevice(a, {k, m}, DType::kBF16), bd = ToDevice(b, {k, n}, DType::kBF16);
    Tensor whole = Tensor::Empty({m, n}, DType::kF32, Device::kCUDA);
    Tensor split = Tensor::Empty({m, n}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(RunGpu(true, ad, bd, whole));
    TANDEM_ASSERT_OK(RunGpu(true, ad.Rows(0, k1), bd.Rows(0, k1), split));
    TANDEM_ASSERT_OK(RunGpu(true, ad.Rows(k1, k), bd.Rows(k1, k), split, /*accumulate=*/true));
    double tol = 0.0;
    const std::vector<float> cpu = Cpu(true, a, b, {m, n, k}, &tol);
    const std::vector<float> w = ToHostFloats(whole), sp = ToHostFloats(split);
    testing::CompareOptions opt;
    opt.atol = tol;
    EXPECT_TRUE(AllClose(sp, std::vector<double>(w.begin(), w.end()), opt));
    EXPECT_TRUE(AllClose(w, std::vector<double>(cpu.begin(), cpu.end()), opt));
    std::cout << "[ split    ] K=" << k << " as " << k1 << " + " << k - k1 << ": "
              << (BitwiseEqual(sp, w) ? "bitwise equal" : "not bitwise equal") << "\n";
  }
}

TEST(GemmBackwardCudaTest, TopLevelGemmDispatchesToCuda) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Context ctx = Context::Cuda(0, nullptr);
  for (bool tn : {false, true}) {
    const Shape3 s{64, 96, 128};
    Tensor a = ToDevice(RandomVector(s.m * s.k, 61), AShape(tn, s), DType::kBF16);
    Tensor b = ToDevice(RandomVector(s.k * s.n, 62), {s.k, s.n}, DType::kBF16);
    Tensor c1 = Tensor::Empty({s.m, s.n}, DType::kF32, Device::kCUDA);
    Tensor c2 = Tensor::Empty({s.m, s.n}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(tn ? GemmTN(ctx, a, b, c1) : GemmNN(ctx, a, b, c1));
    TANDEM_ASSERT_OK(RunGpu(tn, a, b, c2));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(c1), ToHostFloats(c2)));
  }
}

TEST(GemmBackwardCudaTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);
  auto dev = [&](Shape s, DType t) { return Tensor::View(fake, std::move(s), t, Device::kCUDA); };
  Tensor c = dev({4, 9}, DType::kF32);
  EXPECT_EQ(
      cuda::GemmNN(GpuTestContext(), dev({4, 16}, DType::kBF16), dev({16, 8}, DType::kBF16), c)
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::GemmTN(GpuTestContext(), dev({16, 4}, DType::kBF16), dev({16, 8}, DType::kF32), c)
                .code(),
            absl::StatusCode::kInvalidArgument);  // f32 b needs f32 a
  cuda::GemmBackwardArgs args;
  args.m = 4, args.n = 8, args.k = 16, args.a = fake, args.b = fake, args.c = fake;
  args.lda = 4, args.ldb = 8, args.ldc = 7;
  EXPECT_EQ(cuda::GemmTN(GpuTestContext(), args).message(), "ldc: expected >= n = 8, got 7");
  args.ldc = 8, args.lda = 3;
  EXPECT_EQ(cuda::GemmTN(GpuTestContext(), args).message(), "lda: expected >= 4, got 3");
}

}  // namespace
}  // namespace tandem::kernels

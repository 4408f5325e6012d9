// Tests for the CUDA RMSNorm: forward, fused add and backward against the CPU kernels and an fp64
// reference (f32 and bf16 storage), the fused form equal bitwise to add-then-norm, rows bitwise
// identical in any batch, dw accumulated into, and argument errors (checked without a GPU too).
#include "kernels/rms_norm/rms_norm_cuda.h"

#include <cmath>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kernels/rms_norm/rms_norm.h"
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

constexpr float kEps = 1e-6f;
const int64_t kShapes[][2] = {{1, 1}, {3, 7}, {5, 256}, {17, 2048}, {4, 5000}};  // {T, D}

std::vector<double> ReferenceFwd(const std::vector<float>& x, const std::vector<float>& w,
                                 int64_t t, int64_t d) {
  std::vector<double> y(t * d);
  for (int64_t r = 0; r < t; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += double{x[r * d + i]} * x[r * d + i];
    const double rstd = 1.0 / std::sqrt(ss / d + kEps);
    for (int64_t i = 0; i < d; ++i) y[r * d + i] = x[r * d + i] * rstd * w[i];
  }
  return y;
}

std::vector<float> Vec(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// Runs the GPU forward with x, w, y stored as `dtype` and returns y.
std::vector<float> GpuFwd(const std::vector<float>& x, const std::vector<float>& w, int64_t t,
                          int64_t d, DType dtype) {
  Tensor xd = ToDevice(x, {t, d}, dtype), wd = ToDevice(w, {d}, dtype);
  Tensor y = Tensor::Empty({t, d}, dtype, Device::kCUDA);
  Tensor rstd = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::RmsNormFwd(GpuTestContext(), xd, wd, kEps, y, rstd);
  EXPECT_TRUE(s.ok()) << s;
  return ToHostFloats(y);
}

TEST(RmsNormCudaTest, ForwardMatchesCpuAndReference) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const auto& [t, d] : kShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << t << " D=" << d);
    const std::vector<float> x = RandomVector(t * d, 1, -2.0f, 2.0f);
    const std::vector<float> w = RandomVector(d, 2, 0.5f, 1.5f);
    Tensor y_cpu = Tensor::Empty({t, d}, DType::kF32), r_cpu = Tensor::Empty({t}, DType::kF32);
    TANDEM_ASSERT_OK(RmsNormFwd(Context::Cpu(1), Tensor::FromVector(x, {t, d}),
                                Tensor::FromVector(w, {d}), kEps, y_cpu, r_cpu));
    // Sums of D squares in two fp32 orders differ by a few ulps times sqrt(D) at most here.
    testing::CompareOptions opt{.atol = 1e-6, .rtol = 1e-5, .shape = {t, d}};
    const std::vector<float> y = GpuFwd(x, w, t, d, DType::kF32);
    EXPECT_TRUE(AllClose(y, ReferenceFwd(x, w, t, d), opt));
    EXPECT_TRUE(AllClose(y, testing::ToDouble(Vec(y_cpu)), opt));
    // bf16 storage: the reference on the rounded inputs, within one bf16 rounding of the output.
    const std::vector<float> xb = RoundedToBf16(x), wb = RoundedToBf16(w);
    // bf16 output: one rounding of relative size <= 2^-9 per element, so the element bound is
    // 2^-8 relative and the global NMSE of pure rounding is about 2^-18 / 3 ~ 1.3e-6.
    opt.rtol = std::ldexp(1.0, -8);
    opt.max_nmse = 1e-5;
    EXPECT_TRUE(AllClose(GpuFwd(xb, wb, t, d, DType::kBF16), ReferenceFwd(xb, wb, t, d), opt));
  }
}

TEST(RmsNormCudaTest, FusedAddEqualsAddThenNormBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 9, d = 1000;
  const std::vector<float> x = RandomVector(t * d, 3), delta = RandomVector(t * d, 4);
  const std::vector<float> w = RandomVector(d, 5, 0.5f, 1.5f);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const Context& ctx = GpuTestContext();
    Tensor xd = ToDevice(x, {t, d}, dtype), dd = ToDevice(delta, {t, d}, dtype);
    Tensor wd = ToDevice(w, {d}, dtype);
    Tensor sum = Tensor::Empty({t, d}, dtype, Device::kCUDA);
    Tensor y = Tensor::Empty({t, d}, dtype, Device::kCUDA);
    Tensor rstd = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::AddRmsNormFwd(ctx, xd, dd, wd, kEps, sum, y, rstd));
    // sum: one fp32 add of the stored inputs, rounded to the storage type.
    const std::vector<float> xs = ToHostFloats(xd), ds = ToHostFloats(dd);
    std::vector<float> want_sum(t * d);
    for (int64_t i = 0; i < t * d; ++i) want_sum[i] = xs[i] + ds[i];
    if (dtype == DType::kBF16) want_sum = RoundedToBf16(want_sum);
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(sum), want_sum));
    Tensor y2 = Tensor::Empty({t, d}, dtype, Device::kCUDA);
    Tensor rstd2 = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::RmsNormFwd(ctx, sum, wd, kEps, y2, rstd2));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(y), ToHostFloats(y2)));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(rstd), ToHostFloats(rstd2)));
    // In place (sum aliases x): the same bits again.
    TANDEM_ASSERT_OK(cuda::AddRmsNormFwd(ctx, xd, dd, wd, kEps, xd, y2, rstd2));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(xd), want_sum));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(y2), ToHostFloats(y)));
  }
}

TEST(RmsNormCudaTest, RowsAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 600, d = 2048;
  const std::vector<float> x = RandomVector(t * d, 6), w = RandomVector(d, 7);
  const std::vector<float> full = GpuFwd(x, w, t, d, DType::kF32);
  for (const auto& [rows, begin] : {std::pair<int64_t, int64_t>{1, 0}, {1, 599}, {37, 11}}) {
    const std::vector<float> part(x.begin() + begin * d, x.begin() + (begin + rows) * d);
    EXPECT_TRUE(BitwiseEqual(GpuFwd(part, w, rows, d, DType::kF32),
                             {full.data() + begin * d, static_cast<size_t>(rows * d)}));
  }
}

TEST(RmsNormCudaTest, BackwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const auto& [t, d] : kShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << t << " D=" << d);
    const std::vector<float> x = RandomVector(t * d, 8), w = RandomVector(d, 9, 0.5f, 1.5f);
    const std::vector<float> dy = RandomVector(t * d, 10), dw0 = RandomVector(d, 11);
    const std::vector<float> rstd = RandomVector(t, 12, 0.5f, 2.0f);
    Tensor dx_cpu = Tensor::Empty({t, d}, DType::kF32);
    Tensor dw_cpu = Tensor::FromVector(dw0, {d});
    TANDEM_ASSERT_OK(RmsNormBwd(Context::Cpu(1), Tensor::FromVector(x, {t, d}),
                                Tensor::FromVector(w, {d}), Tensor::FromVector(rstd, {t}),
                                Tensor::FromVector(dy, {t, d}), dx_cpu, dw_cpu));
    Tensor dx = Tensor::Empty({t, d}, DType::kF32, Device::kCUDA);
    Tensor dw = ToDevice(dw0, {d});  // accumulated into
    TANDEM_ASSERT_OK(cuda::RmsNormBwd(GpuTestContext(), ToDevice(x, {t, d}), ToDevice(w, {d}),
                                      ToDevice(rstd, {t}), ToDevice(dy, {t, d}), dx, dw));
    // dx = dn·rstd − x·c: the dot product's order differs from the CPU's; scale by max |dx|.
    const std::vector<float> dx_ref = Vec(dx_cpu);
    double scale = 1e-30;
    for (float v : dx_ref) scale = std::max(scale, double{std::fabs(v)});
    EXPECT_TRUE(AllClose(ToHostFloats(dx), testing::ToDouble(dx_ref),
                         {.atol = 1e-5 * scale, .rtol = 1e-5, .shape = {t, d}}));
    EXPECT_TRUE(AllClose(ToHostFloats(dw), testing::ToDouble(Vec(dw_cpu)),
                         {.atol = 1e-5 * (1.0 + t), .rtol = 1e-5}));
  }
}

TEST(RmsNormCudaTest, RejectsBadArguments) {
  const Context& ctx = GpuTestContext();
  Tensor y = Tensor::Empty({2, 3}, DType::kF32), rstd = Tensor::Empty({2}, DType::kF32);
  absl::Status s = cuda::RmsNormFwd(ctx, Tensor::Zeros({2, 3}, DType::kF32),
                                    Tensor::Zeros({3}, DType::kF32), kEps, y, rstd);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "x: expected f32 [*, *] on cuda, got f32 [2, 3] on cpu");
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor xd = Tensor::View(fake, {2, 3}, DType::kBF16, Device::kCUDA);
  Tensor wd = Tensor::View(fake, {4}, DType::kF32, Device::kCUDA);
  s = cuda::RmsNormFwd(ctx, xd, wd, kEps, y, rstd);
  EXPECT_TRUE(absl::StartsWith(s.message(), "w: expected f32 [3] on cuda")) << s;
}

}  // namespace
}  // namespace tandem::kernels

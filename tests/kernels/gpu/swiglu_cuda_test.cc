// Tests for the CUDA SwiGLU: forward and backward against the CPU kernels (f32 storage, a few
// ulps apart because expf differs) and with bf16 storage on rounded inputs, plus argument errors.
#include "kernels/swiglu/swiglu_cuda.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/swiglu/swiglu.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::AllClose;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::RoundedToBf16;
using testing::ToDevice;
using testing::ToHostFloats;

struct Outputs {
  std::vector<float> h, dgate, dup;
};

Outputs Cpu(const std::vector<float>& g, const std::vector<float>& u, const std::vector<float>& dh,
            int64_t t, int64_t n) {
  Tensor h = Tensor::Empty({t, n}, DType::kF32), dg = Tensor::Empty({t, n}, DType::kF32);
  Tensor du = Tensor::Empty({t, n}, DType::kF32);
  Tensor gt = Tensor::FromVector(g, {t, n}), ut = Tensor::FromVector(u, {t, n});
  EXPECT_TRUE(SwigluFwd(Context::Cpu(1), gt, ut, h).ok());
  EXPECT_TRUE(SwigluBwd(Context::Cpu(1), gt, ut, Tensor::FromVector(dh, {t, n}), dg, du).ok());
  auto vec = [](const Tensor& x) {
    return std::vector<float>(x.data<float>(), x.data<float>() + x.numel());
  };
  return {vec(h), vec(dg), vec(du)};
}

Outputs Gpu(const std::vector<float>& g, const std::vector<float>& u, const std::vector<float>& dh,
            int64_t t, int64_t n, DType dtype) {
  Tensor gd = ToDevice(g, {t, n}, dtype), ud = ToDevice(u, {t, n}, dtype);
  Tensor h = Tensor::Empty({t, n}, dtype, Device::kCUDA);
  Tensor dg = Tensor::Empty({t, n}, dtype, Device::kCUDA);
  Tensor du = Tensor::Empty({t, n}, dtype, Device::kCUDA);
  const Context& ctx = GpuTestContext();
  absl::Status s = cuda::SwigluFwd(ctx, gd, ud, h);
  EXPECT_TRUE(s.ok()) << s;
  s = cuda::SwigluBwd(ctx, gd, ud, ToDevice(dh, {t, n}, dtype), dg, du);
  EXPECT_TRUE(s.ok()) << s;
  return {ToHostFloats(h), ToHostFloats(dg), ToHostFloats(du)};
}

void ExpectClose(const Outputs& got, const Outputs& want, double rtol, const Shape& shape) {
  // With bf16 storage (rtol = 2^-8) pure output rounding gives an NMSE near 2^-18 / 3 ~ 1.3e-6.
  const testing::CompareOptions opt{
      .atol = 1e-6, .rtol = rtol, .max_nmse = rtol > 1e-4 ? 1e-5 : 1e-8, .shape = shape};
  EXPECT_TRUE(AllClose(got.h, testing::ToDouble(want.h), opt)) << "h";
  EXPECT_TRUE(AllClose(got.dgate, testing::ToDouble(want.dgate), opt)) << "dgate";
  EXPECT_TRUE(AllClose(got.dup, testing::ToDouble(want.dup), opt)) << "dup";
}

TEST(SwigluCudaTest, MatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const auto& [t, n] : {std::pair<int64_t, int64_t>{1, 1}, {3, 257}, {64, 5632}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << t << " I=" << n);
    const std::vector<float> g = RandomVector(t * n, 1, -8.0f, 8.0f);
    const std::vector<float> u = RandomVector(t * n, 2, -2.0f, 2.0f);
    const std::vector<float> dh = RandomVector(t * n, 3);
    // expf is within 2 ulps; each output is a handful of roundings on top.
    ExpectClose(Gpu(g, u, dh, t, n, DType::kF32), Cpu(g, u, dh, t, n), 1e-5, {t, n});
    // bf16 storage: CPU on the rounded inputs, outputs within one bf16 rounding.
    const std::vector<float> gb = RoundedToBf16(g), ub = RoundedToBf16(u), db = RoundedToBf16(dh);
    ExpectClose(Gpu(gb, ub, db, t, n, DType::kBF16), Cpu(gb, ub, db, t, n), std::ldexp(1.0, -8),
                {t, n});
  }
}

TEST(SwigluCudaTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor g = Tensor::View(fake, {2, 3}, DType::kF32, Device::kCUDA);
  Tensor u = Tensor::View(fake, {2, 4}, DType::kF32, Device::kCUDA);
  Tensor h = Tensor::View(fake, {2, 3}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::SwigluFwd(GpuTestContext(), g, u, h);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "up: expected f32 [2, 3] on cuda, got f32 [2, 4] on cuda");
  Tensor cpu = Tensor::Zeros({2, 3}, DType::kF32);
  s = cuda::SwigluFwd(GpuTestContext(), cpu, cpu, h);
  EXPECT_EQ(s.message(), "gate: expected f32 [*, *] on cuda, got f32 [2, 3] on cpu");
}

}  // namespace
}  // namespace tandem::kernels

// Tests for the CUDA cross-entropy: loss, lse and gradient against the CPU kernels with a mask
// (padding targets of −100 where the mask is 0), masked rows exact zeros, the loss of one token
// equal bitwise to −cuda::LogprobFromLogits, and argument errors.
#include "kernels/cross_entropy/cross_entropy_cuda.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cross_entropy/cross_entropy.h"
#include "kernels/lm_head_logprob/lm_head_logprob_cuda.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::ToDevice;
using testing::ToDouble;
using testing::ToHostFloats;

Tensor DeviceI32(const std::vector<int32_t>& v) {
  auto d = cuda::CopyToDevice(GpuTestContext(), Tensor::FromVector(v, {int64_t(v.size())}));
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : Tensor();
}

std::vector<float> Vec(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

TEST(CrossEntropyCudaTest, MatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const auto& [t, v] : {std::pair<int64_t, int64_t>{1, 1}, {9, 1000}, {33, 32000}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << t << " V=" << v);
    const std::vector<float> x = RandomVector(t * v, 1, -6.0f, 6.0f);
    std::vector<int32_t> tg(t);
    std::vector<float> mask(t);
    for (int64_t i = 0; i < t; ++i) {
      mask[i] = i % 3 == 1 ? 0.0f : (i % 5 == 0 ? 0.5f : 1.0f);
      tg[i] = mask[i] == 0.0f ? -100 : static_cast<int32_t>((i * 7919) % v);
    }
    const float dloss = 1.7f;
    Tensor loss_c = Tensor::Empty({1}, DType::kF32), lse_c = Tensor::Empty({t}, DType::kF32);
    Tensor g_c = Tensor::Empty({t, v}, DType::kF32);
    const Context cpu = Context::Cpu(1);
    Tensor xt = Tensor::FromVector(x, {t, v}), tt = Tensor::FromVector(tg, {t});
    Tensor mt = Tensor::FromVector(mask, {t});
    TANDEM_ASSERT_OK(CrossEntropyFwd(cpu, xt, tt, mt, loss_c, lse_c));
    TANDEM_ASSERT_OK(CrossEntropyBwd(cpu, xt, tt, mt, lse_c, dloss, g_c));
    const Context& ctx = GpuTestContext();
    Tensor xd = ToDevice(x, {t, v}), td = DeviceI32(tg), md = ToDevice(mask, {t});
    Tensor loss = Tensor::Empty({1}, DType::kF32, Device::kCUDA);
    Tensor lse = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
    Tensor g = Tensor::Empty({t, v}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::CrossEntropyFwd(ctx, xd, td, md, loss, lse));
    TANDEM_ASSERT_OK(cuda::CrossEntropyBwd(ctx, xd, td, md, lse, dloss, g));
    // lse (<= 6 + log V) and each −logprob carry a few ulps of the row sums' order.
    EXPECT_TRUE(AllClose(ToHostFloats(lse), ToDouble(Vec(lse_c)), {.atol = 1e-5, .rtol = 1e-6}));
    EXPECT_TRUE(AllClose(ToHostFloats(loss), ToDouble(Vec(loss_c)), {.atol = 1e-5, .rtol = 1e-6}));
    const std::vector<float> gg = ToHostFloats(g);
    EXPECT_TRUE(AllClose(gg, ToDouble(Vec(g_c)), {.atol = 1e-6, .rtol = 1e-5, .shape = {t, v}}));
    for (int64_t i = 0; i < t; ++i) {
      if (mask[i] != 0.0f) continue;
      for (int64_t j = 0; j < v; ++j) ASSERT_EQ(gg[i * v + j], 0.0f) << i << ", " << j;
    }
  }
}

TEST(CrossEntropyCudaTest, OneTokenLossIsMinusTheLogprobBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 4, v = 5000;
  const std::vector<float> x = RandomVector(t * v, 2, -6.0f, 6.0f);
  const std::vector<int32_t> tg = {-100, 17, -100, -100};
  const Context& ctx = GpuTestContext();
  Tensor xd = ToDevice(x, {t, v}), td = DeviceI32(tg);
  Tensor loss = Tensor::Empty({1}, DType::kF32, Device::kCUDA);
  Tensor lse = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::CrossEntropyFwd(ctx, xd, td, ToDevice({0, 1, 0, 0}, {t}), loss, lse));
  Tensor lp = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
  Tensor lse2 = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::LogprobFromLogits(ctx, xd, td, 1.0f, lp, lse2));
  const float want = -ToHostFloats(lp)[1];
  EXPECT_TRUE(BitwiseEqual(ToHostFloats(loss), {&want, 1}));
  EXPECT_TRUE(BitwiseEqual(ToHostFloats(lse), ToHostFloats(lse2)));
}

TEST(CrossEntropyCudaTest, RejectsBadArguments) {
  const Context& ctx = GpuTestContext();
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor logits = Tensor::View(fake, {3, 8}, DType::kF32, Device::kCUDA);
  Tensor tg = Tensor::View(fake, {3}, DType::kI32, Device::kCUDA);
  Tensor mask = Tensor::View(fake, {3}, DType::kF32, Device::kCUDA);
  Tensor loss = Tensor::View(fake, {2}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::CrossEntropyFwd(ctx, logits, tg, mask, loss, mask);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "loss: expected f32 [1] on cuda, got f32 [2] on cuda");
  s = cuda::CrossEntropyFwd(ctx, logits, mask, mask, loss, mask);
  EXPECT_EQ(s.message(), "targets: expected i32 [3] on cuda, got f32 [3] on cuda");
}

}  // namespace
}  // namespace tandem::kernels

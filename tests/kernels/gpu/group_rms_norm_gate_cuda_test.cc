// Tests for the CUDA grouped RMSNorm + sigmoid gate: forward and backward against the CPU kernels
// (f32 storage; bf16 storage on rounded inputs), rows bitwise identical in any batch, dw
// accumulated into, and argument errors (checked without a GPU too).
#include "kernels/group_rms_norm_gate/group_rms_norm_gate_cuda.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/group_rms_norm_gate/group_rms_norm_gate.h"
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
using testing::ToDouble;
using testing::ToHostFloats;

const int64_t kShapes[][3] = {{1, 1, 1}, {3, 8, 2}, {5, 512, 4}, {4, 2048, 16}, {2, 3000, 1}};

std::vector<float> Vec(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

GroupRmsNormGateParams Params(int64_t groups) { return {.groups = groups, .eps = 1e-6f}; }

std::vector<float> GpuFwd(int64_t t, int64_t ch, int64_t groups, const std::vector<float>& x,
                          const std::vector<float>& gate, const std::vector<float>& w,
                          DType dtype) {
  Tensor y = Tensor::Empty({t, ch}, dtype, Device::kCUDA);
  Tensor rstd = Tensor::Empty({t, groups}, DType::kF32, Device::kCUDA);
  const absl::Status s =
      cuda::GroupRmsNormGateFwd(GpuTestContext(), Params(groups), ToDevice(x, {t, ch}, dtype),
                                ToDevice(gate, {t, ch}, dtype), ToDevice(w, {ch}, dtype), y, rstd);
  EXPECT_TRUE(s.ok()) << s;
  return ToHostFloats(y);
}

std::vector<float> CpuFwd(int64_t t, int64_t ch, int64_t groups, const std::vector<float>& x,
                          const std::vector<float>& gate, const std::vector<float>& w) {
  Tensor y = Tensor::Empty({t, ch}, DType::kF32), rstd = Tensor::Empty({t, groups}, DType::kF32);
  EXPECT_TRUE(GroupRmsNormGateFwd(Context::Cpu(1), Params(groups), Tensor::FromVector(x, {t, ch}),
                                  Tensor::FromVector(gate, {t, ch}), Tensor::FromVector(w, {ch}), y,
                                  rstd)
                  .ok());
  return Vec(y);
}

TEST(GroupRmsNormGateCudaTest, ForwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const auto& [t, ch, groups] : kShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << t << " Ch=" << ch << " groups=" << groups);
    const std::vector<float> x = RandomVector(t * ch, 1, -2.0f, 2.0f);
    const std::vector<float> gate = RandomVector(t * ch, 2, -6.0f, 6.0f);
    const std::vector<float> w = RandomVector(ch, 3, 0.5f, 1.5f);
    // rstd's sum order and expf (2 ulps) differ from the CPU: a few ulps per output.
    EXPECT_TRUE(AllClose(GpuFwd(t, ch, groups, x, gate, w, DType::kF32),
                         ToDouble(CpuFwd(t, ch, groups, x, gate, w)),
                         {.atol = 1e-6, .rtol = 1e-5, .shape = {t, ch}}));
    const std::vector<float> xb = RoundedToBf16(x), gb = RoundedToBf16(gate);
    const std::vector<float> wb = RoundedToBf16(w);
    EXPECT_TRUE(AllClose(GpuFwd(t, ch, groups, xb, gb, wb, DType::kBF16),
                         ToDouble(CpuFwd(t, ch, groups, xb, gb, wb)),
                         {.atol = 1e-6, .rtol = std::ldexp(1.0, -8), .max_nmse = 1e-5}));
  }
}

TEST(GroupRmsNormGateCudaTest, RowsAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 70, ch = 2048, groups = 16;
  const std::vector<float> x = RandomVector(t * ch, 4), gate = RandomVector(t * ch, 5);
  const std::vector<float> w = RandomVector(ch, 6);
  const std::vector<float> full = GpuFwd(t, ch, groups, x, gate, w, DType::kBF16);
  for (const auto& [n, begin] : {std::pair<int64_t, int64_t>{1, 0}, {1, 69}, {23, 9}}) {
    const std::vector<float> px(x.begin() + begin * ch, x.begin() + (begin + n) * ch);
    const std::vector<float> pg(gate.begin() + begin * ch, gate.begin() + (begin + n) * ch);
    EXPECT_TRUE(BitwiseEqual(GpuFwd(n, ch, groups, px, pg, w, DType::kBF16),
                             {full.data() + begin * ch, size_t(n * ch)}));
  }
}

TEST(GroupRmsNormGateCudaTest, BackwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const auto& [t, ch, groups] : kShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << t << " Ch=" << ch << " groups=" << groups);
    const std::vector<float> x = RandomVector(t * ch, 7), gate = RandomVector(t * ch, 8, -4, 4);
    const std::vector<float> w = RandomVector(ch, 9, 0.5f, 1.5f), dy = RandomVector(t * ch, 10);
    const std::vector<float> rstd = RandomVector(t * groups, 11, 0.5f, 2.0f);
    const std::vector<float> dw0 = RandomVector(ch, 12);
    Tensor dx_c = Tensor::Empty({t, ch}, DType::kF32), dg_c = Tensor::Empty({t, ch}, DType::kF32);
    Tensor dw_c = Tensor::FromVector(dw0, {ch});
    TANDEM_ASSERT_OK(GroupRmsNormGateBwd(
        Context::Cpu(1), Params(groups), Tensor::FromVector(x, {t, ch}),
        Tensor::FromVector(gate, {t, ch}), Tensor::FromVector(w, {ch}),
        Tensor::FromVector(rstd, {t, groups}), Tensor::FromVector(dy, {t, ch}), dx_c, dg_c, dw_c));
    Tensor dx = Tensor::Empty({t, ch}, DType::kF32, Device::kCUDA);
    Tensor dg = Tensor::Empty({t, ch}, DType::kF32, Device::kCUDA);
    Tensor dw = ToDevice(dw0, {ch});  // accumulated into
    TANDEM_ASSERT_OK(cuda::GroupRmsNormGateBwd(
        GpuTestContext(), Params(groups), ToDevice(x, {t, ch}), ToDevice(gate, {t, ch}),
        ToDevice(w, {ch}), ToDevice(rstd, {t, groups}), ToDevice(dy, {t, ch}), dx, dg, dw));
    const std::vector<float> dx_ref = Vec(dx_c);
    double scale = 1e-30;
    for (float v : dx_ref) scale = std::max(scale, double{std::fabs(v)});
    EXPECT_TRUE(AllClose(ToHostFloats(dx), ToDouble(dx_ref),
                         {.atol = 1e-5 * scale, .rtol = 1e-5, .shape = {t, ch}}));
    EXPECT_TRUE(AllClose(ToHostFloats(dg), ToDouble(Vec(dg_c)),
                         {.atol = 1e-7, .rtol = 1e-5, .shape = {t, ch}}));
    EXPECT_TRUE(
        AllClose(ToHostFloats(dw), ToDouble(Vec(dw_c)), {.atol = 1e-5 * (1.0 + t), .rtol = 1e-5}));
  }
}

TEST(GroupRmsNormGateCudaTest, RejectsBadArguments) {
  const Context& ctx = GpuTestContext();
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor x = Tensor::View(fake, {2, 6}, DType::kF32, Device::kCUDA);
  Tensor w = Tensor::View(fake, {6}, DType::kF32, Device::kCUDA);
  Tensor rstd = Tensor::View(fake, {2, 4}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::GroupRmsNormGateFwd(ctx, Params(4), x, x, w, x, rstd);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "groups: expected a divisor of the 6 channels, got 4");
  Tensor host = Tensor::Zeros({2, 6}, DType::kF32);
  s = cuda::GroupRmsNormGateFwd(ctx, Params(2), x, host, w, x, rstd);
  EXPECT_EQ(s.message(), "gate: expected f32 [2, 6] on cuda, got f32 [2, 6] on cpu");
}

}  // namespace
}  // namespace tandem::kernels

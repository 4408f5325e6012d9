// Tests for the CUDA per-head RMSNorm + RoPE: forward and backward against the CPU kernels (f32
// storage; bf16 storage on rounded inputs), rotary_dim 0 equal bitwise to cuda::RmsNormFwd, head
// rows bitwise identical in any batch, positions on either device, and argument errors.
#include "kernels/qk_norm_rope/qk_norm_rope_cuda.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/qk_norm_rope/qk_norm_rope.h"
#include "kernels/rms_norm/rms_norm_cuda.h"
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

struct Shape4 {
  int64_t t, h, d, r;
};
const Shape4 kShapes[] = {{1, 1, 8, 8},     {3, 2, 64, 32}, {5, 4, 128, 64},
                          {7, 3, 128, 128}, {2, 2, 128, 0}, {4, 2, 300, 100}};

std::vector<int32_t> Positions(int64_t t, uint64_t seed) {
  std::vector<int32_t> pos;
  for (float f : RandomVector(t, seed, 0.0f, 200000.0f)) pos.push_back(static_cast<int32_t>(f));
  return pos;
}

std::vector<float> Vec(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

Tensor DeviceI32(const std::vector<int32_t>& v) {
  auto d = cuda::CopyToDevice(GpuTestContext(), Tensor::FromVector(v, {int64_t(v.size())}));
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : Tensor();
}

QkNormRopeParams Params(int64_t r) { return {.rotary_dim = r, .theta = 1e6, .eps = 1e-6f}; }

std::vector<float> GpuFwd(const Shape4& s, const std::vector<float>& x, const std::vector<float>& w,
                          const Tensor& pos, DType dtype) {
  Tensor y = Tensor::Empty({s.t, s.h, s.d}, dtype, Device::kCUDA);
  Tensor rstd = Tensor::Empty({s.t, s.h}, DType::kF32, Device::kCUDA);
  const absl::Status st =
      cuda::QkNormRopeFwd(GpuTestContext(), Params(s.r), ToDevice(x, {s.t, s.h, s.d}, dtype),
                          ToDevice(w, {s.d}, dtype), pos, y, rstd);
  EXPECT_TRUE(st.ok()) << st;
  return ToHostFloats(y);
}

std::vector<float> CpuFwd(const Shape4& s, const std::vector<float>& x, const std::vector<float>& w,
                          const std::vector<int32_t>& pos) {
  Tensor y = Tensor::Empty({s.t, s.h, s.d}, DType::kF32);
  Tensor rstd = Tensor::Empty({s.t, s.h}, DType::kF32);
  EXPECT_TRUE(QkNormRopeFwd(Context::Cpu(1), Params(s.r), Tensor::FromVector(x, {s.t, s.h, s.d}),
                            Tensor::FromVector(w, {s.d}), Tensor::FromVector(pos, {s.t}), y, rstd)
                  .ok());
  return Vec(y);
}

TEST(QkNormRopeCudaTest, ForwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const Shape4& s : kShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "T=" << s.t << " H=" << s.h << " D=" << s.d << " R=" << s.r);
    const std::vector<float> x = RandomVector(s.t * s.h * s.d, 1, -2.0f, 2.0f);
    const std::vector<float> w = RandomVector(s.d, 2, 0.5f, 1.5f);
    const std::vector<int32_t> pos = Positions(s.t, 3);
    // Same cos/sin bits; only rstd's sum order differs (a few ulps), |y| <= ~5.
    const testing::CompareOptions opt{.atol = 1e-6, .rtol = 1e-5, .shape = {s.t, s.h, s.d}};
    const std::vector<float> want = CpuFwd(s, x, w, pos);
    EXPECT_TRUE(AllClose(GpuFwd(s, x, w, Tensor::FromVector(pos, {s.t}), DType::kF32),
                         ToDouble(want), opt));
    // Positions on the GPU: read back to the host, the same table, the same bits.
    EXPECT_TRUE(BitwiseEqual(GpuFwd(s, x, w, DeviceI32(pos), DType::kF32),
                             GpuFwd(s, x, w, Tensor::FromVector(pos, {s.t}), DType::kF32)));
    // bf16 storage: the CPU on the rounded inputs, outputs within one bf16 rounding.
    const std::vector<float> xb = RoundedToBf16(x), wb = RoundedToBf16(w);
    EXPECT_TRUE(AllClose(GpuFwd(s, xb, wb, DeviceI32(pos), DType::kBF16),
                         ToDouble(CpuFwd(s, xb, wb, pos)),
                         {.atol = 1e-6, .rtol = std::ldexp(1.0, -8), .max_nmse = 1e-5}));
  }
}

TEST(QkNormRopeCudaTest, NoRotationIsRmsNormBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Shape4 s{9, 4, 128, 0};
  const std::vector<float> x = RandomVector(s.t * s.h * s.d, 4), w = RandomVector(s.d, 5);
  const std::vector<float> y = GpuFwd(s, x, w, DeviceI32(Positions(s.t, 6)), DType::kF32);
  Tensor y2 = Tensor::Empty({s.t * s.h, s.d}, DType::kF32, Device::kCUDA);
  Tensor rstd = Tensor::Empty({s.t * s.h}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::RmsNormFwd(GpuTestContext(), ToDevice(x, {s.t * s.h, s.d}),
                                    ToDevice(w, {s.d}), 1e-6f, y2, rstd));
  EXPECT_TRUE(BitwiseEqual(y, ToHostFloats(y2)));
}

TEST(QkNormRopeCudaTest, RowsAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Shape4 s{50, 4, 128, 64};
  const int64_t row = s.h * s.d;
  const std::vector<float> x = RandomVector(s.t * row, 7), w = RandomVector(s.d, 8);
  const std::vector<int32_t> pos = Positions(s.t, 9);
  const std::vector<float> full = GpuFwd(s, x, w, DeviceI32(pos), DType::kBF16);
  for (const auto& [n, begin] : {std::pair<int64_t, int64_t>{1, 0}, {1, 49}, {17, 5}}) {
    const std::vector<float> px(x.begin() + begin * row, x.begin() + (begin + n) * row);
    const std::vector<int32_t> pp(pos.begin() + begin, pos.begin() + begin + n);
    EXPECT_TRUE(BitwiseEqual(GpuFwd({n, s.h, s.d, s.r}, px, w, DeviceI32(pp), DType::kBF16),
                             {full.data() + begin * row, size_t(n * row)}));
  }
}

// A token's rotation does not depend on where its cos/sin row came from: the context's table by
// position (before and after it grows) or, for a call with a position past the table's reach, a
// table of that call's own rows.
TEST(QkNormRopeCudaTest, TablePathsGiveTheSameBits) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Shape4 one{1, 2, 128, 64}, two{2, 2, 128, 64};
  const int64_t row = one.h * one.d;
  const std::vector<float> x = RandomVector(two.t * row, 31), w = RandomVector(two.d, 32);
  const std::vector<float> x0(x.begin(), x.begin() + row);
  const std::vector<float> alone = GpuFwd(one, x0, w, DeviceI32({7}), DType::kF32);
  for (int32_t later : {100000, 300000, 2000000000}) {
    SCOPED_TRACE(::testing::Message() << "with a token at position " << later);
    const std::vector<int32_t> pos = {7, later};
    const std::vector<float> both = GpuFwd(two, x, w, DeviceI32(pos), DType::kF32);
    EXPECT_TRUE(BitwiseEqual({both.data(), size_t(row)}, alone));
    const testing::CompareOptions opt{.atol = 1e-6, .rtol = 1e-5, .shape = {two.t, two.h, two.d}};
    EXPECT_TRUE(AllClose(both, ToDouble(CpuFwd(two, x, w, pos)), opt));
  }
  EXPECT_TRUE(BitwiseEqual(GpuFwd(one, x0, w, DeviceI32({7}), DType::kF32), alone));
}

TEST(QkNormRopeCudaTest, BackwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const Shape4& s : kShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "T=" << s.t << " H=" << s.h << " D=" << s.d << " R=" << s.r);
    const int64_t n = s.t * s.h * s.d;
    const std::vector<float> x = RandomVector(n, 10), w = RandomVector(s.d, 11, 0.5f, 1.5f);
    const std::vector<float> dy = RandomVector(n, 12), dw0 = RandomVector(s.d, 13);
    const std::vector<float> rstd = RandomVector(s.t * s.h, 14, 0.5f, 2.0f);
    const std::vector<int32_t> pos = Positions(s.t, 15);
    Tensor dx_c = Tensor::Empty({s.t, s.h, s.d}, DType::kF32);
    Tensor dw_c = Tensor::FromVector(dw0, {s.d});
    TANDEM_ASSERT_OK(QkNormRopeBwd(
        Context::Cpu(1), Params(s.r), Tensor::FromVector(x, {s.t, s.h, s.d}),
        Tensor::FromVector(w, {s.d}), Tensor::FromVector(pos, {s.t}),
        Tensor::FromVector(rstd, {s.t, s.h}), Tensor::FromVector(dy, {s.t, s.h, s.d}), dx_c, dw_c));
    Tensor dx = Tensor::Empty({s.t, s.h, s.d}, DType::kF32, Device::kCUDA);
    Tensor dw = ToDevice(dw0, {s.d});  // accumulated into
    TANDEM_ASSERT_OK(cuda::QkNormRopeBwd(
        GpuTestContext(), Params(s.r), ToDevice(x, {s.t, s.h, s.d}), ToDevice(w, {s.d}),
        DeviceI32(pos), ToDevice(rstd, {s.t, s.h}), ToDevice(dy, {s.t, s.h, s.d}), dx, dw));
    // dx = dn·rstd − x·c: the dot product's order differs from the CPU's; scale by max |dx|.
    const std::vector<float> dx_ref = Vec(dx_c);
    double scale = 1e-30;
    for (float v : dx_ref) scale = std::max(scale, double{std::fabs(v)});
    EXPECT_TRUE(AllClose(ToHostFloats(dx), ToDouble(dx_ref),
                         {.atol = 1e-5 * scale, .rtol = 1e-5, .shape = {s.t, s.h, s.d}}));
    // dw: the same rows in the same order as the CPU; only contraction-free rounding differs.
    EXPECT_TRUE(AllClose(ToHostFloats(dw), ToDouble(Vec(dw_c)),
                         {.atol = 1e-5 * (1.0 + s.t * s.h), .rtol = 1e-5}));
  }
}

TEST(QkNormRopeCudaTest, RejectsBadArguments) {
  const Context& ctx = GpuTestContext();
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor x = Tensor::View(fake, {2, 1, 8}, DType::kF32, Device::kCUDA);
  Tensor w = Tensor::View(fake, {8}, DType::kF32, Device::kCUDA);
  Tensor y = Tensor::View(reinterpret_cast<void*>(0x2000), {2, 1, 8}, DType::kF32, Device::kCUDA);
  Tensor rstd = Tensor::View(fake, {2, 1}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::QkNormRopeFwd(
      ctx, Params(8), x, w, Tensor::FromVector(std::vector<int32_t>{0, -3}, {2}), y, rstd);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "positions: positions[1] = -3 is negative");
  s = cuda::QkNormRopeFwd(ctx, Params(3), x, w, Tensor::Zeros({2}, DType::kI32), y, rstd);
  EXPECT_EQ(s.message(), "rotary_dim: expected an even value in [0, 8], got 3");
  s = cuda::QkNormRopeFwd(ctx, Params(8), x, w, Tensor::Zeros({2}, DType::kI32), x, rstd);
  EXPECT_EQ(s.message(), "y: may not alias x");
}

}  // namespace
}  // namespace tandem::kernels

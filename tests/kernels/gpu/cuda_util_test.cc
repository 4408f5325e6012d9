// Tests for the CUDA plumbing: error statuses name file and line, tensors survive a round trip
// through the device, and the device f32 -> bf16 cast gives the host FloatToBf16's bits (special
// values included). Error and host-side cases run without a GPU.
#include "kernels/core/cuda_util.h"

#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels::cuda {
namespace {

using testing::GpuTestContext;

absl::Status FailWith(cudaError_t error, int* line) {
  *line = __LINE__ + 1;
  TANDEM_CUDA_RETURN_IF_ERROR(error);
  return absl::OkStatus();
}

TEST(CudaUtilTest, ErrorStatusNamesFileLineAndError) {
  int line = 0;
  EXPECT_TRUE(FailWith(cudaSuccess, &line).ok());
  absl::Status s = FailWith(cudaErrorInvalidValue, &line);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(
      s.message(), absl::StrCat("cuda_util_test.cc:", line, ": error: cudaErrorInvalidValue: ")))
      << s;
}

// Floats whose bf16 rounding is easy to get wrong: ties both ways, carries into the exponent,
// overflow to infinity, subnormals, signed zeros, infinities and NaNs with payloads.
std::vector<float> AwkwardFloats() {
  const uint32_t bits[] = {0x3f808000u, 0x3f818000u, 0x3f80c000u, 0x3f7fffffu, 0x7f7fffffu,
                           0x00000001u, 0x00008000u, 0x80018000u, 0x80000000u, 0x00000000u,
                           0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffa12345u};
  std::vector<float> v;
  for (uint32_t b : bits) {
    float f;
    std::memcpy(&f, &b, sizeof(f));
    v.push_back(f);
  }
  for (float f : testing::RandomVector(1000, 3, -1e4f, 1e4f)) v.push_back(f);
  return v;
}

void ExpectCastMatchesHost(const Tensor& f32, const std::vector<float>& values) {
  auto bf16 = ToBf16(GpuTestContext(), f32);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  ASSERT_EQ(bf16->dtype(), DType::kBF16);
  auto host = CopyToHost(GpuTestContext(), *bf16);
  ASSERT_TRUE(host.ok()) << host.status();
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(host->data<uint16_t>()[i], FloatToBf16(values[i])) << "element " << i;
  }
  auto back = ToF32(GpuTestContext(), *bf16);
  ASSERT_TRUE(back.ok()) << back.status();
  std::vector<float> want(values.size());
  for (size_t i = 0; i < values.size(); ++i) want[i] = RoundToBf16(values[i]);
  EXPECT_TRUE(testing::BitwiseEqual(testing::ToHostFloats(*back), want));
}

TEST(CudaUtilTest, HostCastsWorkWithoutAGpu) {
  const std::vector<float> values = AwkwardFloats();
  const Shape shape = {static_cast<int64_t>(values.size())};
  ExpectCastMatchesHost(Tensor::FromVector(values, shape), values);
  EXPECT_FALSE(ToBf16(GpuTestContext(), Tensor::Zeros({2}, DType::kI32)).ok());
}

TEST(CudaUtilTest, DeviceCastMatchesHostBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const std::vector<float> values = AwkwardFloats();
  const Shape shape = {static_cast<int64_t>(values.size())};
  ExpectCastMatchesHost(testing::ToDevice(values, shape), values);
}

TEST(CudaUtilTest, CopiesRoundTrip) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Context& ctx = GpuTestContext();
  Tensor ints = Tensor::FromVector(std::vector<int32_t>{1, -2, 3, 2147483647, 5, 6}, {2, 3});
  auto dev = CopyToDevice(ctx, ints);
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(dev->device(), Device::kCUDA);
  EXPECT_EQ(dev->shape(), ints.shape());
  Tensor dev2 = Tensor::Empty({2, 3}, DType::kI32, Device::kCUDA);
  TANDEM_ASSERT_OK(CopyTensor(ctx, *dev, dev2));  // device to device
  auto back = CopyToHost(ctx, dev2);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(std::memcmp(back->raw_data(), ints.raw_data(), ints.nbytes()), 0);
  Tensor wrong = Tensor::Empty({3, 2}, DType::kI32, Device::kCUDA);
  EXPECT_EQ(CopyTensor(ctx, *dev, wrong).code(), absl::StatusCode::kInvalidArgument);
  TANDEM_ASSERT_OK(Synchronize(ctx));
}

}  // namespace
}  // namespace tandem::kernels::cuda

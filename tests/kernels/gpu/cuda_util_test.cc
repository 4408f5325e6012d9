// Tests for the CUDA plumbing: error statuses name file and line, tensors survive a round trip
// through the device, the device f32 -> bf16 cast gives the host FloatToBf16's bits (special
// values included), and staged uploads copy what the source held at the call. Error and host-side
// cases run without a GPU.
#include "kernels/core/cuda_util.h"

#include <algorithm>
#include <cstdint>
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

// Uploads reuse a small ring of pinned buffers: far more uploads than slots, on two streams, each
// source overwritten as soon as the call returns, behind a kernel-length delay on one stream so
// that copies are still queued when their slots come round again. Every destination must hold
// what its source held at the call, and a large copy (not staged) too.
TEST(CudaUtilTest, UploadAsyncCopiesWhatTheSourceHeldAtTheCall) {
  TANDEM_SKIP_WITHOUT_GPU();
  cudaStream_t streams[2];
  for (cudaStream_t& s : streams) ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  constexpr int kUploads = 100;  // three times round the ring
  const std::vector<size_t> sizes = {4, 1000, 70000, size_t{5} << 20};  // the last is not staged
  std::vector<void*> dst;
  std::vector<std::vector<uint8_t>> want;
  std::vector<uint8_t> src;
  for (int i = 0; i < kUploads; ++i) {
    const size_t bytes = sizes[i % sizes.size()];
    const cudaStream_t stream = streams[i % 2];
    if (i % 8 == 0) {  // queue ~1 ms of work ahead of the next copies on this stream
      void* scratch = nullptr;
      ASSERT_EQ(cudaMallocAsync(&scratch, size_t{256} << 20, stream), cudaSuccess);
      ASSERT_EQ(cudaMemsetAsync(scratch, i, size_t{256} << 20, stream), cudaSuccess);
      ASSERT_EQ(cudaFreeAsync(scratch, stream), cudaSuccess);
    }
    src.resize(bytes);
    for (size_t b = 0; b < bytes; ++b) src[b] = static_cast<uint8_t>(i * 31 + b * 7);
    want.push_back(src);
    void* d = nullptr;
    ASSERT_EQ(cudaMalloc(&d, bytes), cudaSuccess);
    dst.push_back(d);
    ASSERT_TRUE(UploadAsync(d, src.data(), bytes, stream).ok());
    std::fill(src.begin(), src.end(), uint8_t{0xEE});  // the caller reuses its buffer at once
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (int i = 0; i < kUploads; ++i) {
    std::vector<uint8_t> got(want[i].size());
    ASSERT_EQ(cudaMemcpy(got.data(), dst[i], got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(got, want[i]) << "upload " << i;
    cudaFree(dst[i]);
  }
  EXPECT_TRUE(UploadAsync(nullptr, nullptr, 0, streams[0]).ok());
  for (cudaStream_t s : streams) cudaStreamDestroy(s);
}

}  // namespace
}  // namespace tandem::kernels::cuda

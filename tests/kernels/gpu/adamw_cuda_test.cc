// Tests for the CUDA AdamW step: the parameters and both moments equal the CPU's bits over several
// steps (with and without weight decay, a size that is not a multiple of the block), and
// argument errors. The device sum of squares (the grad norm's) against the host's serial fp64 sum.
#include "kernels/adamw/adamw_cuda.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/adamw/adamw.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::BitwiseEqual;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::ToDevice;
using testing::ToHostFloats;

std::vector<float> Vec(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

TEST(AdamWCudaTest, StepsEqualCpuBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t rows = 37, cols = 1001;
  for (float wd : {0.0f, 0.1f}) {
    SCOPED_TRACE(::testing::Message() << "weight_decay=" << wd);
    const std::vector<float> w0 = RandomVector(rows * cols, 1);
    Tensor w_c = Tensor::FromVector(w0, {rows, cols});
    Tensor m_c = Tensor::Zeros({rows, cols}, DType::kF32),
           v_c = Tensor::Zeros({rows, cols}, DType::kF32);
    Tensor w = ToDevice(w0, {rows, cols});
    Tensor m = Tensor::Zeros({rows, cols}, DType::kF32, Device::kCUDA);
    Tensor v = Tensor::Zeros({rows, cols}, DType::kF32, Device::kCUDA);
    for (int64_t step = 1; step <= 5; ++step) {
      const AdamWParams p{.lr = 3e-4f, .weight_decay = wd, .step = step};
      const std::vector<float> g = RandomVector(rows * cols, 10 + step, -0.01f, 0.01f);
      TANDEM_ASSERT_OK(
          AdamWStep(Context::Cpu(1), p, w_c, Tensor::FromVector(g, {rows, cols}), m_c, v_c));
      TANDEM_ASSERT_OK(cuda::AdamWStep(GpuTestContext(), p, w, ToDevice(g, {rows, cols}), m, v));
    }
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(m), Vec(m_c)));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(v), Vec(v_c)));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(w), Vec(w_c)));
  }
}

TEST(AdamWCudaTest, RejectsBadArguments) {
  const Context& ctx = GpuTestContext();
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor w = Tensor::View(fake, {4}, DType::kF32, Device::kCUDA);
  Tensor g = Tensor::View(fake, {5}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::AdamWStep(ctx, {}, w, g, w, w);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "grad: expected f32 [4] on cuda, got f32 [5] on cuda");
  s = cuda::AdamWStep(ctx, {.step = 0}, w, w, w, w);
  EXPECT_EQ(s.message(), "step: expected >= 1, got 0");
}

// Squares of floats are exact in fp64, so only the adds round: the fixed trees and the host's
// serial order differ by far less than 1e-11 of the sum at a million terms. Two calls agree
// bitwise; sizes straddle the 8192-element segments.
TEST(AdamWCudaTest, SumOfSquaresMatchesTheHostSum) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Context ctx = Context::Cuda();
  for (int64_t n : {0, 1, 255, 8191, 8192, 8193, 1000003}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    const std::vector<float> x = RandomVector(n, 7 + n, -3.0f, 3.0f);
    const Tensor host = Tensor::FromVector(x, {n});
    const Tensor device = ToDevice(x, {n});
    absl::StatusOr<double> a = SumOfSquaresOnDevice(ctx, device);
    absl::StatusOr<double> b = cuda::SumOfSquares(ctx, device);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(std::memcmp(&*a, &*b, sizeof(double)), 0) << "two calls differ";
    const double want = SumOfSquares(host);
    EXPECT_NEAR(*a, want, 1e-11 * want);
    if (n > 0) {
      EXPECT_GT(*a, 0.0);
    }
  }
  // The host entry on a CPU context is the serial sum itself.
  const std::vector<float> x = RandomVector(1000, 3);
  const Tensor host = Tensor::FromVector(x, {1000});
  absl::StatusOr<double> cpu = SumOfSquaresOnDevice(GpuTestContext(), host);
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(*cpu, SumOfSquares(host));
  EXPECT_FALSE(cuda::SumOfSquares(ctx, host).ok());
  EXPECT_FALSE(SumOfSquaresOnDevice(ctx, ToDevice(x, {1000}, DType::kBF16)).ok());
}

}  // namespace
}  // namespace tandem::kernels

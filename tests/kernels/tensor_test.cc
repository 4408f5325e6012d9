// Tests for the core Tensor, bf16 conversion and the thread pool.
#include "kernels/core/tensor.h"

#include <atomic>
#include <cmath>

#include "gtest/gtest.h"
#include "kernels/core/bf16.h"
#include "kernels/core/context.h"

namespace tandem {
namespace {

TEST(TensorTest, EmptyZerosAndViews) {
  Tensor t = Tensor::Zeros({3, 4}, DType::kF32);
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
  Tensor rows = t.Rows(1, 3);
  EXPECT_EQ(rows.dim(0), 2);
  rows.data<float>()[0] = 5.0f;
  EXPECT_EQ(t.data<float>()[4], 5.0f);  // a view shares memory
  auto reshaped = t.Reshape({4, 3});
  ASSERT_TRUE(reshaped.ok());
  EXPECT_EQ(reshaped->dim(1), 3);
  EXPECT_FALSE(t.Reshape({5, 3}).ok());
  Tensor copy = t.Clone();
  copy.data<float>()[4] = 1.0f;
  EXPECT_EQ(t.data<float>()[4], 5.0f);
}

TEST(TensorTest, ExpectTensorNamesTheArgument) {
  Tensor t = Tensor::Zeros({7, 2, 64}, DType::kF32);
  EXPECT_TRUE(ExpectTensor(t, "q", DType::kF32, {-1, 2, 64}).ok());
  absl::Status s = ExpectTensor(t, "q", DType::kF32, {-1, 4, 64});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "q: expected f32 [*, 4, 64] on cpu, got f32 [7, 2, 64] on cpu");
  EXPECT_FALSE(ExpectTensor(t, "q", DType::kBF16, {7, 2, 64}).ok());
  EXPECT_FALSE(ExpectTensor(Tensor(), "k", DType::kF32, {1}).ok());
}

TEST(TensorTest, ExpectAligned16NamesTheArgumentAndTheRequirement) {
  Tensor t = Tensor::Zeros({8}, DType::kF32);  // CPU memory is 64-byte aligned
  EXPECT_TRUE(ExpectAligned16(t, "k", "must be aligned").ok());
  const Tensor off = Tensor::View(t.data<float>() + 1, {4}, DType::kF32, Device::kCPU);
  const absl::Status s = ExpectAligned16(off, "k", "bf16 data must be 16-byte aligned");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "k: bf16 data must be 16-byte aligned");
  const Tensor next = Tensor::View(t.data<float>() + 4, {4}, DType::kF32, Device::kCPU);
  EXPECT_TRUE(ExpectAligned16(next, "k", "must be aligned").ok());
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between two bf16 values; ties go to the even mantissa (1.0).
  EXPECT_EQ(RoundToBf16(1.0f + std::ldexp(1.0f, -8)), 1.0f);
  EXPECT_EQ(RoundToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(INFINITY))));
}

TEST(ThreadPoolTest, CoversEveryItemOnce) {
  for (int threads : {1, 2, 3, 8}) {
    Context ctx = Context::Cpu(threads);
    for (int64_t n : {0, 1, 5, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      ctx.ParallelFor(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << n;
    }
  }
}

TEST(ThreadPoolTest, NestedCallsRunSerially) {
  Context ctx = Context::Cpu(2);
  std::atomic<int> total{0};
  ctx.ParallelFor(4, [&](int64_t b, int64_t e) {
    ctx.ParallelFor(10, [&](int64_t b2, int64_t e2) { total += static_cast<int>(e2 - b2); });
  });
  EXPECT_EQ(total.load(), 20);
}

}  // namespace
}  // namespace tandem

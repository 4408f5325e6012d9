// SumInRankOrder (the NCCL collective's device sum) against the MPI collective's host loop:
// bitwise, for 1..6 ranks, on values with cancellations so that any other order or a fused
// operation would change the bits, and for slices shorter than the stride.
#include "trainer/rank_ordered_sum.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::trainer {
namespace {

// [ranks, stride] values of mixed magnitudes: 1e4-scale terms that cancel across ranks next to
// O(1) ones, so fp32 sums depend on the order.
std::vector<float> Slices(int ranks, int64_t stride) {
  std::vector<float> x = testing::RandomVector(ranks * stride, 17 + ranks);
  for (int64_t i = 0; i < ranks * stride; i += 3) x[i] *= 1.0e4f;
  return x;
}

// The host loop of the MPI collective: out = x_0, then out += x_r for r = 1..P−1.
std::vector<float> HostSum(const std::vector<float>& x, int ranks, int64_t stride, int64_t n) {
  std::vector<float> out(x.begin(), x.begin() + n);
  for (int r = 1; r < ranks; ++r) {
    for (int64_t i = 0; i < n; ++i) out[i] += x[r * stride + i];
  }
  return out;
}

TEST(RankOrderedSumTest, EqualsTheHostLoopBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (int ranks = 1; ranks <= 6; ++ranks) {
    for (int64_t n : {int64_t{1}, int64_t{777}, int64_t{100003}}) {
      const int64_t stride = n + 5;  // slices shorter than the stride, as for the last rank
      const std::vector<float> x = Slices(ranks, stride);
      float *d_x = nullptr, *d_out = nullptr;
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_x), x.size() * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_out), n * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(d_x, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice),
                cudaSuccess);
      TANDEM_ASSERT_OK(SumInRankOrder(d_x, ranks, stride, n, d_out, nullptr));
      std::vector<float> got(n);
      ASSERT_EQ(cudaMemcpy(got.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost),
                cudaSuccess);
      cudaFree(d_x);
      cudaFree(d_out);
      const auto eq = testing::BitwiseEqual(got, HostSum(x, ranks, stride, n));
      EXPECT_TRUE(eq) << "ranks " << ranks << ", n " << n << ": " << eq.message();
    }
  }
}

TEST(RankOrderedSumTest, RejectsBadArguments) {
  EXPECT_FALSE(SumInRankOrder(nullptr, 0, 4, 4, nullptr, nullptr).ok());
  EXPECT_FALSE(SumInRankOrder(nullptr, 2, 4, 5, nullptr, nullptr).ok());
  EXPECT_TRUE(SumInRankOrder(nullptr, 2, 4, 0, nullptr, nullptr).ok());
}

}  // namespace
}  // namespace tandem::trainer

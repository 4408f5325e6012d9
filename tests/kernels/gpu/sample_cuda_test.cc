// Tests for the GPU Philox: the words and the uniform's 53 bits equal the CPU's Philox4x32 and
// UniformFromKey bitwise for keys that exercise every 32-bit half (including the Random123
// known-answer counter 0 / key 0), and argument errors.
#include "kernels/sample/sample_cuda.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/sample/sample.h"
#include "tests/kernels/gpu/gpu_test_util.h"

namespace tandem::kernels {
namespace {

using testing::GpuTestContext;

TEST(SampleCudaTest, PhiloxEqualsCpuBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  std::vector<SampleKey> keys = {
      {0, 0, 0},
      {1, 0, 0},
      {0, 1, 0},
      {0, 0, 1},
      {0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull},
      {0x123456789ABCDEF0ull, 3, 1ull << 40},
      {42, 7, 4095}};
  uint64_t s = 0x9E3779B97F4A7C15ull;  // splitmix-style walk over the key space
  for (int i = 0; i < 2000; ++i) {
    s += 0x9E3779B97F4A7C15ull;
    keys.push_back({s ^ (s >> 31), (s >> 7) % 16, s % 100000 + (i % 3 == 0 ? s << 32 : 0)});
  }
  const int64_t n = keys.size();
  std::vector<int64_t> flat;
  for (const SampleKey& k : keys) {
    for (uint64_t x : {k.seed, k.sample_index, k.position}) flat.push_back(static_cast<int64_t>(x));
  }
  const Context& ctx = GpuTestContext();
  auto dev_keys = cuda::CopyToDevice(ctx, Tensor::FromVector(flat, {n, 3}));
  ASSERT_TRUE(dev_keys.ok()) << dev_keys.status();
  Tensor words = Tensor::Empty({n, 4}, DType::kI32, Device::kCUDA);
  Tensor bits = Tensor::Empty({n}, DType::kI64, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::PhiloxUniformBits(ctx, *dev_keys, words, bits));
  auto hw = cuda::CopyToHost(ctx, words);
  auto hb = cuda::CopyToHost(ctx, bits);
  ASSERT_TRUE(hw.ok() && hb.ok());
  int mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    const SampleKey& k = keys[i];
    const std::array<uint32_t, 4> want =
        Philox4x32({uint32_t(k.position), uint32_t(k.position >> 32), uint32_t(k.sample_index),
                    uint32_t(k.sample_index >> 32)},
                   {uint32_t(k.seed), uint32_t(k.seed >> 32)});
    for (int j = 0; j < 4; ++j) {
      mismatches += static_cast<uint32_t>(hw->data<int32_t>()[4 * i + j]) != want[j];
    }
    const double u = static_cast<double>(static_cast<uint64_t>(hb->data<int64_t>()[i])) * 0x1.0p-53;
    const double cpu = UniformFromKey(k);
    mismatches += std::memcmp(&u, &cpu, sizeof(double)) != 0;
  }
  EXPECT_EQ(mismatches, 0);
  // Random123's known answer for Philox4x32-10, counter 0, key 0.
  const uint32_t kat[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
  for (int j = 0; j < 4; ++j) EXPECT_EQ(static_cast<uint32_t>(hw->data<int32_t>()[j]), kat[j]);
}

TEST(SampleCudaTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor keys = Tensor::View(fake, {5, 2}, DType::kI64, Device::kCUDA);
  Tensor words, bits;
  absl::Status s = cuda::PhiloxUniformBits(GpuTestContext(), keys, words, bits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "keys: expected i64 [*, 3] on cuda, got i64 [5, 2] on cuda");
}

}  // namespace
}  // namespace tandem::kernels

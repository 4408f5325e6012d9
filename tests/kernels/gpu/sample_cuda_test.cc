// Tests for the GPU Philox: the words and the uniform's 53 bits equal the CPU's Philox4x32 and
// UniformFromKey bitwise for keys that exercise every 32-bit half (including the Random123
// known-answer counter 0 / key 0), and argument errors.
#include "kernels/sample/sample_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/sample/sample.h"
#include "tests/kernels/gpu/gpu_test_util.h"

namespace tandem::kernels {
namespace {

using testing::CudaDispatchContext;
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

// log_softmax rows of normal logits (standard deviation sigma) with ties, -inf and NaN entries.
std::vector<float> LogprobRows(int64_t rows, int64_t vocab, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> logit(0.0, sigma);
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> x(vocab);
    double mx = -INFINITY;
    for (double& v : x) mx = std::max(mx, v = logit(rng));
    double sum = 0.0;
    for (double v : x) sum += std::exp(v - mx);
    for (int64_t v = 0; v < vocab; ++v) {
      out.push_back(static_cast<float>(x[v] - mx - std::log(sum)));
    }
    float* row = out.data() + r * vocab;
    for (int64_t v = 7; v < vocab; v += 301) row[v] = row[v - 7];  // ties
    for (int64_t v = 3; v < vocab; v += 997) row[v] = -INFINITY;
    row[vocab / 2] = NAN;
  }
  return out;
}

// The GPU's SampleRows against the CPU's on the same rows: greedy and plain draws run on the GPU,
// top-k / top-p ones on the host; every token and log-prob equal, errors the same.
TEST(SampleCudaTest, SampleRowsEqualsTheCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Context& gpu = CudaDispatchContext();
  const Context cpu = Context::Cpu(2);
  for (const int64_t vocab : {int64_t{1}, int64_t{1000}, int64_t{157184}}) {
    const int64_t rows = 6;
    std::vector<float> lp = LogprobRows(rows, vocab, vocab == 1000 ? 0.5f : 4.0f, 9);
    if (vocab > 1) {
      for (int64_t v = 0; v < vocab; ++v) lp[5 * vocab + v] = -INFINITY;  // nothing drawable
    }
    const Tensor host = Tensor::FromVector(lp, {rows, vocab});
    auto dev = cuda::CopyToDevice(gpu, host);
    ASSERT_TRUE(dev.ok()) << dev.status();
    std::vector<RowDraw> draws;
    const SamplingParams kinds[] = {{},
                                    {.greedy = true},
                                    {.top_p = 0.9f},
                                    {.top_k = 40},
                                    {.top_k = vocab + 3},
                                    {.top_p = 1.5f}};
    for (uint64_t pos = 0; pos < 64; ++pos) {
      draws.push_back({static_cast<int64_t>(pos % rows), kinds[pos % 6], {5, pos % 3, pos}});
    }
    draws.push_back({rows, {}, {}});  // row out of range
    const auto want = SampleRows(cpu, host, draws);
    const auto got = SampleRows(gpu, *dev, draws);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " draw " << i);
      ASSERT_EQ(got[i].ok(), want[i].ok()) << got[i].status() << " vs " << want[i].status();
      if (!want[i].ok()) {
        EXPECT_EQ(got[i].status(), want[i].status());
        continue;
      }
      EXPECT_EQ(got[i]->token, want[i]->token);
      EXPECT_EQ(got[i]->logprob, want[i]->logprob);
    }
  }
}

// The plain draw's tokens follow the row's distribution (the GPU computes the inverse CDF itself).
TEST(SampleCudaTest, SampleRowsFollowsTheDistribution) {
  TANDEM_SKIP_WITHOUT_GPU();
  const std::vector<float> lp = {std::log(0.5f), std::log(0.25f), std::log(0.125f),
                                 std::log(0.125f)};
  auto dev = cuda::CopyToDevice(GpuTestContext(), Tensor::FromVector(lp, {1, 4}));
  ASSERT_TRUE(dev.ok());
  std::vector<RowDraw> draws;
  for (uint64_t pos = 0; pos < 20000; ++pos) draws.push_back({0, {}, {42, 0, pos}});
  const auto got = SampleRows(CudaDispatchContext(), *dev, draws);
  std::vector<int> counts(4, 0);
  for (const auto& t : got) {
    ASSERT_TRUE(t.ok()) << t.status();
    ++counts[t->token];
  }
  for (int v = 0; v < 4; ++v) EXPECT_NEAR(counts[v] / 20000.0, std::exp(lp[v]), 0.015) << v;
}

TEST(SampleCudaTest, SampleRowsRefusesAVocabularyBeyondItsSharedMemory) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t vocab = 2'000'000;
  Tensor lp = Tensor::Empty({1, vocab}, DType::kF32, Device::kCUDA);
  const auto got = SampleRows(CudaDispatchContext(), lp, {RowDraw{}});
  ASSERT_FALSE(got[0].ok());
  EXPECT_THAT(std::string(got[0].status().message()), ::testing::HasSubstr("vocabulary"));
}

}  // namespace
}  // namespace tandem::kernels

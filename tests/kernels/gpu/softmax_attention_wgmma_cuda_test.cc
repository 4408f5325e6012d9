// The fact the sm_90a forward's bitwise promises rest on: for the same bf16 operands, a row of a
// wgmma product (fp32 accumulate; the forward) equals the same row of chained mma.sync m16n8k16
// (the decode), bit for bit, for both tile products: S = Q·Kᵀ from zero over head dims ascending,
// and O = C + P·V over keys ascending from a live accumulator. Operands: random, then adversarial
// (exponents spread over 2^±40, exact cancellation within and across k steps, an accumulator that
// P·V nearly cancels), where a different internal summation order or width would show.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/softmax_attention/attention_wgmma_probe.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::BitwiseEqual;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::RoundedToBf16;
using testing::ToDevice;
using testing::ToHostFloats;

constexpr int64_t kRows = 64, kKeys = 64;

struct Operands {
  int64_t d;
  std::vector<float> q, k, p, v, c;  // [64, d], [64, d], [64, 64], [64, d] (bf16 values), [64, d]
};

// Runs the probe; expects both products bitwise equal between the two paths; returns s and o
// (mma.sync) for further checks.
void ExpectPathsAgree(const Operands& x, std::vector<float>* s_out = nullptr,
                      std::vector<float>* o_out = nullptr) {
  const int64_t d = x.d;
  Tensor s_wg = Tensor::Empty({kRows, kKeys}, DType::kF32, Device::kCUDA);
  Tensor s_mma = Tensor::Empty({kRows, kKeys}, DType::kF32, Device::kCUDA);
  Tensor o_wg = Tensor::Empty({kRows, d}, DType::kF32, Device::kCUDA);
  Tensor o_mma = Tensor::Empty({kRows, d}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::SoftmaxAttentionWgmmaProbe(
      GpuTestContext(), d, ToDevice(x.q, {kRows, d}, DType::kBF16),
      ToDevice(x.k, {kRows, d}, DType::kBF16), ToDevice(x.p, {kRows, kKeys}, DType::kBF16),
      ToDevice(x.v, {kRows, d}, DType::kBF16), ToDevice(x.c, {kRows, d}), s_wg, s_mma, o_wg,
      o_mma));
  const std::vector<float> sm = ToHostFloats(s_mma), om = ToHostFloats(o_mma);
  EXPECT_TRUE(BitwiseEqual(ToHostFloats(s_wg), sm, {kRows, kKeys})) << "S = Q·Kᵀ";
  EXPECT_TRUE(BitwiseEqual(ToHostFloats(o_wg), om, {kRows, d})) << "O = C + P·V";
  if (s_out != nullptr) *s_out = sm;
  if (o_out != nullptr) *o_out = om;
}

Operands RandomOperands(int64_t d, uint64_t seed) {
  Operands x;
  x.d = d;
  x.q = RoundedToBf16(RandomVector(kRows * d, seed, -2.0f, 2.0f));
  x.k = RoundedToBf16(RandomVector(kKeys * d, seed + 1, -2.0f, 2.0f));
  x.p = RoundedToBf16(RandomVector(kRows * kKeys, seed + 2, 0.0f, 1.0f));  // probabilities
  x.v = RoundedToBf16(RandomVector(kKeys * d, seed + 3));
  x.c = RandomVector(kRows * d, seed + 4, -4.0f, 4.0f);
  return x;
}

// bf16 values ±(1 + f)·2^e, e uniform in [-40, 40]: products span 2^±80, so the order and width
// of the fp32 sums decide which small terms survive.
std::vector<float> MixedExponents(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> e(-40, 40), sign(0, 1);
  std::uniform_real_distribution<float> f(0.0f, 1.0f);
  std::vector<float> out(n);
  for (float& x : out) x = (sign(rng) ? -1.0f : 1.0f) * std::ldexp(1.0f + f(rng), e(rng));
  return RoundedToBf16(out);
}

// Every row of a and b gets exactly cancelling large pairs: a[r][i] = a[r][j] = big,
// b[c][i] = −b[c][j] = big', with (i, j) in the same k step or in different ones (`span`), so the
// exact dot product is the small terms alone and any early rounding of the partial sums shows.
void PlantCancellation(std::vector<float>& a, std::vector<float>& b, int64_t rows_a, int64_t rows_b,
                       int64_t k, int64_t span, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> e(8, 30);
  for (int64_t i = 0; i + span < k; i += 2 * span) {
    for (int64_t r = 0; r < rows_a; ++r) {
      a[r * k + i] = a[r * k + i + span] = std::ldexp(1.0f, e(rng));
    }
    for (int64_t c = 0; c < rows_b; ++c) {
      const float big = std::ldexp(c % 2 ? 1.5f : 1.0f, e(rng));
      b[c * k + i] = big;
      b[c * k + i + span] = -big;
    }
  }
}

Operands AdversarialOperands(int64_t d, int64_t span, uint64_t seed) {
  Operands x;
  x.d = d;
  x.q = MixedExponents(kRows * d, seed);
  x.k = MixedExponents(kKeys * d, seed + 1);
  PlantCancellation(x.q, x.k, kRows, kKeys, d, span, seed + 2);
  // P·V: p as A [64 rows, 64 keys], v as B [64 keys, d]: v's cancelling pairs run down a column.
  x.p = MixedExponents(kRows * kKeys, seed + 3);
  x.v = MixedExponents(kKeys * d, seed + 4);
  std::mt19937_64 rng(seed + 5);
  for (int64_t i = 0; i + span < kKeys; i += 2 * span) {
    for (int64_t r = 0; r < kRows; ++r) x.p[r * kKeys + i] = x.p[r * kKeys + i + span] = 1.0f;
    for (int64_t c = 0; c < d; ++c) {
      const float big = std::ldexp(1.0f, 10 + static_cast<int>(rng() % 20));
      x.v[i * d + c] = big;
      x.v[(i + span) * d + c] = -big;
    }
  }
  // An accumulator that the first product nearly cancels: C + P·V loses its leading bits.
  x.c = MixedExponents(kRows * d, seed + 6);
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t c = 0; c < d; ++c) x.c[r * d + c] = -x.p[r * kKeys] * x.v[c] + x.c[r * d + c];
  }
  return x;
}

bool WgmmaHere(int64_t d) { return cuda::CudaAvailable() && cuda::SoftmaxAttentionUsesWgmma(d); }

TEST(SoftmaxAttentionWgmmaCudaTest, RandomOperandsSameBitsAndRightValues) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (int64_t d : {128, 64}) {
    if (!WgmmaHere(d)) GTEST_SKIP() << "no sm_90a wgmma path on this build or device";
    SCOPED_TRACE(::testing::Message() << "D=" << d);
    const Operands x = RandomOperands(d, 11 + d);
    std::vector<float> s, o;
    ExpectPathsAgree(x, &s, &o);
    // Against fp64, so a wrong layout or descriptor shows even if both paths shared it: fp32 sums
    // of <= 128 terms of size <= 4: error <= 128·4·2^-24 ≈ 3e-5 (s); o terms <= 1, c <= 4.
    std::vector<double> sr(kRows * kKeys), orf(kRows * d);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t j = 0; j < kKeys; ++j) {
        double acc = 0.0;
        for (int64_t i = 0; i < d; ++i) acc += double{x.q[r * d + i]} * x.k[j * d + i];
        sr[r * kKeys + j] = acc;
      }
      for (int64_t c = 0; c < d; ++c) {
        double acc = x.c[r * d + c];
        for (int64_t j = 0; j < kKeys; ++j) acc += double{x.p[r * kKeys + j]} * x.v[j * d + c];
        orf[r * d + c] = acc;
      }
    }
    testing::CompareOptions opt;
    opt.atol = 5e-5;
    opt.max_nmse = 1e-12;
    EXPECT_TRUE(testing::AllClose(s, sr, opt));
    EXPECT_TRUE(testing::AllClose(o, orf, opt));
  }
}

TEST(SoftmaxAttentionWgmmaCudaTest, AdversarialOperandsSameBits) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (int64_t d : {128, 64}) {
    if (!WgmmaHere(d)) GTEST_SKIP() << "no sm_90a wgmma path on this build or device";
    // span 1: both halves of a pair in one k step (one 8-element group); 8: the two k groups of
    // a step; 16, 32: different k steps.
    for (int64_t span : {1, 8, 16, 32}) {
      SCOPED_TRACE(::testing::Message() << "D=" << d << " cancelling pairs " << span << " apart");
      ExpectPathsAgree(AdversarialOperands(d, span, 100 + 7 * span + d));
    }
  }
}

// Host-side (runs without a GPU too): head dim 32 never takes the wgmma path.
TEST(SoftmaxAttentionWgmmaCudaTest, UnavailableHeadDimIsUnimplemented) {
  EXPECT_FALSE(cuda::SoftmaxAttentionUsesWgmma(32));
  Tensor none;
  const absl::Status s = cuda::SoftmaxAttentionWgmmaProbe(GpuTestContext(), 32, none, none, none,
                                                          none, none, none, none, none, none);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace tandem::kernels

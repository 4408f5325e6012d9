// HybridModel::Forward on the GPU (label gpu; skips without a device): the tiny hybrid model's
// log-probs against the CPU's within a tolerance derived from bf16 rounding itself, the numerics
// contract bitwise on the GPU (a sequence's log-probs are the same alone or packed with any
// others, in any order), and a model with Ring-mini-linear-2.0's layer shapes (few layers, fewer
// experts) running and invariant. The device checks run without a GPU.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/device_weights.h"
#include "model/hybrid_model.h"
#include "tests/model/gpu/gpu_model_util.h"
#include "tests/testing/compare.h"
#include "tests/testing/tiny_model.h"

namespace tandem::model {
namespace {

using testing::BitwiseEqual;
using ::testing::HasSubstr;
using testing::MakeForwardInput;
using testing::RandomTokenBatch;
using testing::TokenBatch;

std::vector<float> Logprobs(const Context& ctx, const HybridModel& model, const TokenBatch& b,
                            float temperature = 1.0f) {
  absl::StatusOr<Tensor> out = model.Forward(ctx, MakeForwardInput(b, temperature));
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  EXPECT_EQ(out->device(), Device::kCPU);
  return std::vector<float>(out->data<float>(), out->data<float>() + out->numel());
}

// Largest and mean |a − b| over the positions that have a target.
struct Diff {
  double max = 0, mean = 0;
};
Diff AbsDiff(const std::vector<float>& a, const std::vector<float>& b, const TokenBatch& batch) {
  Diff d;
  int n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (batch.targets[i] < 0) continue;
    const double e = std::abs(double{a[i]} - b[i]);
    d.max = std::max(d.max, e);
    d.mean += e;
    ++n;
  }
  d.mean /= std::max(n, 1);
  return d;
}

// Sequence i of `b` alone.
TokenBatch Alone(const TokenBatch& b, size_t i) {
  TokenBatch one;
  const int begin = b.cu_seqlens[i], end = b.cu_seqlens[i + 1];
  one.tokens.assign(b.tokens.begin() + begin, b.tokens.begin() + end);
  one.targets.assign(b.targets.begin() + begin, b.targets.begin() + end);
  one.cu_seqlens = {0, end - begin};
  return one;
}

// The sequences of `b` packed in `order`.
TokenBatch Packed(const TokenBatch& b, const std::vector<size_t>& order) {
  TokenBatch out;
  out.cu_seqlens = {0};
  for (size_t i : order) {
    const TokenBatch one = Alone(b, i);
    out.tokens.insert(out.tokens.end(), one.tokens.begin(), one.tokens.end());
    out.targets.insert(out.targets.end(), one.targets.begin(), one.targets.end());
    out.cu_seqlens.push_back(out.cu_seqlens.back() + one.cu_seqlens[1]);
  }
  return out;
}

// Every sequence's log-probs: alone, and packed in two orders, bitwise equal (contract rule 1-3).
void ExpectPackingInvariant(const Context& ctx, const HybridModel& gpu, const TokenBatch& b) {
  const size_t n = b.cu_seqlens.size() - 1;
  std::vector<size_t> forward(n), reverse(n);
  for (size_t i = 0; i < n; ++i) forward[i] = i, reverse[i] = n - 1 - i;
  const std::vector<float> packed = Logprobs(ctx, gpu, Packed(b, forward));
  const std::vector<float> packed_rev = Logprobs(ctx, gpu, Packed(b, reverse));
  int rev_offset = static_cast<int>(b.tokens.size());
  for (size_t i = 0; i < n; ++i) {
    const int begin = b.cu_seqlens[i], len = b.cu_seqlens[i + 1] - begin;
    rev_offset -= len;
    const std::vector<float> alone = Logprobs(ctx, gpu, Alone(b, i));
    ASSERT_EQ(alone.size(), static_cast<size_t>(len));
    EXPECT_TRUE(BitwiseEqual(
        alone, std::vector<float>(packed.begin() + begin, packed.begin() + begin + len)))
        << "sequence " << i << " (" << len << " tokens) alone vs packed";
    EXPECT_TRUE(BitwiseEqual(alone, std::vector<float>(packed_rev.begin() + rev_offset,
                                                       packed_rev.begin() + rev_offset + len)))
        << "sequence " << i << " alone vs packed in reverse order";
  }
}

// The tiny model of the tolerance tests: expert bias 3·e, so experts and router groups (sums of
// two) are all at least 3 apart, beyond the sigmoid's range of 1: every token picks the same
// experts on both devices.
ModelWeights ToleranceWeights(const ModelConfig& config) {
  ModelWeights weights = testing::RandomWeights(config, 3);
  for (LayerWeights& w : weights.layers) {
    if (!w.expert_bias.defined()) continue;  // dense-FFN layer
    for (int64_t e = 0; e < w.expert_bias.numel(); ++e) {
      w.expert_bias.data<float>()[e] = 3.0f * static_cast<float>(e);
    }
  }
  return weights;
}

TokenBatch ToleranceBatch(const ModelConfig& config) {
  return RandomTokenBatch({1, 17, 64, 65, 200}, 11, static_cast<int>(config.vocab_size));
}

// No GPU needed: the bound below is not vacuous (bf16 weight rounding visibly moves the CPU
// log-probs) nor loose (it moves them by much less than the log-probs themselves).
TEST(HybridModelCudaTest, WeightRoundingEffectIsMeasurable) {
  const ModelConfig config = testing::TinyGpuConfig();
  const ModelWeights weights = ToleranceWeights(config);
  const HybridModel cpu_f32(config, weights);
  const HybridModel cpu_rounded(config, testing::RoundedAsUploaded(config, weights));
  const TokenBatch b = ToleranceBatch(config);
  const Diff effect =
      AbsDiff(Logprobs(Context::Cpu(2), cpu_rounded, b), Logprobs(Context::Cpu(2), cpu_f32, b), b);
  std::cout << "[ info ] |cpu(bf16 w) - cpu(f32 w)|: max " << effect.max << ", mean " << effect.mean
            << "\n";
  // Measured on this model: max 0.13, mean 0.022 (log-probs down to -10; random weights of unit
  // gain amplify a 2^-9 relative change over four layers).
  EXPECT_GT(effect.mean, 1e-3);
  EXPECT_LT(effect.max, 0.5);
}

// Tiny GPU model vs the CPU. Three forwards: CPU with the fp32 weights, CPU with the weights
// rounded as UploadWeights rounds them, and the GPU. The GPU additionally rounds activations to
// bf16 where they enter GEMMs and attention (the same kind and count of roundings as the weight
// cast), so its distance to the rounded-weight CPU run is bounded by a small multiple of the
// weight rounding's own effect on the log-probs (measured, not guessed), plus a floor, in the
// largest and in the mean difference. The expert bias is made dominant and distinct so routing is
// the same on both devices: a near-tie flipped by rounding would change a token's experts, which no
// tolerance covers (GPU routing is checked bitwise by the invariance tests instead).
TEST(HybridModelCudaTest, TinyMatchesCpuWithinBf16Tolerance) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const ModelWeights weights = ToleranceWeights(config);
  const HybridModel cpu_f32(config, weights);
  const HybridModel cpu_rounded(config, testing::RoundedAsUploaded(config, weights));
  const Context ctx = testing::CudaContext();
  const HybridModel gpu = testing::GpuModel(ctx, cpu_f32);
  const TokenBatch b = ToleranceBatch(config);
  for (float temperature : {1.0f, 0.7f}) {
    const std::vector<float> f32 = Logprobs(Context::Cpu(4), cpu_f32, b, temperature);
    const std::vector<float> rounded = Logprobs(Context::Cpu(4), cpu_rounded, b, temperature);
    const std::vector<float> got = Logprobs(ctx, gpu, b, temperature);
    ASSERT_EQ(got.size(), f32.size());
    const Diff weight_effect = AbsDiff(rounded, f32, b);
    const Diff gpu_vs_cpu = AbsDiff(got, rounded, b);
    std::cout << "[ info ] T=" << temperature << " |cpu(bf16 w) - cpu(f32 w)|: max "
              << weight_effect.max << ", mean " << weight_effect.mean
              << "; |gpu - cpu(bf16 w)|: max " << gpu_vs_cpu.max << ", mean " << gpu_vs_cpu.mean
              << "\n";
    EXPECT_LE(gpu_vs_cpu.max, 4 * weight_effect.max + 2e-3) << "temperature " << temperature;
    EXPECT_LE(gpu_vs_cpu.mean, 4 * weight_effect.mean + 1e-3) << "temperature " << temperature;
    for (size_t t = 0; t < got.size(); ++t) {
      if (b.targets[t] < 0) {
        EXPECT_EQ(got[t], 0.0f) << "position " << t << " has no target";
      }
    }
  }
}

// Sequence lengths around the linear-attention chunk (64) and across the 1024-key attention
// split; random routing (random expert bias).
TEST(HybridModelCudaTest, TinyPackingInvariantBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const Context ctx = testing::CudaContext();
  const HybridModel gpu = testing::GpuModel(ctx, testing::RandomModel(config, 5));
  ExpectPackingInvariant(
      ctx, gpu,
      RandomTokenBatch({1, 2, 63, 64, 65, 130, 1100}, 13, static_cast<int>(config.vocab_size)));
}

// Ring-mini-linear-2.0's layer shapes, 5 layers (4 linear + 1 softmax; dense FFN first, then
// MoE), 64 experts: runs, gives finite log-probs <= 0, and is packing invariant bitwise.
TEST(HybridModelCudaTest, RingMiniShapeRunsAndIsInvariant) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::RingMiniShapeConfig(5, 64);
  ASSERT_EQ(config.layer_types[3], LayerType::kLinear);
  ASSERT_EQ(config.layer_types[4], LayerType::kSoftmax);
  const Context ctx = testing::CudaContext();
  const HybridModel gpu =
      testing::GpuModel(ctx, HybridModel(config, testing::FastRandomWeights(config, 7, ctx)));
  const TokenBatch b =
      RandomTokenBatch({1, 63, 65, 300, 1030}, 17, static_cast<int>(config.vocab_size));
  const std::vector<float> lp = Logprobs(ctx, gpu, b);
  ASSERT_EQ(lp.size(), b.tokens.size());
  for (size_t t = 0; t < lp.size(); ++t) {
    ASSERT_TRUE(std::isfinite(lp[t]) && lp[t] <= 0.0f) << "position " << t << ": " << lp[t];
  }
  ExpectPackingInvariant(ctx, gpu, b);
}

// Device checks (no GPU needed): weights on the wrong device, uploads from a CPU context.
TEST(HybridModelCudaTest, RejectsWeightsOnTheWrongDevice) {
  const ModelConfig config = testing::TinyGpuConfig();
  const HybridModel host = testing::RandomModel(config, 1);
  const TokenBatch b = RandomTokenBatch({5}, 1, static_cast<int>(config.vocab_size));
  absl::StatusOr<Tensor> out = host.Forward(testing::CudaContext(), MakeForwardInput(b));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(out.status().message(), HasSubstr("weights: on cpu but the context is cuda"));
  absl::StatusOr<ModelWeights> up = UploadWeights(Context::Cpu(1), config, host.weights());
  ASSERT_FALSE(up.ok());
  EXPECT_EQ(up.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tandem::model

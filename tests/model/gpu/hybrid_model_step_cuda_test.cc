// model::ForwardStep on the GPU (label gpu; skips without a device): sequences fed through it in
// random piece splits (chunk-aligned multi-token pieces, single decode tokens, mixed with other
// sequences in one batch, shuffled block tables, slots in scrambled order) give, bitwise, the
// log-probs the GPU's HybridModel::Forward computes over the whole sequence — for the tiny model
// and for a model with Ring-mini-linear-2.0's layer shapes. Also a forked slot continuing bitwise,
// and the GPU cache's byte counts (bf16 K/V).
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/contract.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "model/hybrid_model_step.h"
#include "model/inference_cache.h"
#include "tests/model/gpu/gpu_model_util.h"
#include "tests/model/step_splits.h"
#include "tests/testing/compare.h"

namespace tandem::model {
namespace {

using testing::BitwiseEqual;

// log_softmax(logits / temperature) of one GPU logits row [1, V], on the GPU (the engine's
// sampler path), read at `target`.
float RowLogprob(const Context& ctx, const Tensor& row, int32_t target, float temperature) {
  const int64_t V = row.dim(1);
  Tensor out = Tensor::Empty({1, V}, DType::kF32, Device::kCUDA);
  Tensor lse = Tensor::Empty({1}, DType::kF32, Device::kCUDA);
  EXPECT_TRUE(kernels::LogSoftmax(ctx, row, temperature, out, lse).ok());
  const std::vector<float> host = testing::ToHostFloats(out);
  return host[target];
}

// The whole-sequence log-probs of the GPU forward: entry p = log p(tokens[p + 1] | ..).
std::vector<float> GpuForwardLogprobs(const Context& ctx, const HybridModel& gpu,
                                      const std::vector<int32_t>& tokens, float temperature) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);
  ForwardInput input{Tensor::FromVector(tokens, {T}),
                     Tensor::FromVector(std::vector<int32_t>{0, static_cast<int32_t>(T)}, {2}),
                     Tensor::FromVector(targets, {T}), temperature};
  absl::StatusOr<Tensor> out = gpu.Forward(ctx, input);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  return std::vector<float>(out->data<float>(), out->data<float>() + T - 1);
}

// Random piece splits on the GPU (tests/model/step_splits.h): each piece's last row read through
// the GPU's log-softmax (the engine's sampler path), against the GPU forward, bitwise.
int64_t RunRandomSplits(const HybridModel& gpu, const std::vector<int64_t>& lengths,
                        float temperature, uint64_t seed) {
  const Context ctx = testing::CudaContext();
  const testing::StepSplitReaders read{
      [&](const Tensor& row, int32_t target) { return RowLogprob(ctx, row, target, temperature); },
      [&](const std::vector<int32_t>& tokens) {
        return GpuForwardLogprobs(ctx, gpu, tokens, temperature);
      }};
  return testing::RunStepSplits(ctx, gpu, lengths, seed, read);
}

TEST(ForwardStepCudaTest, TinyRandomPieceSplitsMatchForwardBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const Context ctx = testing::CudaContext();
  const HybridModel gpu = testing::GpuModel(ctx, testing::RandomModel(config, 1));
  // Lengths around chunk and tile boundaries, and past the 1024-position attention split.
  const std::vector<int64_t> lengths = {1, 2, 63, 64, 65, 129, 150, 200, 1100};
  for (uint64_t seed = 1; seed <= 2; ++seed) {
    EXPECT_GT(RunRandomSplits(gpu, lengths, seed == 1 ? 1.0f : 0.7f, seed), 600);
  }
}

TEST(ForwardStepCudaTest, RingMiniShapeRandomPieceSplitsMatchForwardBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::RingMiniShapeConfig(5, 64);
  const Context ctx = testing::CudaContext();
  const HybridModel gpu =
      testing::GpuModel(ctx, HybridModel(config, testing::FastRandomWeights(config, 9, ctx)));
  EXPECT_GT(RunRandomSplits(gpu, {1, 65, 130, 1030}, 1.0f, 5), 300);
}

TEST(ForwardStepCudaTest, SlotCopyContinuesBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const Context ctx = testing::CudaContext();
  const HybridModel gpu = testing::GpuModel(ctx, testing::RandomModel(config, 2));
  absl::StatusOr<InferenceCache> cache = InferenceCache::Create(config, 4, 2, Device::kCUDA);
  ASSERT_TRUE(cache.ok()) << cache.status();
  cache->ResetSlot(0);
  cache->ResetSlot(1);
  std::vector<int32_t> prompt(70);
  for (int i = 0; i < 70; ++i) prompt[i] = (i * 7) % 64;
  ASSERT_TRUE(ForwardStep(ctx, gpu, {{0, 0, prompt, {0, 1}}}, *cache).ok());
  cache->CopySlot(0, 1);
  cache->CopyBlock(1, 2);
  absl::StatusOr<Tensor> logits =
      ForwardStep(ctx, gpu, {{0, 70, {5}, {0, 1}}, {1, 70, {5}, {0, 2}}}, *cache);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const std::vector<float> rows = testing::ToHostFloats(*logits);
  const size_t V = static_cast<size_t>(config.vocab_size);
  EXPECT_TRUE(BitwiseEqual(std::vector<float>(rows.begin(), rows.begin() + V),
                           std::vector<float>(rows.begin() + V, rows.end())));
}

// No GPU needed: the byte counts the engine budgets with.
TEST(ForwardStepCudaTest, GpuCacheByteCounts) {
  const ModelConfig config = testing::TinyGpuConfig();
  // 2 softmax layers × K and V × 64 positions × Hkv 2 × D 32 × 2 bytes (bf16).
  EXPECT_EQ(InferenceCache::BytesPerBlock(config, Device::kCUDA), 2 * 2 * 64 * 2 * 32 * 2);
  EXPECT_EQ(InferenceCache::BytesPerBlock(config, Device::kCPU), 2 * 2 * 64 * 2 * 32 * 4);
}

}  // namespace
}  // namespace tandem::model

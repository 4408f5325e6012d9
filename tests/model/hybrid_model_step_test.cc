// Tests of model::ForwardStep, the rollout engine's incremental forward: sequences fed through it
// in random piece splits (chunk-aligned multi-token pieces, single decode tokens, mixed in one
// batch with other sequences, random block tables) give, bitwise, the log-probs the training
// forward computes over the whole sequence (contract rules 1–3), for 1 and 2 threads. Also the
// InferenceCache byte counts and the argument checks.
#include "model/hybrid_model_step.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/core/contract.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "tests/model/step_splits.h"
#include "tests/testing/compare.h"
#include "tests/testing/tiny_model.h"

namespace tandem::model {
namespace {

using testing::BitwiseEqual;
using ::testing::HasSubstr;

// log_softmax(logits / temperature)[target] of one logits row [1, V], as the trainer computes it.
float RowLogprob(const Tensor& row, int32_t target, float temperature) {
  Tensor targets = Tensor::FromVector(std::vector<int32_t>{target}, {1});
  Tensor lp = Tensor::Empty({1}, DType::kF32), lse = Tensor::Empty({1}, DType::kF32);
  EXPECT_TRUE(kernels::LogprobFromLogits(Context::Cpu(1), row, targets, temperature, lp, lse).ok());
  return lp.data<float>()[0];
}

void RunRandomSplits(int threads, float temperature, uint64_t seed) {
  const HybridModel model = testing::RandomModel(testing::TinyHybridConfig(), 1);
  // Lengths around chunk and tile boundaries, and past the 1024-position attention split.
  const std::vector<int64_t> lengths = {1, 2, 63, 64, 65, 129, 150, 200, 1100};
  const testing::StepSplitReaders read{
      [&](const Tensor& row, int32_t target) { return RowLogprob(row, target, temperature); },
      [&](const std::vector<int32_t>& tokens) {
        return testing::ForwardLogprobs(model, tokens, temperature);
      }};
  // Most of the 1757 positions ended a piece; the rest were inside multi-token pieces.
  EXPECT_GT(testing::RunStepSplits(Context::Cpu(threads), model, lengths, seed, read), 600);
}

TEST(ForwardStepTest, RandomPieceSplitsMatchForwardBitwiseOneThread) {
  for (uint64_t seed = 1; seed <= 2; ++seed) RunRandomSplits(1, 1.0f, seed);
}

TEST(ForwardStepTest, RandomPieceSplitsMatchForwardBitwiseTwoThreads) {
  for (uint64_t seed = 3; seed <= 4; ++seed) RunRandomSplits(2, 0.7f, seed);
}

TEST(ForwardStepTest, CacheByteCounts) {
  const ModelConfig config = testing::TinyHybridConfig();
  // 2 softmax layers × K and V × 64 positions × Hkv 2 × D 16 × 4 bytes.
  EXPECT_EQ(InferenceCache::BytesPerBlock(config), 2 * 2 * 64 * 2 * 16 * 4);
  // 2 linear layers × (state H·D·D + open k, v 2·C·H·D) × 4 bytes + open_len.
  EXPECT_EQ(InferenceCache::BytesPerSlot(config), 2 * ((4 * 16 * 16 + 2 * 64 * 4 * 16) * 4 + 4));
  // On the GPU the open rows are bf16 (the layer's k, v dtype); the state stays f32.
  EXPECT_EQ(InferenceCache::BytesPerSlot(config, Device::kCUDA),
            2 * (4 * 16 * 16 * 4 + 2 * 64 * 4 * 16 * 2 + 4));
}

class ForwardStepArgsTest : public ::testing::Test {
 protected:
  ForwardStepArgsTest()
      : config_(testing::TinyHybridConfig()),
        model_(testing::RandomModel(config_, 2)),
        cache_(*InferenceCache::Create(config_, 4, 2)) {
    cache_.ResetSlot(0);
    cache_.ResetSlot(1);
  }
  absl::Status Run(std::vector<StepSequence> batch) {
    return ForwardStep(Context::Cpu(1), model_, batch, cache_).status();
  }
  ModelConfig config_;
  HybridModel model_;
  InferenceCache cache_;
};

TEST_F(ForwardStepArgsTest, RejectsBadBatches) {
  EXPECT_THAT(Run({}).message(), HasSubstr("batch: must hold at least one"));
  EXPECT_THAT(Run({{0, 0, {}, {0}}}).message(), HasSubstr("batch[0].tokens"));
  EXPECT_THAT(Run({{0, 0, {1, 64}, {0}}}).message(), HasSubstr("outside the vocabulary"));
  EXPECT_THAT(Run({{5, 0, {1}, {0}}}).message(), HasSubstr("batch[0].slot"));
  EXPECT_THAT(Run({{0, 0, {1}, {0}}, {0, 0, {2}, {1}}}).message(), HasSubstr("appears twice"));
  EXPECT_THAT(Run({{0, 0, {1, 2}, {}}}).message(), HasSubstr("block_table"));
  EXPECT_THAT(Run({{0, 0, {1, 2}, {9}}}).message(), HasSubstr("block_table[0]"));
  // Multi-token pieces must start at a chunk boundary; a slot must match its start position.
  EXPECT_THAT(Run({{0, 3, {1, 2}, {0}}}).message(), HasSubstr("chunk boundary"));
  EXPECT_THAT(Run({{0, 3, {1}, {0}}}).message(), HasSubstr("open chunk"));
}

TEST_F(ForwardStepArgsTest, SlotCopyContinuesBitwise) {
  // Prefill 70 tokens in slot 0, copy the slot and the partly filled block, decode the same token
  // in both: identical logits.
  std::vector<int32_t> prompt(70);
  for (int i = 0; i < 70; ++i) prompt[i] = (i * 7) % 64;
  ASSERT_TRUE(Run({{0, 0, prompt, {0, 1}}}).ok());
  cache_.CopySlot(0, 1);
  cache_.CopyBlock(1, 2);
  absl::StatusOr<Tensor> logits =
      ForwardStep(Context::Cpu(2), model_, {{0, 70, {5}, {0, 1}}, {1, 70, {5}, {0, 2}}}, cache_);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_TRUE(
      BitwiseEqual(testing::Floats(logits->Rows(0, 1)), testing::Floats(logits->Rows(1, 2))));
}

}  // namespace
}  // namespace tandem::model

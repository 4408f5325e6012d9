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
#include "tests/testing/compare.h"
#include "tests/testing/tiny_model.h"

namespace tandem::model {
namespace {

using testing::BitwiseEqual;
using ::testing::HasSubstr;

struct TestSeq {
  std::vector<int32_t> tokens;
  int64_t cached = 0;
  int64_t slot = 0;
  std::vector<int32_t> blocks;
  std::vector<float> got;  // got[p] = step log-prob of tokens[p + 1]; NaN until produced
};

// log_softmax(logits / temperature)[target] of one logits row [1, V], as the trainer computes it.
float RowLogprob(const Tensor& row, int32_t target, float temperature) {
  Tensor targets = Tensor::FromVector(std::vector<int32_t>{target}, {1});
  Tensor lp = Tensor::Empty({1}, DType::kF32), lse = Tensor::Empty({1}, DType::kF32);
  EXPECT_TRUE(kernels::LogprobFromLogits(Context::Cpu(1), row, targets, temperature, lp, lse).ok());
  return lp.data<float>()[0];
}

// A piece for `s`: at a chunk boundary, sometimes 1..3 whole chunks, sometimes any length up to
// 3 chunks (leaving an open chunk that decode continues, like a prompt's last piece); otherwise
// one token.
int64_t RandomPiece(const TestSeq& s, std::mt19937_64& rng) {
  const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - s.cached;
  const int64_t C = kLinearAttentionChunk;
  if (s.cached % C == 0) {
    switch (rng() % 6) {
      case 0:
        return std::min<int64_t>(remaining, C * (1 + rng() % 3));
      case 1:
        return std::min<int64_t>(remaining, 1 + rng() % (3 * C));
      default:
        break;
    }
  }
  return 1;
}

void RunRandomSplits(int threads, float temperature, uint64_t seed) {
  const ModelConfig config = testing::TinyHybridConfig();
  const HybridModel model = testing::RandomModel(config, 1);
  std::mt19937_64 rng(seed);
  // Lengths around chunk and tile boundaries, and past the 1024-position attention split.
  const std::vector<int64_t> lengths = {1, 2, 63, 64, 65, 129, 150, 200, 1100};
  std::vector<TestSeq> seqs(lengths.size());
  int64_t total_blocks = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int64_t t = 0; t < lengths[i]; ++t) {
      seqs[i].tokens.push_back(static_cast<int32_t>(rng() % config.vocab_size));
    }
    seqs[i].got.assign(lengths[i], NAN);
    seqs[i].slot = static_cast<int64_t>(seqs.size() - 1 - i);
    total_blocks += (lengths[i] + kAttentionKvTile - 1) / kAttentionKvTile;
  }
  std::vector<int32_t> ids(total_blocks + 3);  // a few spare blocks, never used
  for (size_t j = 0; j < ids.size(); ++j) ids[j] = static_cast<int32_t>(j);
  std::shuffle(ids.begin(), ids.end(), rng);
  absl::StatusOr<InferenceCache> cache =
      InferenceCache::Create(config, static_cast<int64_t>(ids.size()), seqs.size());
  ASSERT_TRUE(cache.ok()) << cache.status();
  size_t next = 0;
  for (TestSeq& s : seqs) {
    for (size_t j = 0; j * kAttentionKvTile < s.tokens.size(); ++j) s.blocks.push_back(ids[next++]);
    cache->ResetSlot(s.slot);
  }

  const Context ctx = Context::Cpu(threads);
  for (int step = 0;; ++step) {
    std::vector<TestSeq*> live;
    for (TestSeq& s : seqs) {
      if (s.cached < static_cast<int64_t>(s.tokens.size()) && rng() % 4 != 0) live.push_back(&s);
    }
    if (live.empty()) {
      bool done = true;
      for (TestSeq& s : seqs) done &= s.cached == static_cast<int64_t>(s.tokens.size());
      if (done) break;
      continue;
    }
    std::shuffle(live.begin(), live.end(), rng);
    std::vector<StepSequence> batch;
    for (TestSeq* s : live) {
      const int64_t n = RandomPiece(*s, rng);
      batch.push_back(
          {s->slot, s->cached,
           std::vector<int32_t>(s->tokens.begin() + s->cached, s->tokens.begin() + s->cached + n),
           s->blocks});
    }
    absl::StatusOr<Tensor> logits = ForwardStep(ctx, model, batch, *cache);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->dim(0), static_cast<int64_t>(live.size()));
    for (size_t b = 0; b < live.size(); ++b) {
      TestSeq& s = *live[b];
      s.cached += static_cast<int64_t>(batch[b].tokens.size());
      const int64_t p = s.cached - 1;
      if (p + 1 < static_cast<int64_t>(s.tokens.size())) {
        s.got[p] = RowLogprob(logits->Rows(b, b + 1), s.tokens[p + 1], temperature);
      }
    }
  }
  int64_t compared = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::vector<float> want = testing::ForwardLogprobs(model, seqs[i].tokens, temperature);
    std::vector<float> got, ref;
    for (size_t p = 0; p < want.size(); ++p) {
      if (std::isnan(seqs[i].got[p])) continue;
      got.push_back(seqs[i].got[p]);
      ref.push_back(want[p]);
    }
    EXPECT_TRUE(BitwiseEqual(got, ref)) << "sequence of length " << lengths[i];
    compared += static_cast<int64_t>(got.size());
  }
  // Most of the 1757 positions ended a piece; the rest were inside multi-token pieces.
  EXPECT_GT(compared, 600);
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

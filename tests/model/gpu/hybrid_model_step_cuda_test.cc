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
#include "tests/testing/compare.h"

namespace tandem::model {
namespace {

using testing::BitwiseEqual;

struct TestSeq {
  std::vector<int32_t> tokens;
  int64_t cached = 0;
  int64_t slot = 0;
  std::vector<int32_t> blocks;
  std::vector<float> got;  // got[p] = step log-prob of tokens[p + 1]; NaN until produced
};

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

// A piece for `s`: at a chunk boundary, sometimes 1..3 whole chunks, sometimes any length up to
// 3 chunks (leaving an open chunk for decode); otherwise one token.
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

// Feeds every sequence through ForwardStep in random pieces and compares each produced log-prob
// with the GPU forward's, bitwise. Returns the number of positions compared.
int64_t RunRandomSplits(const ModelConfig& config, const HybridModel& gpu,
                        const std::vector<int64_t>& lengths, float temperature, uint64_t seed) {
  const Context ctx = testing::CudaContext();
  std::mt19937_64 rng(seed);
  std::vector<TestSeq> seqs(lengths.size());
  // Slots in a scrambled order with one unused, so GPU decode runs are split at times.
  std::vector<int64_t> slots(seqs.size() + 1);
  for (size_t i = 0; i < slots.size(); ++i) slots[i] = static_cast<int64_t>(i);
  std::shuffle(slots.begin(), slots.end(), rng);
  int64_t total_blocks = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int64_t t = 0; t < lengths[i]; ++t) {
      seqs[i].tokens.push_back(static_cast<int32_t>(rng() % config.vocab_size));
    }
    seqs[i].got.assign(lengths[i], NAN);
    seqs[i].slot = slots[i];
    total_blocks += (lengths[i] + kAttentionKvTile - 1) / kAttentionKvTile;
  }
  std::vector<int32_t> ids(total_blocks + 3);
  for (size_t j = 0; j < ids.size(); ++j) ids[j] = static_cast<int32_t>(j);
  std::shuffle(ids.begin(), ids.end(), rng);
  absl::StatusOr<InferenceCache> cache = InferenceCache::Create(
      config, static_cast<int64_t>(ids.size()), seqs.size() + 1, Device::kCUDA);
  EXPECT_TRUE(cache.ok()) << cache.status();
  if (!cache.ok()) return 0;
  size_t next = 0;
  for (TestSeq& s : seqs) {
    for (size_t j = 0; j * kAttentionKvTile < s.tokens.size(); ++j) s.blocks.push_back(ids[next++]);
    cache->ResetSlot(s.slot);
  }
  for (;;) {
    std::vector<TestSeq*> live;
    bool done = true;
    for (TestSeq& s : seqs) {
      const bool more = s.cached < static_cast<int64_t>(s.tokens.size());
      done &= !more;
      if (more && rng() % 4 != 0) live.push_back(&s);
    }
    if (done) break;
    if (live.empty()) continue;
    std::shuffle(live.begin(), live.end(), rng);
    std::vector<StepSequence> batch;
    for (TestSeq* s : live) {
      const int64_t n = RandomPiece(*s, rng);
      batch.push_back(
          {s->slot, s->cached,
           std::vector<int32_t>(s->tokens.begin() + s->cached, s->tokens.begin() + s->cached + n),
           s->blocks});
    }
    absl::StatusOr<Tensor> logits = ForwardStep(ctx, gpu, batch, *cache);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return 0;
    EXPECT_EQ(logits->device(), Device::kCUDA);
    for (size_t b = 0; b < live.size(); ++b) {
      TestSeq& s = *live[b];
      s.cached += static_cast<int64_t>(batch[b].tokens.size());
      const int64_t p = s.cached - 1;
      if (p + 1 < static_cast<int64_t>(s.tokens.size())) {
        s.got[p] = RowLogprob(ctx, logits->Rows(b, b + 1), s.tokens[p + 1], temperature);
      }
    }
  }
  int64_t compared = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const std::vector<float> want = GpuForwardLogprobs(ctx, gpu, seqs[i].tokens, temperature);
    std::vector<float> got, ref;
    for (size_t p = 0; p < want.size(); ++p) {
      if (std::isnan(seqs[i].got[p])) continue;
      got.push_back(seqs[i].got[p]);
      ref.push_back(want[p]);
    }
    EXPECT_TRUE(BitwiseEqual(got, ref)) << "sequence of length " << lengths[i];
    compared += static_cast<int64_t>(got.size());
  }
  return compared;
}

TEST(ForwardStepCudaTest, TinyRandomPieceSplitsMatchForwardBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const Context ctx = testing::CudaContext();
  const HybridModel gpu = testing::GpuModel(ctx, testing::RandomModel(config, 1));
  // Lengths around chunk and tile boundaries, and past the 1024-position attention split.
  const std::vector<int64_t> lengths = {1, 2, 63, 64, 65, 129, 150, 200, 1100};
  for (uint64_t seed = 1; seed <= 2; ++seed) {
    EXPECT_GT(RunRandomSplits(config, gpu, lengths, seed == 1 ? 1.0f : 0.7f, seed), 600);
  }
}

TEST(ForwardStepCudaTest, RingMiniShapeRandomPieceSplitsMatchForwardBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::RingMiniShapeConfig(5, 64);
  const Context ctx = testing::CudaContext();
  const HybridModel gpu =
      testing::GpuModel(ctx, HybridModel(config, testing::FastRandomWeights(config, 9, ctx)));
  EXPECT_GT(RunRandomSplits(config, gpu, {1, 65, 130, 1030}, 1.0f, 5), 300);
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

// The random piece splits behind the ForwardStep tests on either device: sequences of random
// tokens fed through model::ForwardStep in random pieces (chunk-aligned multi-token pieces, single
// decode tokens, mixed with other sequences in one batch, shuffled block tables, slots in a
// scrambled order with one left unused), each piece's last row read as a log-prob and compared,
// bitwise, with the whole-sequence forward's. Header-only, for tests/model and tests/model/gpu.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/context.h"
#include "kernels/core/contract.h"
#include "model/hybrid_model.h"
#include "model/hybrid_model_step.h"
#include "model/inference_cache.h"
#include "tests/testing/compare.h"

namespace tandem::testing {

struct StepSplitSeq {
  std::vector<int32_t> tokens;
  int64_t cached = 0;
  int64_t slot = 0;
  std::vector<int32_t> blocks;
  std::vector<float> got;  // got[p] = step log-prob of tokens[p + 1]; NaN until produced
};

// A piece for `s`: at a chunk boundary, sometimes 1..3 whole chunks, sometimes any length up to
// 3 chunks (leaving an open chunk that decode continues, like a prompt's last piece); otherwise
// one token.
inline int64_t RandomStepPiece(const StepSplitSeq& s, std::mt19937_64& rng) {
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

// How a test reads log-probs on its device: row_logprob(row [1, V] of ForwardStep's logits,
// target) and forward_logprobs(tokens), the whole-sequence forward's (entry p: tokens[p + 1]).
struct StepSplitReaders {
  std::function<float(const Tensor& row, int32_t target)> row_logprob;
  std::function<std::vector<float>(const std::vector<int32_t>& tokens)> forward_logprobs;
};

// Feeds sequences of `lengths` random tokens through ForwardStep on ctx's device in random
// pieces and compares every produced log-prob with the forward's, bitwise. Returns the number of
// positions compared (0 after a failed setup, which is recorded as a test failure).
inline int64_t RunStepSplits(const Context& ctx, const model::HybridModel& model,
                             const std::vector<int64_t>& lengths, uint64_t seed,
                             const StepSplitReaders& read) {
  const model::ModelConfig& config = model.config();
  std::mt19937_64 rng(seed);
  std::vector<StepSplitSeq> seqs(lengths.size());
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
  std::vector<int32_t> ids(total_blocks + 3);  // a few spare blocks, never used
  for (size_t j = 0; j < ids.size(); ++j) ids[j] = static_cast<int32_t>(j);
  std::shuffle(ids.begin(), ids.end(), rng);
  absl::StatusOr<model::InferenceCache> cache = model::InferenceCache::Create(
      config, static_cast<int64_t>(ids.size()), static_cast<int64_t>(slots.size()), ctx.device());
  EXPECT_TRUE(cache.ok()) << cache.status();
  if (!cache.ok()) return 0;
  size_t next = 0;
  for (StepSplitSeq& s : seqs) {
    for (size_t j = 0; j * kAttentionKvTile < s.tokens.size(); ++j) s.blocks.push_back(ids[next++]);
    cache->ResetSlot(s.slot);
  }
  for (;;) {
    std::vector<StepSplitSeq*> live;
    bool done = true;
    for (StepSplitSeq& s : seqs) {
      const bool more = s.cached < static_cast<int64_t>(s.tokens.size());
      done &= !more;
      if (more && rng() % 4 != 0) live.push_back(&s);
    }
    if (done) break;
    if (live.empty()) continue;
    std::shuffle(live.begin(), live.end(), rng);
    std::vector<model::StepSequence> batch;
    for (StepSplitSeq* s : live) {
      const int64_t n = RandomStepPiece(*s, rng);
      batch.push_back(
          {s->slot, s->cached,
           std::vector<int32_t>(s->tokens.begin() + s->cached, s->tokens.begin() + s->cached + n),
           s->blocks});
    }
    absl::StatusOr<Tensor> logits = model::ForwardStep(ctx, model, batch, *cache);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return 0;
    EXPECT_EQ(logits->device(), ctx.device());
    EXPECT_EQ(logits->dim(0), static_cast<int64_t>(live.size()));
    for (size_t b = 0; b < live.size(); ++b) {
      StepSplitSeq& s = *live[b];
      s.cached += static_cast<int64_t>(batch[b].tokens.size());
      const int64_t p = s.cached - 1;
      if (p + 1 < static_cast<int64_t>(s.tokens.size())) {
        s.got[p] = read.row_logprob(logits->Rows(b, b + 1), s.tokens[p + 1]);
      }
    }
  }
  int64_t compared = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const std::vector<float> want = read.forward_logprobs(seqs[i].tokens);
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

}  // namespace tandem::testing

// Rollout engine behaviour other than exactness: forks share the prompt's blocks, memory
// accounting, finish reasons, cancellation, bad requests (each with a message naming the field),
// requests that can never fit, and the three weight-update modes.
#include "rollout/engine.h"

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/core/contract.h"
#include "tests/rollout/engine_test_util.h"

namespace tandem::rollout {
namespace {

using ::testing::HasSubstr;

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() : config_(testing::TinyHybridConfig()), model_(testing::RandomModel(config_, 7)) {}

  static GenerateRequest Request(int64_t prompt_len, int64_t n, int64_t max_new, uint64_t seed) {
    GenerateRequest r;
    for (int64_t t = 0; t < prompt_len; ++t) r.prompt.push_back(static_cast<int32_t>(t * 5 % 64));
    r.sampling.n = n;
    r.sampling.max_new_tokens = max_new;
    r.sampling.seed = seed;
    return r;
  }

  model::ModelConfig config_;
  model::HybridModel model_;
};

TEST_F(EngineTest, ForkSharesThePromptBlocks) {
  auto engine = testing::MakeEngine(model_, 32, 8, 512, 1);
  // 100 tokens: one full block shared by all four samples, the partly filled one copied.
  ASSERT_TRUE(engine->Submit(Request(100, 4, 3, 1)).ok());
  ASSERT_TRUE(engine->Step().ok());  // prefill, fork, first token of every sample
  const MemoryReport m = engine->memory();
  EXPECT_EQ(m.used_slots, 4);
  EXPECT_EQ(m.used_blocks, 1 + 4);
  ASSERT_TRUE(engine->RunUntilIdle().ok());
  std::vector<RequestResult> done = engine->TakeFinished();
  ASSERT_EQ(done.size(), 1u);
  ASSERT_EQ(done[0].samples.size(), 4u);
  for (const SampleResult& s : done[0].samples) {
    EXPECT_EQ(s.finish_reason, FinishReason::kLength);
    EXPECT_EQ(s.tokens.size(), 3u);
    testing::ExpectExact(model_, Request(100, 4, 3, 1), s);
  }
  // Different sample indices draw different random numbers.
  EXPECT_NE(done[0].samples[0].tokens, done[0].samples[1].tokens);
  EXPECT_EQ(engine->memory().used_blocks, 0);
  EXPECT_EQ(engine->memory().used_slots, 0);
}

TEST_F(EngineTest, MemoryReportAccounting) {
  auto engine = testing::MakeEngine(model_, 20, 3, 512, 1);
  const MemoryReport m = engine->memory();
  EXPECT_EQ(m.bytes_per_block, model::InferenceCache::BytesPerBlock(config_));
  EXPECT_EQ(m.bytes_per_slot, model::InferenceCache::BytesPerSlot(config_));
  EXPECT_EQ(m.num_slots, 3);
  EXPECT_EQ(m.num_blocks, 20);
  EXPECT_EQ(m.token_capacity(), 20 * kAttentionKvTile);
  EXPECT_EQ(m.budget_bytes, 3 * m.bytes_per_slot + 20 * m.bytes_per_block);
  // One sequence: a prompt of 64 fills one block; each decode across a boundary adds one.
  ASSERT_TRUE(engine->Submit(Request(64, 1, 70, 2)).ok());
  for (int step = 0; engine->HasWork(); ++step) {
    ASSERT_TRUE(engine->Step().ok());
    const MemoryReport now = engine->memory();
    if (!engine->HasWork()) break;
    const int64_t cached = 64 + step;  // positions in the cache after this step
    EXPECT_EQ(now.used_slots, 1);
    EXPECT_EQ(now.linear_state_bytes(), m.bytes_per_slot);
    EXPECT_EQ(now.used_blocks, Scheduler::BlocksFor(cached)) << "step " << step;
    EXPECT_EQ(now.kv_bytes(), now.used_blocks * m.bytes_per_block);
  }
}

TEST_F(EngineTest, StopTokenAndLength) {
  auto engine = testing::MakeEngine(model_, 16, 4, 512, 1);
  GenerateRequest greedy = Request(10, 1, 8, 3);
  greedy.sampling.temperature = 0.0f;
  ASSERT_TRUE(engine->Submit(greedy).ok());
  ASSERT_TRUE(engine->RunUntilIdle().ok());
  const SampleResult first = engine->TakeFinished()[0].samples[0];
  ASSERT_EQ(first.tokens.size(), 8u);
  EXPECT_EQ(first.finish_reason, FinishReason::kLength);
  testing::ExpectExact(model_, greedy, first);
  // Stopping on the third greedy token: the same first three tokens, finish reason "stop".
  greedy.sampling.stop_token_ids = {first.tokens[2]};
  ASSERT_TRUE(engine->Submit(greedy).ok());
  ASSERT_TRUE(engine->RunUntilIdle().ok());
  const SampleResult stopped = engine->TakeFinished()[0].samples[0];
  EXPECT_EQ(stopped.finish_reason, FinishReason::kStop);
  const size_t k = std::find(first.tokens.begin(), first.tokens.end(), first.tokens[2]) -
                   first.tokens.begin() + 1;
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(first.tokens.begin(), first.tokens.begin() + k));
}

TEST_F(EngineTest, CancelRunningWaitingAndUnforked) {
  auto engine = testing::MakeEngine(model_, 8, 2, 64, 1);
  absl::StatusOr<RequestId> running = engine->Submit(Request(5, 1, 50, 1));
  absl::StatusOr<RequestId> group = engine->Submit(Request(130, 2, 50, 2));  // prefills in pieces
  absl::StatusOr<RequestId> waiting = engine->Submit(Request(5, 1, 50, 3));  // no slot left
  ASSERT_TRUE(running.ok() && group.ok() && waiting.ok());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(engine->Step().ok());
  ASSERT_EQ(engine->Result(*running)->samples[0].tokens.size(), 2u);
  EXPECT_TRUE(engine->Result(*group)->samples[0].tokens.empty());  // still prefilling
  for (RequestId id : {*running, *group, *waiting}) ASSERT_TRUE(engine->Cancel(id).ok());
  EXPECT_FALSE(engine->HasWork());
  EXPECT_EQ(engine->memory().used_blocks, 0);
  EXPECT_EQ(engine->memory().used_slots, 0);
  std::vector<RequestResult> done = engine->TakeFinished();
  ASSERT_EQ(done.size(), 3u);
  for (const RequestResult& r : done) {
    for (const SampleResult& s : r.samples) EXPECT_EQ(s.finish_reason, FinishReason::kCancelled);
  }
  EXPECT_EQ(done[0].samples[0].tokens.size(), 2u);  // kept what it had generated
  EXPECT_EQ(done[1].samples.size(), 2u);
  EXPECT_EQ(engine->Cancel(*running).code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, BadRequestsNameTheField) {
  auto engine = testing::MakeEngine(model_, 4, 2, 64, 1);
  auto message = [&](GenerateRequest r) {
    return std::string(engine->Submit(r).status().message());
  };
  GenerateRequest r = Request(3, 1, 4, 1);
  r.prompt.clear();
  EXPECT_THAT(message(r), HasSubstr("prompt: must hold at least one token"));
  r = Request(3, 1, 4, 1);
  r.prompt[1] = 64;
  EXPECT_THAT(message(r), HasSubstr("prompt: id 64 at index 1 is outside the vocabulary"));
  r = Request(3, 0, 4, 1);
  EXPECT_THAT(message(r), HasSubstr("n: must be >= 1"));
  r = Request(3, 1, 0, 1);
  EXPECT_THAT(message(r), HasSubstr("max_new_tokens"));
  r = Request(3, 1, 4, 1);
  r.sampling.temperature = -1.0f;
  EXPECT_THAT(message(r), HasSubstr("temperature"));
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.0f;
  EXPECT_THAT(message(r), HasSubstr("top_p"));
  r.sampling.top_p = 1.0f;
  r.sampling.stop_token_ids = {-1};
  EXPECT_THAT(message(r), HasSubstr("stop_token_ids"));
  // Can never fit: 4 blocks hold 256 positions; 3 samples need 3 slots, there are 2.
  EXPECT_THAT(message(Request(200, 1, 100, 1)), HasSubstr("can never fit"));
  EXPECT_THAT(message(Request(3, 3, 4, 1)),
              HasSubstr("n: 3 samples need 3 linear-attention slots"));
  EXPECT_EQ(engine->Submit(Request(200, 1, 100, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(engine->HasWork());
  // The largest request that fits does finish.
  ASSERT_TRUE(engine->Submit(Request(200, 1, 57, 1)).ok());
  ASSERT_TRUE(engine->RunUntilIdle().ok());
  EXPECT_EQ(engine->TakeFinished()[0].samples[0].tokens.size(), 57u);
}

TEST_F(EngineTest, BadOptions) {
  EngineOptions options;
  options.memory_budget_bytes = 1000;
  options.max_sequences = 2;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(Context::Cpu(1), model_, 0, options);
  EXPECT_THAT(engine.status().message(), HasSubstr("memory_budget_bytes"));
  options.memory_budget_bytes = 1 << 30;
  options.max_sequences = 0;
  EXPECT_THAT(Engine::Create(Context::Cpu(1), model_, 0, options).status().message(),
              HasSubstr("max_sequences"));
}

// Drain-first: the request submitted before the update finishes on version 0; the one submitted
// after waits, then runs entirely on version 1. Both are exact under their own weights.
TEST_F(EngineTest, DrainUpdate) {
  auto engine = testing::MakeEngine(model_, 32, 4, 512, 1);
  const model::HybridModel v1 = testing::RandomModel(config_, 8);
  const GenerateRequest a = Request(20, 2, 10, 1), b = Request(30, 1, 10, 2);
  ASSERT_TRUE(engine->Submit(a).ok());
  ASSERT_TRUE(engine->Step().ok());
  ASSERT_TRUE(
      engine->UpdateWeights(1, testing::RandomWeights(config_, 8), WeightUpdateMode::kDrain).ok());
  absl::StatusOr<RequestId> later = engine->Submit(b);
  ASSERT_TRUE(later.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(engine->Step().ok());
  EXPECT_TRUE(engine->update_pending());
  EXPECT_TRUE(engine->Result(*later)->samples[0].tokens.empty());  // held back
  ASSERT_TRUE(engine->RunUntilIdle().ok());
  EXPECT_EQ(engine->weight_version(), 1);
  std::vector<RequestResult> done = engine->TakeFinished();
  ASSERT_EQ(done.size(), 2u);
  for (const SampleResult& s : done[0].samples) {
    EXPECT_EQ(s.weight_versions, std::vector<int64_t>(10, 0));
    testing::ExpectExact(model_, a, s);
  }
  EXPECT_EQ(done[1].samples[0].weight_versions, std::vector<int64_t>(10, 1));
  testing::ExpectExact(v1, b, done[1].samples[0]);
}

// In flight: the running sequence continues on its cache; its later tokens carry version 1. With
// recompute, the cache is rebuilt, so those later tokens are exact under version 1.
TEST_F(EngineTest, InFlightUpdates) {
  const model::HybridModel v1 = testing::RandomModel(config_, 8);
  const GenerateRequest a = Request(20, 1, 12, 1);
  for (WeightUpdateMode mode :
       {WeightUpdateMode::kInFlight, WeightUpdateMode::kInFlightRecompute}) {
    auto engine = testing::MakeEngine(model_, 32, 4, 512, 1);
    ASSERT_TRUE(engine->Submit(a).ok());
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(engine->Step().ok());
    ASSERT_TRUE(engine->UpdateWeights(1, testing::RandomWeights(config_, 8), mode).ok());
    EXPECT_FALSE(engine->update_pending());
    ASSERT_TRUE(engine->RunUntilIdle().ok());
    const SampleResult s = engine->TakeFinished()[0].samples[0];
    std::vector<int64_t> versions(12, 1);
    std::fill(versions.begin(), versions.begin() + 4, 0);
    EXPECT_EQ(s.weight_versions, versions);
    std::vector<int32_t> full = a.prompt;
    full.insert(full.end(), s.tokens.begin(), s.tokens.end());
    std::vector<float> want_v1 = testing::ForwardLogprobs(v1, full, 1.0f);
    const std::vector<float> got(s.logprobs.begin() + 4, s.logprobs.end());
    const std::vector<float> want(want_v1.begin() + 20 - 1 + 4, want_v1.end());
    if (mode == WeightUpdateMode::kInFlightRecompute) {
      EXPECT_TRUE(testing::BitwiseEqual(got, want));
    } else {
      EXPECT_FALSE(testing::BitwiseEqual(got, want));  // stale cache: not version 1's numbers
    }
  }
}

TEST_F(EngineTest, UpdateWithWrongShapesIsRejected) {
  auto engine = testing::MakeEngine(model_, 8, 2, 64, 1);
  model::ModelConfig other = config_;
  other.hidden_size = 32;
  EXPECT_THAT(engine->UpdateWeights(1, model::AllocateWeights(other), WeightUpdateMode::kInFlight)
                  .message(),
              HasSubstr("weights: tensor 0 is model.word_embeddings.weight [64, 32]"));
  EXPECT_EQ(engine->weight_version(), 0);
}

}  // namespace
}  // namespace tandem::rollout

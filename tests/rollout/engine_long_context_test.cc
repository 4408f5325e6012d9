// Long context: a tiny two-layer hybrid (one linear, one softmax layer) generates more than 16K
// tokens in one sequence. After every step the engine's memory accounting must show the linear
// layers' part constant (one slot, whatever the length) and only the softmax layers' KV growing,
// one block per kAttentionKvTile positions. Then every one of the generated tokens' log-probs is
// checked bitwise against the training forward over the whole 16K-token sequence.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/contract.h"
#include "tests/rollout/engine_test_util.h"

namespace tandem::rollout {
namespace {

TEST(EngineLongContextTest, SixteenKTokensConstantLinearStateGrowingKv) {
  model::ModelConfig config = testing::TinyHybridConfig();
  config.num_hidden_layers = 2;
  config.layer_types = {model::LayerType::kLinear, model::LayerType::kSoftmax};
  const model::HybridModel model = testing::RandomModel(config, 11);
  const int64_t P = 7, M = 16384 + 100;
  auto engine = testing::MakeEngine(model, Scheduler::BlocksFor(P + M) + 2, 1, 256, 2);
  ASSERT_NE(engine, nullptr);
  GenerateRequest request;
  for (int64_t t = 0; t < P; ++t) request.prompt.push_back(static_cast<int32_t>(3 * t + 1));
  request.sampling.max_new_tokens = M;
  request.sampling.seed = 5;
  absl::StatusOr<RequestId> id = engine->Submit(request);
  ASSERT_TRUE(id.ok()) << id.status();

  const MemoryReport start = engine->memory();
  int64_t checked = 0;
  while (engine->HasWork()) {
    ASSERT_TRUE(engine->Step().ok());
    if (!engine->HasWork()) break;
    const MemoryReport m = engine->memory();
    const int64_t cached =
        P + static_cast<int64_t>(engine->Result(*id)->samples[0].tokens.size()) - 1;
    ASSERT_EQ(m.used_slots, 1);
    ASSERT_EQ(m.linear_state_bytes(), start.bytes_per_slot);  // constant in the length
    ASSERT_EQ(m.used_blocks, Scheduler::BlocksFor(cached));   // one block per tile of positions
    ASSERT_EQ(m.kv_bytes(), m.used_blocks * start.bytes_per_block);
    ++checked;
  }
  EXPECT_EQ(checked, M - 1);
  std::vector<RequestResult> done = engine->TakeFinished();
  ASSERT_EQ(done.size(), 1u);
  const SampleResult& s = done[0].samples[0];
  ASSERT_EQ(static_cast<int64_t>(s.tokens.size()), M);
  EXPECT_EQ(s.finish_reason, FinishReason::kLength);
  EXPECT_EQ(engine->memory().used_blocks, 0);
  // The whole 16K-token sequence, through the training forward: bitwise the engine's log-probs.
  testing::ExpectExact(model, request, s);
}

}  // namespace
}  // namespace tandem::rollout

// The SFT loop: the fixed rank assignment of a global batch; resume reproduces an uninterrupted
// run bit for bit (per-step losses, every weight, the AdamW moments, the loop state) across
// several micro-batches per step, epoch boundaries and expert-bias updates; metrics.jsonl keeps
// one line per step across a resume; greedy decoding over the incremental forward picks the same
// tokens as an argmax over HybridModel::Forward log-probs; held-out problems are unseen.
#include "trainer/sft_loop.h"

#include <fstream>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "nlohmann/json.hpp"
#include "tests/trainer/sft_test_util.h"
#include "trainer/addition_eval.h"
#include "trainer/checkpoint.h"
#include "trainer/sft_step.h"

namespace tandem::trainer {
namespace {

using testing::FirstDifferentParameter;
using ::testing::HasSubstr;
using testing::SmallSftConfig;
using testing::TempDir;

Example Seq(int32_t first, int64_t length) {
  Example e;
  for (int64_t i = 0; i < length; ++i) e.tokens.push_back(first + static_cast<int32_t>(i));
  e.loss_mask.assign(length, 1);
  e.loss_mask[0] = 0;
  return e;
}

TEST(ShardAndPackTest, ContiguousEqualSharesInGlobalOrder) {
  std::vector<Example> examples;
  for (int i = 0; i < 10; ++i) examples.push_back(Seq(i, 3 + i % 4));
  const std::vector<int64_t> global = {9, 2, 7, 0, 5, 5, 1, 8};
  std::vector<int64_t> seen;
  for (int rank = 0; rank < 2; ++rank) {
    absl::StatusOr<RankBatch> b = ShardAndPack(examples, global, rank, 2, /*max_tokens=*/8);
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(b->sequences.size(), 4u);
    int64_t tokens = 0, targets = 0;
    for (const MicroBatch& mb : b->micro_batches) {
      EXPECT_LE(mb.tokens.size(), 8u);
      tokens += mb.tokens.size();
      targets += mb.num_targets();
    }
    EXPECT_EQ(b->tokens, tokens);
    EXPECT_EQ(b->targets, targets);
    for (const Example& e : b->sequences) seen.push_back(e.tokens[0]);
  }
  EXPECT_EQ(seen, global);  // rank 0 holds positions 0..3, rank 1 positions 4..7
}

TEST(ShardAndPackTest, RejectsBatchesThatDoNotSplitEvenly) {
  std::vector<Example> examples = {Seq(0, 3), Seq(1, 3), Seq(2, 3)};
  const std::vector<int64_t> global = {0, 1, 2};
  absl::Status s = ShardAndPack(examples, global, 0, 2, 8).status();
  EXPECT_THAT(s.message(), HasSubstr("data.sequences_per_step"));
  EXPECT_FALSE(ShardAndPack(examples, global, 2, 2, 8).ok());
  EXPECT_FALSE(ShardAndPack(examples, std::vector<int64_t>{0, 5}, 0, 1, 8).ok());
}

SftLoopOptions NoEval() {
  SftLoopOptions o;
  o.eval.every_steps = -1;
  return o;
}

// N = 6 steps straight vs 3 steps, stop (checkpoint), resume, 3 more: the same bits everywhere.
TEST(SftLoopTest, ResumeIsBitwiseEqualToAnUninterruptedRun) {
  TempDir dir("sft_resume");
  const SftRunConfig straight_config = SmallSftConfig(dir.Sub("straight"));
  absl::StatusOr<SftResult> straight = RunSft(straight_config, NoEval());
  ASSERT_TRUE(straight.ok()) << straight.status();
  ASSERT_EQ(straight->steps.size(), 6u);

  const SftRunConfig split_config = SmallSftConfig(dir.Sub("split"));
  SftLoopOptions first_part = NoEval();
  first_part.max_steps_this_run = 3;
  absl::StatusOr<SftResult> head = RunSft(split_config, first_part);
  ASSERT_TRUE(head.ok()) << head.status();
  ASSERT_EQ(head->final_step, 3);
  EXPECT_EQ(head->last_checkpoint, CheckpointDir(dir.Sub("split/checkpoints"), 3));
  absl::StatusOr<SftResult> tail = RunSft(split_config, NoEval());
  ASSERT_TRUE(tail.ok()) << tail.status();
  EXPECT_EQ(tail->start_step, 3);
  ASSERT_EQ(tail->steps.size(), 3u);

  std::vector<SftStepMetrics> split = head->steps;
  split.insert(split.end(), tail->steps.begin(), tail->steps.end());
  for (size_t i = 0; i < 6; ++i) {
    const SftStepMetrics &a = straight->steps[i], &b = split[i];
    EXPECT_EQ(a.step, b.step);
    // Bitwise: the doubles must be identical, not just close.
    EXPECT_EQ(std::memcmp(&a.loss, &b.loss, sizeof(double)), 0) << "step " << a.step;
    EXPECT_EQ(std::memcmp(&a.grad_norm, &b.grad_norm, sizeof(double)), 0) << "step " << a.step;
    EXPECT_EQ(a.tokens, b.tokens);
  }
  EXPECT_LT(straight->steps.back().loss, straight->steps.front().loss);
  EXPECT_EQ(FirstDifferentParameter(straight->weights, tail->weights), "");

  // The final checkpoints agree too: AdamW moments and step, data cursor.
  absl::StatusOr<LoadedCheckpoint> a = LoadTrainingCheckpoint(straight->last_checkpoint);
  absl::StatusOr<LoadedCheckpoint> b = LoadTrainingCheckpoint(tail->last_checkpoint);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
  EXPECT_EQ(FirstDifferentParameter(a->weights, b->weights), "");
  EXPECT_EQ(FirstDifferentParameter(a->optimizer.m, b->optimizer.m), "");
  EXPECT_EQ(FirstDifferentParameter(a->optimizer.v, b->optimizer.v), "");
  EXPECT_EQ(a->optimizer.step, 6);
  EXPECT_EQ(b->optimizer.step, 6);
  EXPECT_EQ(a->loop.data_cursor.ToJson(), b->loop.data_cursor.ToJson());
  EXPECT_GE(a->loop.data_cursor.epoch, 2);  // 48 sequences from 20 examples: epochs crossed

  // metrics.jsonl: steps 1..6, once each, across the resume.
  std::ifstream in(dir.Sub("split/metrics.jsonl"));
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(in, line)) steps.push_back(nlohmann::json::parse(line)["step"]);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
}

TEST(SftLoopTest, ResumeRejectsACheckpointOfAnotherModel) {
  TempDir dir("sft_resume_other");
  SftLoopOptions options = NoEval();
  options.max_steps_this_run = 1;
  ASSERT_TRUE(RunSft(SmallSftConfig(dir.Sub("run")), options).ok());
  nlohmann::json other =
      model::ModelConfigToJson(*model::LoadModelConfig("configs/models/tiny-hybrid.json"));
  other["intermediate_size"] = 96;
  std::ofstream(dir.Sub("other.json")) << other.dump();
  absl::Status s =
      RunSft(SmallSftConfig(dir.Sub("run"), {"model.config=" + dir.Sub("other.json")}), options)
          .status();
  EXPECT_THAT(s.message(), HasSubstr("checkpoint.resume"));
}

// The slow, obviously correct greedy step: pack V copies of the prefix, copy v targets token v
// at the last position, take the argmax of the V log-probs (ties to the lower id).
std::vector<int32_t> ReferenceGreedy(const model::HybridModel& m, std::vector<int32_t> prefix,
                                     int64_t steps) {
  const int64_t V = m.config().vocab_size;
  std::vector<int32_t> out;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t L = static_cast<int64_t>(prefix.size());
    std::vector<int32_t> tokens, cu = {0}, targets;
    for (int64_t v = 0; v < V; ++v) {
      tokens.insert(tokens.end(), prefix.begin(), prefix.end());
      targets.insert(targets.end(), L - 1, -1);
      targets.push_back(static_cast<int32_t>(v));
      cu.push_back(static_cast<int32_t>(tokens.size()));
    }
    const int64_t T = static_cast<int64_t>(tokens.size());
    model::ForwardInput in{Tensor::FromVector(tokens, {T}), Tensor::FromVector(cu, {V + 1}),
                           Tensor::FromVector(targets, {T})};
    absl::StatusOr<Tensor> lp = m.Forward(Context::Cpu(2), in);
    EXPECT_TRUE(lp.ok()) << lp.status();
    int32_t best = 0;
    for (int64_t v = 1; v < V; ++v) {
      if (lp->data<float>()[(v + 1) * L - 1] > lp->data<float>()[(best + 1) * L - 1]) best = v;
    }
    out.push_back(best);
    prefix.push_back(best);
  }
  return out;
}

TEST(GreedyDecodeTest, MatchesArgmaxOverForwardLogprobs) {
  const model::ModelConfig config = *model::LoadModelConfig("configs/models/tiny-hybrid.json");
  model::ModelWeights w = model::AllocateWeights(config);
  model::InitWeights(config, 11, w);
  // Larger weights than the init's 0.02 std, so the argmax is not decided by tiny differences.
  w.ForEachParameter([](const std::string& name, Tensor& t) {
    if (name.find("norm") != std::string::npos) return;
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] *= 20.0f;
  });
  const model::HybridModel m(config, std::move(w));
  // Prompt lengths around the linear-attention chunk (64): decoding crosses the boundary.
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t len : {1, 5, 61, 64, 70}) {
    std::vector<int32_t> p;
    for (int64_t i = 0; i < len; ++i) p.push_back(static_cast<int32_t>((7 * i + len) % 60 + 2));
    prompts.push_back(p);
  }
  const std::vector<int64_t> max_new = {4, 6, 6, 3, 5};
  absl::StatusOr<std::vector<std::vector<int32_t>>> got =
      GreedyDecode(Context::Cpu(2), m, prompts, max_new, /*eos_id=*/-1, /*batch_size=*/2);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ((*got)[i], ReferenceGreedy(m, prompts[i], max_new[i])) << "prompt " << i;
  }
  // An EOS stops a sequence early: make the first greedy token of prompt 0 the "EOS".
  const int32_t eos = (*got)[0][0];
  absl::StatusOr<std::vector<std::vector<int32_t>>> stopped =
      GreedyDecode(Context::Cpu(1), m, {prompts[0]}, std::vector<int64_t>{4}, eos);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ((*stopped)[0], std::vector<int32_t>{eos});
}

TEST(HeldOutAdditionTest, DisjointFromTrainingAndDeterministic) {
  AdditionTaskOptions o;
  o.seed = 5;
  o.min_digits = 1;
  o.max_digits = 2;  // a small space: many duplicates to skip
  absl::StatusOr<std::vector<PromptResponse>> train = GenerateAdditionTask(500, o);
  absl::StatusOr<std::vector<PromptResponse>> held = HeldOutAdditionProblems(o, 500, 100);
  ASSERT_TRUE(train.ok() && held.ok()) << held.status();
  ASSERT_EQ(held->size(), 100u);
  std::set<std::string> seen;
  for (const PromptResponse& r : *train) seen.insert(r.prompt);
  for (const PromptResponse& r : *held) EXPECT_TRUE(seen.insert(r.prompt).second) << r.prompt;
  EXPECT_EQ((*HeldOutAdditionProblems(o, 500, 100))[99].prompt, held->back().prompt);
  o.max_digits = 1;  // 100 problems in all: cannot find 100 unseen ones
  EXPECT_FALSE(HeldOutAdditionProblems(o, 500, 100).ok());
}

}  // namespace
}  // namespace tandem::trainer

// Greedy decoding over the incremental forward, and exact match on held-out addition problems.
#include "trainer/addition_eval.h"

#include <algorithm>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/contract.h"
#include "kernels/core/status_macros.h"
#include "model/device_ops.h"
#include "model/hybrid_model_step.h"
#include "model/inference_cache.h"

namespace tandem::trainer {
namespace {

int32_t ArgMax(const float* row, int64_t vocab) {
  int64_t best = 0;
  for (int64_t v = 1; v < vocab; ++v) {
    if (row[v] > row[best]) best = v;  // strict: ties keep the lower id
  }
  return static_cast<int32_t>(best);
}

// Decodes prompts [begin, end) with one cache: slot i − begin, blocks covering the longest
// sequence the group can reach.
absl::Status DecodeGroup(const Context& ctx, const model::HybridModel& model,
                         const std::vector<std::vector<int32_t>>& prompts,
                         std::span<const int64_t> max_new, int32_t eos_id, int64_t begin,
                         int64_t end, std::vector<std::vector<int32_t>>& out) {
  const int64_t n = end - begin;
  int64_t max_len = 1;
  for (int64_t i = begin; i < end; ++i) {
    max_len = std::max<int64_t>(max_len, prompts[i].size() + max_new[i]);
  }
  const int64_t blocks_per_seq = (max_len + kAttentionKvTile - 1) / kAttentionKvTile;
  TANDEM_ASSIGN_OR_RETURN(
      model::InferenceCache cache,
      model::InferenceCache::Create(model.config(), n * blocks_per_seq, n, ctx.device()));
  std::vector<model::StepSequence> live;  // this step's batch
  std::vector<int64_t> live_index;        // prompt index of each entry of `live`
  for (int64_t i = begin; i < end; ++i) {
    if (max_new[i] <= 0) continue;
    model::StepSequence s;
    s.slot = i - begin;
    s.tokens = prompts[i];
    for (int64_t b = 0; b < blocks_per_seq; ++b) {
      s.block_table.push_back(s.slot * blocks_per_seq + b);
    }
    cache.ResetSlot(s.slot);
    live.push_back(std::move(s));
    live_index.push_back(i);
  }
  const int64_t V = model.config().vocab_size;
  while (!live.empty()) {
    TANDEM_ASSIGN_OR_RETURN(Tensor step_logits, model::ForwardStep(ctx, model, live, cache));
    // [B, V] on the host (a copy when the step ran on the GPU).
    TANDEM_ASSIGN_OR_RETURN(const Tensor logits, model::internal::ToHost(ctx, step_logits));
    std::vector<model::StepSequence> next;
    std::vector<int64_t> next_index;
    for (size_t b = 0; b < live.size(); ++b) {
      const int64_t i = live_index[b];
      const int32_t token = ArgMax(logits.data<float>() + b * V, V);
      out[i].push_back(token);
      if (token == eos_id || static_cast<int64_t>(out[i].size()) >= max_new[i]) continue;
      model::StepSequence s = std::move(live[b]);
      s.start_position += static_cast<int64_t>(s.tokens.size());
      s.tokens = {token};
      next.push_back(std::move(s));
      next_index.push_back(i);
    }
    live = std::move(next);
    live_index = std::move(next_index);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::vector<int32_t>>> GreedyDecode(
    const Context& ctx, const model::HybridModel& model,
    const std::vector<std::vector<int32_t>>& prompts, std::span<const int64_t> max_new_tokens,
    int32_t eos_id, int64_t batch_size) {
  TANDEM_CHECK_ARG(max_new_tokens.size() == prompts.size(), "max_new_tokens: expected ",
                   prompts.size(), " entries, got ", max_new_tokens.size());
  TANDEM_CHECK_ARG(batch_size >= 1, "batch_size: expected >= 1, got ", batch_size);
  for (size_t i = 0; i < prompts.size(); ++i) {
    TANDEM_CHECK_ARG(!prompts[i].empty(), "prompts[", i, "]: expected at least one token");
  }
  std::vector<std::vector<int32_t>> out(prompts.size());
  const int64_t n = static_cast<int64_t>(prompts.size());
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    TANDEM_RETURN_IF_ERROR(DecodeGroup(ctx, model, prompts, max_new_tokens, eos_id, begin,
                                       std::min(n, begin + batch_size), out));
  }
  return out;
}

absl::StatusOr<std::vector<PromptResponse>> HeldOutAdditionProblems(
    const AdditionTaskOptions& options, int64_t first_index, int64_t count) {
  TANDEM_CHECK_ARG(first_index >= 0, "first_index: expected >= 0, got ", first_index);
  TANDEM_CHECK_ARG(count >= 0, "count: expected >= 0, got ", count);
  // Generous headroom for skipped duplicates; small digit counts may not have `count` new ones.
  const int64_t generated = first_index + 4 * count + 64;
  TANDEM_ASSIGN_OR_RETURN(std::vector<PromptResponse> rows,
                          GenerateAdditionTask(generated, options));
  std::unordered_set<std::string> seen;
  for (int64_t i = 0; i < first_index; ++i) seen.insert(rows[i].prompt);
  std::vector<PromptResponse> held_out;
  for (int64_t i = first_index; i < generated && static_cast<int64_t>(held_out.size()) < count;
       ++i) {
    if (seen.insert(rows[i].prompt).second) held_out.push_back(rows[i]);
  }
  if (static_cast<int64_t>(held_out.size()) < count) {
    return absl::FailedPreconditionError(
        absl::StrCat("held-out addition problems: only ", held_out.size(), " of ", count,
                     " are distinct from the ", first_index, " training rows"));
  }
  return held_out;
}

absl::StatusOr<ExactMatch> AdditionExactMatch(const Context& ctx, const model::HybridModel& model,
                                              const model::Tokenizer& tokenizer,
                                              std::span<const PromptResponse> problems) {
  std::vector<std::vector<int32_t>> prompts, answers;
  std::vector<int64_t> max_new;
  for (const PromptResponse& p : problems) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, tokenizer.Encode(p.prompt));
    prompt.insert(prompt.begin(), tokenizer.bos_id());
    TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> answer, tokenizer.Encode(p.response));
    answer.push_back(tokenizer.eos_id());
    max_new.push_back(static_cast<int64_t>(answer.size()));
    prompts.push_back(std::move(prompt));
    answers.push_back(std::move(answer));
  }
  TANDEM_ASSIGN_OR_RETURN(auto outputs,
                          GreedyDecode(ctx, model, prompts, max_new, tokenizer.eos_id()));
  ExactMatch result;
  result.total = static_cast<int64_t>(problems.size());
  for (size_t i = 0; i < outputs.size(); ++i) result.correct += outputs[i] == answers[i];
  return result;
}

}  // namespace tandem::trainer

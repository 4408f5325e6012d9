// Held-out evaluation of the addition task: greedy decoding from "a+b=" and exact match of the
// answer digits and the end token. Decoding runs model::ForwardStep over an InferenceCache (prefill
// the prompt, then one token per step), whose logits are bitwise those HybridModel::Forward gives
// over the whole prefix, so the evaluation sees exactly the model the trainer trains. On a CUDA
// context the model and the cache are on the GPU and only the logits come back to the host.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/hybrid_model.h"
#include "model/tokenizer.h"
#include "trainer/addition_task.h"

namespace tandem::trainer {

// Greedy continuation of every prompt: at each step the argmax of the last position's logits (ties
// to the lower id). Sequence i stops after emitting `eos_id` or after max_new_tokens[i] tokens;
// the result holds the emitted tokens (the EOS included). Prompts are decoded in groups of at most
// `batch_size` sequences; the result does not depend on the grouping.
// REQUIRES: non-empty prompts with ids in the vocabulary; max_new_tokens.size() == prompts.size().
absl::StatusOr<std::vector<std::vector<int32_t>>> GreedyDecode(
    const Context& ctx, const model::HybridModel& model,
    const std::vector<std::vector<int32_t>>& prompts, std::span<const int64_t> max_new_tokens,
    int32_t eos_id, int64_t batch_size = 256);

// `count` addition problems that are not in the training set: rows of GenerateAdditionTask with
// indices from `first_index` on (sample i depends only on (seed, i)), skipping any whose prompt
// equals the prompt of one of training rows [0, first_index).
absl::StatusOr<std::vector<PromptResponse>> HeldOutAdditionProblems(
    const AdditionTaskOptions& options, int64_t first_index, int64_t count);

struct ExactMatch {
  int64_t correct = 0;
  int64_t total = 0;
  double fraction() const { return total > 0 ? static_cast<double>(correct) / total : 0.0; }
};

// Greedy-decodes BOS + prompt and counts the problems whose output is exactly the response's
// tokens followed by EOS (at most that many tokens are generated).
absl::StatusOr<ExactMatch> AdditionExactMatch(const Context& ctx, const model::HybridModel& model,
                                              const model::Tokenizer& tokenizer,
                                              std::span<const PromptResponse> problems);

}  // namespace tandem::trainer

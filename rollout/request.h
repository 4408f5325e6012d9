// What a client asks the rollout engine for and what it gets back (DESIGN.md §6, STYLE.md "Data
// flow": GenerateRequest → Sequence → EngineStep → Token{id, logprob, weight_version}). A request
// is one prompt with n samples; every sample reports, per generated token, the fp32 log-prob under
// the distribution it was drawn from and the weight version that computed it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tandem::rollout {

using RequestId = int64_t;

struct SamplingOptions {
  int64_t n = 1;                // samples of the prompt (a GRPO group), >= 1
  float temperature = 1.0f;     // > 0 divides the logits; 0 = greedy (argmax, ties to lower id)
  float top_p = 1.0f;           // in (0, 1]; 1 = no nucleus truncation
  int64_t top_k = 0;            // >= 0; 0 = no top-k truncation
  int64_t max_new_tokens = 16;  // >= 1 generated tokens per sample, the stop token included
  std::vector<int32_t> stop_token_ids;  // generating one of these finishes the sample ("stop")
  uint64_t seed = 0;                    // with (sample index, position), keys every random draw
};

struct GenerateRequest {
  std::vector<int32_t> prompt;  // token ids, at least one
  SamplingOptions sampling;
};

enum class FinishReason {
  kNone,       // still running
  kStop,       // produced a stop token (the last token of `tokens`)
  kLength,     // produced max_new_tokens tokens
  kCancelled,  // Engine::Cancel
  kError,      // the step that was to produce the next token failed; `error` says why
};
const char* FinishReasonName(FinishReason reason);  // "running", "stop", "length", ...

// One sample of a request. tokens[i] was drawn from the distribution whose log-prob is
// logprobs[i] (see rollout/README.md: log_softmax(logits / temperature)[token] in fp32, before
// top-k / top-p truncation; temperature 1 for greedy), computed by weights of weight_versions[i].
struct SampleResult {
  int64_t sample_index = 0;
  std::vector<int32_t> tokens;  // generated ids, prompt excluded
  std::vector<float> logprobs;
  std::vector<int64_t> weight_versions;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;  // set when finish_reason = kError
};

struct RequestResult {
  RequestId id = 0;
  std::vector<SampleResult> samples;  // n entries, by sample index
  bool finished() const;              // every sample has a finish reason
};

// Checks the fields a request can get wrong by itself (InvalidArgument naming the field).
// Whether it fits in the engine's memory is the engine's check.
absl::Status ValidateRequest(const GenerateRequest& request, int64_t vocab_size);

}  // namespace tandem::rollout

// Request validation and finish-reason names: every bad field gets an InvalidArgument naming it
// and what was expected, before the engine spends memory on the request.
#include "rollout/request.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tandem::rollout {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "running";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "?";
}

bool RequestResult::finished() const {
  for (const SampleResult& s : samples) {
    if (s.finish_reason == FinishReason::kNone) return false;
  }
  return true;
}

absl::Status ValidateRequest(const GenerateRequest& request, int64_t vocab_size) {
  const SamplingOptions& s = request.sampling;
  TANDEM_CHECK_ARG(!request.prompt.empty(), "prompt: must hold at least one token");
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    TANDEM_CHECK_ARG(request.prompt[i] >= 0 && request.prompt[i] < vocab_size, "prompt: id ",
                     request.prompt[i], " at index ", i, " is outside the vocabulary [0, ",
                     vocab_size, ")");
  }
  TANDEM_CHECK_ARG(s.n >= 1, "n: must be >= 1, got ", s.n);
  TANDEM_CHECK_ARG(std::isfinite(s.temperature) && s.temperature >= 0.0f,
                   "temperature: must be a finite number >= 0 (0 = greedy), got ", s.temperature);
  TANDEM_CHECK_ARG(s.top_p > 0.0f && s.top_p <= 1.0f, "top_p: must be in (0, 1], got ", s.top_p);
  TANDEM_CHECK_ARG(s.top_k >= 0, "top_k: must be >= 0 (0 = off), got ", s.top_k);
  TANDEM_CHECK_ARG(s.max_new_tokens >= 1, "max_new_tokens: must be >= 1, got ", s.max_new_tokens);
  for (int32_t id : s.stop_token_ids) {
    TANDEM_CHECK_ARG(id >= 0 && id < vocab_size, "stop_token_ids: id ", id,
                     " is outside the vocabulary [0, ", vocab_size, ")");
  }
  return absl::OkStatus();
}

}  // namespace tandem::rollout

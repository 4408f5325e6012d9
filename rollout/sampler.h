// The engine's sampling step: for each token to draw, the distribution log_softmax(logits / T) in
// fp32 (kernels::LogSoftmax, the same row routine the trainer's LogprobFromLogits uses), a draw
// keyed by (seed, sample index, position) so the token never depends on batching, and the
// reported log-prob read from that same row — before any top-k / top-p truncation.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/sample/sample.h"
#include "rollout/request.h"

namespace tandem::rollout {

// The drawn token and log_softmax(logits / T)[token] (T = 1 when greedy, temperature 0).
using SampledToken = kernels::DrawnToken;

// One token to draw from a row of the step's logits.
struct TokenDraw {
  int64_t row = 0;                            // row of the logits
  const SamplingOptions* sampling = nullptr;  // the request's; not null
  int64_t sample_index = 0;                   // which of the request's n samples
  int64_t position = 0;  // index the drawn token will have in the sequence (prompt included)
};

// Draws every token of `draws` from logits [n, V] f32 on ctx's device (ForwardStep's rows).
// Per distinct temperature, one LogSoftmax over the rows drawn from (each row once, however many
// samples draw from it): LogSoftmax gives a row the same bits in any batch, so this is the
// single-row distribution. The draws then run by kernels::SampleRows on that device — on the GPU
// only tokens and their log-probs come back, except for top-k / top-p draws, which read a host
// copy of the rows. Each draw is a pure function of its row and key, so the tokens depend on
// neither batching nor thread count. Result i belongs to draws[i]: the token, or why it could not
// be drawn.
std::vector<absl::StatusOr<SampledToken>> SampleTokens(const Context& ctx, const Tensor& logits,
                                                       const std::vector<TokenDraw>& draws);

}  // namespace tandem::rollout

// The engine's sampling step for one sequence: the distribution log_softmax(logits / temperature)
// in fp32 (kernels::LogSoftmax, the same row routine the trainer's LogprobFromLogits uses), a draw
// keyed by (seed, sample index, position) so the token never depends on batching, and the
// reported log-prob read from that same row — before any top-k / top-p truncation.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "rollout/request.h"

namespace tandem::rollout {

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;  // log_softmax(logits / T)[token]; T = 1 when greedy (temperature 0)
};

// logits [1, V] f32 on ctx's device (ForwardStep's row): the model's logits at position − 1.
// position = index the drawn token will have in the sequence (prompt included).
absl::StatusOr<SampledToken> SampleNext(const Context& ctx, const Tensor& logits,
                                        const SamplingOptions& options, int64_t sample_index,
                                        int64_t position);

}  // namespace tandem::rollout

// SampleNext: LogSoftmax + SampleToken on one logits row (contract rule 5). On the GPU the
// log-softmax runs there and the row comes back to the host for the draw.
#include "rollout/sampler.h"

#include "kernels/core/status_macros.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "kernels/sample/sample.h"
#include "model/device_ops.h"

namespace tandem::rollout {

absl::StatusOr<SampledToken> SampleNext(const Context& ctx, const Tensor& logits,
                                        const SamplingOptions& options, int64_t sample_index,
                                        int64_t position) {
  const int64_t V = logits.dim(1);
  const bool greedy = options.temperature == 0.0f;
  const float temperature = greedy ? 1.0f : options.temperature;
  Tensor logprobs = Tensor::Empty({1, V}, DType::kF32, logits.device());  // [1, V]
  Tensor lse = Tensor::Empty({1}, DType::kF32, logits.device());          // [1]
  TANDEM_RETURN_IF_ERROR(kernels::LogSoftmax(ctx, logits, temperature, logprobs, lse));
  if (logprobs.device() == Device::kCUDA) {
    // The draw reads the row on the host; the log-softmax itself ran on the GPU, so the reported
    // log-prob is the GPU's LogprobFromLogits value for the token (the trainer's).
    TANDEM_ASSIGN_OR_RETURN(logprobs, model::internal::ToHost(ctx, logprobs));
  }
  kernels::SamplingParams params;
  params.greedy = greedy;
  params.top_k = options.top_k;
  params.top_p = options.top_p;
  const kernels::SampleKey key{options.seed, static_cast<uint64_t>(sample_index),
                               static_cast<uint64_t>(position)};
  TANDEM_ASSIGN_OR_RETURN(int32_t token,
                          kernels::SampleToken(logprobs.data<float>(), V, params, key));
  return SampledToken{token, logprobs.data<float>()[token]};
}

}  // namespace tandem::rollout

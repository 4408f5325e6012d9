// LM head and log-probabilities in fp32 (contract rule 5).
//   logits = h · Wᵀ                          (GemmNT: batch-invariant rows)
//   z      = logits / temperature
//   lse    = log Σ_v exp(z_v)                (the vocab reduced in one fixed, row-local order)
//   logprob[t] = z[t, target_t] − lse[t]
// The sampler and the trainer both call LogprobFromLogits, so the log-prob reported for a sampled
// token is bitwise the one the trainer recomputes.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

// logits [T, V], targets [T] i32 in [0, V) (InvalidArgument otherwise), temperature > 0;
// writes logprob [T] and lse [T] (of z = logits / temperature).
absl::Status LogprobFromLogits(const Context& ctx, const Tensor& logits, const Tensor& targets,
                               float temperature, Tensor& logprob, Tensor& lse);

// log_softmax(logits / temperature) for every vocab entry, out [T, V]: the sampler's distribution.
// out[t, v] = z[t, v] − lse[t] with the same lse as LogprobFromLogits.
absl::Status LogSoftmax(const Context& ctx, const Tensor& logits, float temperature, Tensor& out,
                        Tensor& lse);

// The entropy of softmax(logits / temperature) per row, entropy [T], with its lse [T] (the same
// bits as LogprobFromLogits'): H = lse − Σ_v p_v·z_v, p_v = exp(z_v − lse). Entries with z = −inf
// contribute nothing; a row of only −inf has entropy 0, one with lse +inf or NaN has NaN. A
// metric (the policy's entropy), summed in double on the CPU and in fp32 on the GPU.
absl::Status SoftmaxEntropy(const Context& ctx, const Tensor& logits, float temperature,
                            Tensor& entropy, Tensor& lse);

// Gradient of Σ_t dlogprob[t] · logprob[t] w.r.t. logits:
//   dlogits[t, v] = dlogprob[t] · (onehot(target_t)[v] − softmax(z_t)[v]) / temperature.
absl::Status LogprobFromLogitsBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                                  const Tensor& lse, float temperature, const Tensor& dlogprob,
                                  Tensor& dlogits);

// Convenience: logits = h [T, Dm] · w [V, Dm]ᵀ into `logits` [T, V], then LogprobFromLogits.
absl::Status LmHeadLogprobFwd(const Context& ctx, const Tensor& h, const Tensor& w,
                              const Tensor& targets, float temperature, Tensor& logits,
                              Tensor& logprob, Tensor& lse);

namespace cpu {
// The row routine shared by everything above (and cross_entropy): lse of z = logits / temperature
// in one fixed, row-local order, the same for every caller, batch and thread count:
//   m    = max_v z_v                                  (v ascending)
//   s_l  = Σ_{v ≡ l mod 8} exp(z_v − m), v ascending  (8 fp32 lanes)
//   lse  = m + log(((s_0 + s_1) + (s_2 + s_3)) + ((s_4 + s_5) + (s_6 + s_7)))
// A row whose z are all −inf gives −inf; one with a +inf gives +inf; a NaN gives NaN.
inline constexpr int kLogSumExpLanes = 8;
float RowLogSumExp(const float* logits, int64_t vocab, float temperature);
}  // namespace cpu

}  // namespace tandem::kernels

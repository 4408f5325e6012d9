// LM head log-probabilities on the GPU: the semantics of LogprobFromLogits / LogSoftmax /
// LogprobFromLogitsBwd / LmHeadLogprobFwd (lm_head_logprob.h), fp32 throughout (contract rule 5).
// Numerics: one block of kLogprobThreads threads per row. z = logits / temperature; m = max z;
// thread i sums exp(z_v − m) over v = i, i + kLogprobThreads, ... ascending, then the block sum
// runs in the fixed BlockSum tree; lse = m + log(sum). The order depends only on V, so a row's lse
// is the same bits in any batch, and LogSoftmax's out[t, target] equals LogprobFromLogits'
// logprob[t] bitwise (one kernel computes both). It is not the CPU's order (cpu::RowLogSumExp), so
// GPU and CPU agree to rounding, not bitwise. NaN / ±inf rows follow the CPU rules.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

inline constexpr int kLogprobThreads = 512;

// logits [T, V] f32, targets [T] i32, logprob [T] f32, lse [T] f32: all on the GPU. Targets stay
// on the GPU and are not checked: one outside [0, V) gives a NaN log-prob.
absl::Status LogprobFromLogits(const Context& ctx, const Tensor& logits, const Tensor& targets,
                               float temperature, Tensor& logprob, Tensor& lse);

// out [T, V] = z − lse, lse [T]; all f32 on the GPU.
absl::Status LogSoftmax(const Context& ctx, const Tensor& logits, float temperature, Tensor& out,
                        Tensor& lse);

// entropy [T] and lse [T] of softmax(logits / temperature) (f32, GPU): the row kernel's lse, then
// Σ_v exp(z_v − lse)·z_v over the finite z in the same strided order and BlockSum tree.
absl::Status SoftmaxEntropy(const Context& ctx, const Tensor& logits, float temperature,
                            Tensor& entropy, Tensor& lse);

// dlogits [T, V] = dlogprob[t] · (onehot(target_t) − exp(z − lse)) / temperature (f32, GPU). A
// target outside [0, V) contributes no one-hot term.
absl::Status LogprobFromLogitsBwd(const Context& ctx, const Tensor& logits, const Tensor& targets,
                                  const Tensor& lse, float temperature, const Tensor& dlogprob,
                                  Tensor& dlogits);

// logits = h [T, Dm] · w [V, Dm]ᵀ through cuda::GemmNT (bf16 or f32 h and w, f32 logits; rows
// batch-invariant), then LogprobFromLogits.
absl::Status LmHeadLogprobFwd(const Context& ctx, const Tensor& h, const Tensor& w,
                              const Tensor& targets, float temperature, Tensor& logits,
                              Tensor& logprob, Tensor& lse);

}  // namespace tandem::kernels::cuda

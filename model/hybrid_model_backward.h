// The training pass of HybridModel: the forward pass of HybridModel::Forward (the same code, with
// its intermediate tensors kept) and the backward pass written by hand in reverse order, llm.c
// style (DESIGN.md §4, §5). The trainer owns the losses: it passes d loss / d logprob[t] and gets
// the gradient of every parameter.
// On a CUDA context (weights from UploadWeights or CastMasterInto, grads from AllocateGradients on
// the GPU) the activations and gradients stay on the GPU; the inputs (tokens, offsets, targets,
// dlogprob) and the returned log-probs are host tensors on both devices.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "model/activations.h"
#include "model/hybrid_model.h"
#include "model/weights.h"

namespace tandem::model {

struct BackwardOptions {
  // false: keep every layer's activations from the forward pass (fastest; memory grows with
  // layers × tokens). true: per-layer checkpointing — keep only each layer's input residual
  // stream [T, Dm] and recompute the layer's activations just before its backward (one extra
  // layer forward each; for long sequences). Both give bitwise identical gradients.
  bool recompute_layers = false;
};

// The forward pass of HybridModel::Forward, keeping what Backward needs. acts->logprob [T] holds
// the log-probs, bitwise those Forward returns for the same input and weights.
absl::StatusOr<ForwardActivations> TrainingForward(const Context& ctx, const HybridModel& model,
                                                   const ForwardInput& input,
                                                   const BackwardOptions& options = {});

// Accumulates (+=) into `grads` the gradient of L = Σ_t dlogprob[t] · logprob[t] with respect to
// every parameter of `model`. dlogprob [T] f32 on the host (positions whose target is −1 are
// ignored).
// REQUIRES: `acts` came from TrainingForward(ctx', model, input, ...) with the same weights and
// input; `grads` has the shapes of model.weights(), f32 on ctx's device (AllocateGradients(ctx,
// config) gives zeroed ones).
// The expert bias gets no gradient (it is set by the load-balancing rule). fp32 throughout;
// every weight gradient is a sum over tokens in a fixed order (kernels/ contracts), so the result
// is bitwise independent of the thread count and of BackwardOptions. On the GPU every op's CUDA
// backward is deterministic too (no atomics in sums), so two runs give the same bits; GPU and CPU
// gradients agree to the bf16 rounding of the GPU's GEMM and attention operands.
// entropy, when given: [T] f32 on ctx's device, each position's entropy (nats) of
// softmax(logits / temperature), from the logits the LM-head backward recomputes anyway
// (kernels::SoftmaxEntropy, whose lse is LogprobFromLogits' bits: the gradients do not change).
absl::Status Backward(const Context& ctx, const HybridModel& model, const ForwardInput& input,
                      const ForwardActivations& acts, const Tensor& dlogprob, ModelWeights& grads,
                      Tensor* entropy = nullptr);

// TrainingForward then Backward. Returns logprob [T]. The losses of a PPO-style trainer depend on
// the log-probs, so it calls the two halves itself; this is for losses with a known dlogprob.
absl::StatusOr<Tensor> ForwardBackward(const Context& ctx, const HybridModel& model,
                                       const ForwardInput& input, const Tensor& dlogprob,
                                       ModelWeights& grads, const BackwardOptions& options = {});

}  // namespace tandem::model

// The GPU copy of a model's weights (DESIGN.md §3 rule 6): the one cast that every GPU forward,
// rollout worker and log-prob pass of version v reads, so all of them see the same weight bits.
//   bf16: the embedding, every projection (qkv, dense, g_proj, dense MLP, shared and routed
//         experts) and the LM head (bf16 inputs with fp32 accumulation, rule 5).
//   f32:  every norm weight (input/post-attention/final RMSNorm, q/k norms, g_norm), the router and
//         its expert bias (rule 4: fp32 router).
// Tied embeddings stay tied: lm_head shares the embedding's device memory. The dtypes are those of
// AllocateWeights(config, Device::kCUDA) (model/weights.h), the one place they are stated.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/weights.h"

namespace tandem::model {

// A copy of host fp32 `weights` (of `config`) on ctx's GPU with the dtypes above.
// FailedPrecondition when ctx is not a CUDA context or Tandem was built without CUDA;
// InvalidArgument when a tensor is not f32 on the host or does not fit the config;
// ResourceExhausted when the GPU is full.
absl::StatusOr<ModelWeights> UploadWeights(const Context& ctx, const ModelConfig& config,
                                           const ModelWeights& weights);

// The device `weights` live on (that of the embedding).
inline Device WeightsDevice(const ModelWeights& weights) { return weights.embed.device(); }

}  // namespace tandem::model

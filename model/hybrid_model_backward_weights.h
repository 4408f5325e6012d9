// The weights a trainer keeps next to the model (DESIGN.md §3 rule 6, §4): fp32 gradients and fp32
// master copies on either device, and, on the GPU, the cast of the fp32 master into the compute
// weights the forward reads (bf16 matrices, fp32 norms and router: model/device_weights.h). The
// cast runs on the device and gives the bits UploadWeights gives from the same values on the host,
// so a trainer's compute weights of version v are those every rollout worker uploads from v.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/weights.h"

namespace tandem::model {

// Zeroed f32 tensors of the model's shapes on ctx's device (Backward's `grads`). Tied embeddings
// stay tied (lm_head shares embed). ResourceExhausted when the memory is not there.
absl::StatusOr<ModelWeights> AllocateGradients(const Context& ctx, const ModelConfig& config);

// An owned f32 copy of f32 `weights` (on either device) on `device`: the GPU master from host
// weights, or host weights (checkpoints) from the GPU master. Ordered on ctx's stream and complete
// on return. FailedPrecondition for the GPU in a build without CUDA.
absl::StatusOr<ModelWeights> CopyWeightsF32(const Context& ctx, const ModelConfig& config,
                                            const ModelWeights& weights, Device device);

// compute = cast(master), tensor by tensor: master f32 on the GPU; compute on the GPU with the
// dtypes of AllocateWeights(config, Device::kCUDA) (from UploadWeights or AllocateWeights): bf16
// tensors rounded to nearest even (FloatToBf16's bits), f32 tensors copied. On a CPU context
// (master and compute f32 on the host) it is a plain copy. Ordered on ctx's stream.
absl::Status CastMasterInto(const Context& ctx, const ModelWeights& master, ModelWeights& compute);

}  // namespace tandem::model

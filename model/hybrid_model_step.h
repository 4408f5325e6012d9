// Incremental inference for the rollout engine: run the model over the NEW tokens of several
// sequences at once (prefill chunks and single decode tokens in one batch), reading and extending
// each sequence's InferenceCache entries. Every op is row-local or reads the cache with the same
// routines as the training forward (contract rules 2 and 3), so the logits of a token are bitwise
// those HybridModel::Forward computes for it over the whole sequence.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "model/hybrid_model.h"
#include "model/inference_cache.h"

namespace tandem::model {

struct StepSequence {
  int64_t slot = 0;                  // the sequence's linear-attention slot in the cache
  int64_t start_position = 0;        // position of tokens[0] = tokens already in the cache
  std::vector<int32_t> tokens;       // new tokens, at least one
  std::vector<int32_t> block_table;  // KV blocks covering positions [0, start_position + size)
};

// Runs one engine step. REQUIRES: a sequence with more than one new token starts at a chunk
// boundary (start_position % kLinearAttentionChunk == 0); a sequence starting at position 0 has a
// reset slot. Returns the fp32 logits of each sequence's last new token, [B, V], in input order.
// Writes the new tokens' K/V into their blocks and advances each slot's linear state.
// On a CUDA context the weights (UploadWeights) and the cache (created on Device::kCUDA) must be
// on the GPU, and the logits are returned there; on a CPU context everything is on the host.
absl::StatusOr<Tensor> ForwardStep(const Context& ctx, const HybridModel& model,
                                   const std::vector<StepSequence>& batch, InferenceCache& cache);

}  // namespace tandem::model

// ModelWeights: every parameter of the hybrid model as fp32 CPU tensors, with the HF checkpoint
// names of MODEL.md §1.4. Routed experts are stored stacked ([E, ...]) so the MoE kernels can index
// them; ForEachParameter presents them per expert under their HF names as views.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/tensor.h"
#include "kernels/moe_experts/moe_experts.h"
#include "model/config.h"

namespace tandem::model {

struct LayerWeights {
  Tensor input_layernorm;              // [Dm]
  Tensor post_attention_layernorm;     // [Dm]
  Tensor qkv;                          // [(H + 2·Hkv)·D, Dm]; Hkv = H on linear layers
  Tensor dense;                        // [Dm, H·D] attention output projection
  Tensor query_layernorm;              // [D]
  Tensor key_layernorm;                // [D]
  Tensor g_proj;                       // [H·D, Dm]  linear layers only
  Tensor g_norm;                       // [H·D]      linear layers only
  Tensor mlp_gate, mlp_up;             // [I, Dm]    dense-MLP layers only
  Tensor mlp_down;                     // [Dm, I]
  Tensor router;                       // [E, Dm]    MoE layers only (mlp.gate.weight)
  Tensor expert_bias;                  // [E]        (mlp.gate.expert_bias)
  kernels::MoeExpertsWeights experts;  // gate/up [E, Ie, Dm], down [E, Dm, Ie]
  Tensor shared_gate, shared_up;       // [Is, Dm]   MoE layers with shared experts
  Tensor shared_down;                  // [Dm, Is]
};

struct ModelWeights {
  Tensor embed;       // [V, Dm]  model.word_embeddings.weight
  Tensor final_norm;  // [Dm]     model.norm.weight
  Tensor lm_head;     // [V, Dm]  lm_head.weight (shares embed's memory when tied)
  std::vector<LayerWeights> layers;

  // Calls fn(hf_name, tensor) for every checkpoint tensor, in a fixed order (embedding, layers in
  // order, final norm, lm_head). Expert tensors are [Ie, Dm] / [Dm, Ie] views into the stacks
  // (same dtype and device as the stacks).
  // With tied embeddings lm_head is not visited.
  void ForEachParameter(const std::function<void(const std::string&, Tensor&)>& fn);
  void ForEachParameter(const std::function<void(const std::string&, const Tensor&)>& fn) const;
};

// Zero-filled weights of the right shapes: f32 on the host, or on the GPU (Device::kCUDA) in the
// dtypes of model/device_weights.h (projection matrices bf16; norms, router, expert bias f32).
// Throws std::bad_alloc when the memory is not there.
ModelWeights AllocateWeights(const ModelConfig& config, Device device = Device::kCPU);

// Seeded initialisation: matrices ~ N(0, 0.02²) from a counter-based generator keyed by (seed,
// tensor name, element), so the result never depends on allocation order; norms = 1; expert bias
// = 0. The same seed gives the same bits on every machine.
void InitWeights(const ModelConfig& config, uint64_t seed, ModelWeights& weights);

// Loads `dir` (model.safetensors, or shards listed in model.safetensors.index.json); bf16 and f32
// tensors are converted to f32. A missing tensor, a wrong shape or dtype is an error naming the
// file and the tensor. Unused tensors (e.g. model.mtp*) are ignored.
absl::StatusOr<ModelWeights> LoadWeights(const ModelConfig& config, const std::string& dir);

// Writes config.json and the weights into `dir` as `dtype` (f32 or bf16); one file when the total
// is at most max_shard_bytes, else shards model-0000i-of-0000n.safetensors + the index.
absl::Status SaveCheckpoint(const ModelConfig& config, const ModelWeights& weights,
                            const std::string& dir, DType dtype,
                            int64_t max_shard_bytes = int64_t{5} << 30);

}  // namespace tandem::model

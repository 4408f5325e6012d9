// ModelConfig: the Ring-linear hybrid architecture, read from an HF config.json (MODEL.md §1).
// Unknown fields are ignored; missing required fields and inconsistent values are errors that name
// the file and the field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem::model {

enum class LayerType { kLinear, kSoftmax };

// Which layer factor the linear-attention decay uses (MODEL.md §2.2). kEngine, the default, is
// f_l = 1 − l/(L−1) + 1e-5 (SGLang, vLLM, AReno); kHfRemote is f_l = 1 − (l−1)/(L−1) + 1e-5 as
// the HF remote code is quoted. Selected by the config field "tandem_decay_convention"
// ("engine" | "hf_remote").
enum class DecayConvention { kEngine, kHfRemote };

struct ModelConfig {
  std::string model_type;             // "bailing_moe_linear"
  int64_t vocab_size = 0;             // V
  int64_t hidden_size = 0;            // Dm
  int64_t num_hidden_layers = 0;      // L
  int64_t num_attention_heads = 0;    // H (both layer types)
  int64_t num_key_value_heads = 0;    // Hkv, softmax layers only; linear layers are MHA
  int64_t head_dim = 0;               // D
  int64_t intermediate_size = 0;      // dense SwiGLU width (layers < first_k_dense_replace)
  int64_t first_k_dense_replace = 0;  // layers [0, k) use the dense MLP
  int64_t num_experts = 0;            // E routed experts (0: every layer dense)
  int64_t num_experts_per_tok = 0;    // K
  int64_t num_shared_experts = 0;     // shared experts, fused into one SwiGLU of width
                                      // num_shared_experts · moe_shared_expert_intermediate_size
  int64_t moe_intermediate_size = 0;  // routed expert width
  int64_t moe_shared_expert_intermediate_size = 0;
  int64_t n_group = 1;                 // router groups
  int64_t topk_group = 1;              // router groups kept
  double routed_scaling_factor = 1.0;  // multiplies the routed weights
  bool norm_topk_prob = true;
  std::string score_function = "sigmoid";
  int64_t group_norm_size = 1;         // groups of the linear-attention output RMSNorm
  int64_t layer_group_size = 1;        // G: every G-th layer is softmax
  std::vector<LayerType> layer_types;  // one per layer, from layer_types or layer_group_size
  double partial_rotary_factor = 1.0;  // rotary_dim = head_dim · factor
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool use_qk_norm = true;
  bool tie_word_embeddings = false;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;
  std::string dtype = "bfloat16";  // torch_dtype / dtype
  DecayConvention decay_convention = DecayConvention::kEngine;

  int64_t rotary_dim() const;
  bool IsMoeLayer(int64_t layer) const { return num_experts > 0 && layer >= first_k_dense_replace; }
  int64_t kv_heads(int64_t layer) const {
    return layer_types[layer] == LayerType::kLinear ? num_attention_heads : num_key_value_heads;
  }
  int64_t shared_intermediate_size() const {
    return num_shared_experts * moe_shared_expert_intermediate_size;
  }
  // Decay exponents x_h (λ_h = exp(−x_h)) of linear layer `layer`, one per head (MODEL.md §2.2).
  std::vector<float> LinearDecay(int64_t layer) const;
};

// Parses and validates a config. `source` names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& j, const std::string& source);
// Reads `path`, or `path`/config.json when `path` is a directory.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);
// The HF config.json form (round-trips through ParseModelConfig).
nlohmann::json ModelConfigToJson(const ModelConfig& config);

struct ParameterCounts {
  int64_t total = 0;                 // every parameter
  int64_t embedding = 0;             // word embeddings + lm_head
  int64_t active = 0;                // per token: all but the unselected routed experts
  int64_t active_non_embedding = 0;  // active − embedding
};
ParameterCounts CountParameters(const ModelConfig& config);

}  // namespace tandem::model

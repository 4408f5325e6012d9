// Tiny hybrid models with seeded random weights, packed token batches and the whole-sequence
// log-probs of HybridModel::Forward: the fixtures that the model, rollout and CLI tests share, so
// that every test builds "the tiny model" and its reference log-probs the same way. Header-only,
// so any test that links tandem_model can use it (the kernel tests never include it).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/core/context.h"
#include "kernels/core/status_macros.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/weights.h"
#include "tests/testing/compare.h"

namespace tandem::testing {

// A small hybrid config whose sizes are multiples of no tile (V = 61, Dm = 32): `num_layers`
// layers alternating linear/softmax attention starting with linear, a dense first FFN then MoE
// (8 experts in 4 groups, 2 groups kept, top-2, one shared expert), GQA 4:2, partial RoPE (R = 8
// of D = 16), 2 output-norm groups.
inline model::ModelConfig OddShapeHybridConfig(int num_layers) {
  model::ModelConfig c;
  c.model_type = "bailing_moe_linear";
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.num_hidden_layers = num_layers;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 48;
  c.first_k_dense_replace = 1;
  c.num_experts = 8;
  c.num_experts_per_tok = 2;
  c.num_shared_experts = 1;
  c.moe_intermediate_size = 16;
  c.moe_shared_expert_intermediate_size = 24;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.group_norm_size = 2;
  c.layer_group_size = 2;
  for (int l = 0; l < num_layers; ++l) {
    c.layer_types.push_back(l % 2 == 0 ? model::LayerType::kLinear : model::LayerType::kSoftmax);
  }
  c.partial_rotary_factor = 0.5;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 4096;
  return c;
}

// configs/models/tiny-hybrid.json (tests run from the source root): 4 layers linear/softmax
// alternating, dense then MoE FFN, GQA 4:2, D = 16, V = 64.
inline model::ModelConfig TinyHybridConfig() {
  absl::StatusOr<model::ModelConfig> config =
      model::LoadModelConfig("configs/models/tiny-hybrid.json");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : model::ModelConfig{};
}

// Weights large enough that every block matters: matrices uniform with variance 2/fan_in (unit-
// scale activations), norm weights in [0.5, 1.5], expert bias in [−0.05, 0.05].
inline model::ModelWeights RandomWeights(const model::ModelConfig& config, uint64_t seed) {
  model::ModelWeights weights = model::AllocateWeights(config);
  uint64_t stream = seed * 1000;
  weights.ForEachParameter([&](const std::string& name, Tensor& t) {
    std::vector<float> v;
    if (name.find("expert_bias") != std::string::npos) {
      v = RandomVector(t.numel(), ++stream, -0.05f, 0.05f);
    } else if (t.rank() == 1) {
      v = RandomVector(t.numel(), ++stream, 0.5f, 1.5f);
    } else {
      const float a = std::sqrt(6.0f / static_cast<float>(t.dim(1)));
      v = RandomVector(t.numel(), ++stream, -a, a);
    }
    std::copy(v.begin(), v.end(), t.data<float>());
  });
  return weights;
}

inline model::HybridModel RandomModel(const model::ModelConfig& config, uint64_t seed) {
  return model::HybridModel(config, RandomWeights(config, seed));
}

// A checkpoint directory (config.json + safetensors), as the CLI writes and reads it.
inline absl::StatusOr<model::HybridModel> LoadModel(const std::string& dir) {
  TANDEM_ASSIGN_OR_RETURN(model::ModelConfig config, model::LoadModelConfig(dir));
  TANDEM_ASSIGN_OR_RETURN(model::ModelWeights weights, model::LoadWeights(config, dir));
  return model::HybridModel(std::move(config), std::move(weights));
}

// Packed sequences for HybridModel::Forward; a target of −1 scores nothing.
struct TokenBatch {
  std::vector<int> tokens, cu_seqlens, targets;
};

// Random sequences of the given lengths (ids below `vocab`); targets are the next tokens, −1 at
// each sequence's end.
inline TokenBatch RandomTokenBatch(const std::vector<int>& lengths, uint64_t seed, int vocab) {
  std::mt19937_64 rng(seed);
  TokenBatch b;
  b.cu_seqlens = {0};
  for (int n : lengths) {
    for (int i = 0; i < n; ++i) b.tokens.push_back(static_cast<int>(rng() % vocab));
    for (int i = 0; i < n; ++i)
      b.targets.push_back(i + 1 < n ? b.tokens[b.tokens.size() - n + i + 1] : -1);
    b.cu_seqlens.push_back(b.cu_seqlens.back() + n);
  }
  return b;
}

// The batch as Forward's input; the targets tensor has the targets' own length (so a test can
// give a wrong one).
inline model::ForwardInput MakeForwardInput(const TokenBatch& b, float temperature = 1.0f) {
  const int64_t T = b.tokens.size();
  return {Tensor::FromVector<int32_t>(b.tokens, {T}),
          Tensor::FromVector<int32_t>(b.cu_seqlens, {static_cast<int64_t>(b.cu_seqlens.size())}),
          Tensor::FromVector<int32_t>(b.targets, {static_cast<int64_t>(b.targets.size())}),
          temperature};
}

// logprob[t] = log p(tokens[t + 1] | tokens[0..t]) at `temperature`, t < size − 1, from the
// training forward over the whole sequence.
inline std::vector<float> ForwardLogprobs(const model::HybridModel& model,
                                          const std::vector<int32_t>& tokens, float temperature,
                                          int threads = 1) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);
  model::ForwardInput input{
      Tensor::FromVector(tokens, {T}),
      Tensor::FromVector(std::vector<int32_t>{0, static_cast<int32_t>(T)}, {2}),
      Tensor::FromVector(targets, {T}), temperature};
  absl::StatusOr<Tensor> out = model.Forward(Context::Cpu(threads), input);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  return std::vector<float>(out->data<float>(), out->data<float>() + T - 1);
}

}  // namespace tandem::testing

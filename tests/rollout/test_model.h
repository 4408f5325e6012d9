// Random-weight tiny models for the ForwardStep and rollout engine tests, and the trainer-side
// log-probs (HybridModel::Forward over the whole sequence) they are compared with bitwise.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/weights.h"
#include "tests/testing/compare.h"

namespace tandem::testing {

// configs/models/tiny-hybrid.json (tests run from the source root): 4 layers linear/softmax
// alternating, dense then MoE FFN, GQA 4:2, D = 16, V = 64.
inline model::ModelConfig TinyHybridConfig() {
  absl::StatusOr<model::ModelConfig> config =
      model::LoadModelConfig("configs/models/tiny-hybrid.json");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : model::ModelConfig{};
}

// Weights large enough that every block matters: matrices uniform with variance 2/fan_in, norm
// weights in [0.5, 1.5], expert bias in [−0.05, 0.05].
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

// Fixtures for the model and engine tests on the GPU: the CUDA context, the tiny config at a head
// dimension the GPU attention kernels are built for, a config with Ring-mini-linear-2.0's layer
// shapes but few layers and experts, fast seeded weights for it, the host weights rounded as
// UploadWeights rounds them, and HybridModel on the GPU. Header-only; tests skip without a device
// (TANDEM_SKIP_WITHOUT_GPU).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/bf16.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/device_weights.h"
#include "model/hybrid_model.h"
#include "model/weights.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/tiny_model.h"

namespace tandem::testing {

// Default stream, a 16-thread host pool for the weight cast.
inline Context CudaContext() { return Context::Cuda(0, nullptr, 16); }

// configs/models/tiny-hybrid.json with head_dim 32: the GPU attention kernels are built for
// D in {32, 64, 128}, and the tiny config's D = 16 is none of them.
inline model::ModelConfig TinyGpuConfig() {
  model::ModelConfig c = TinyHybridConfig();
  c.head_dim = 32;
  return c;
}

// Ring-mini-linear-2.0's shapes (Dm 2048, 16 heads of 128, GQA 16:4, V 157184, expert width 512,
// dense first layer of 5120, rotary 64) with `layers` layers of which every 5th is softmax
// (5 layers = 4 linear + 1 softmax) and `experts` routed experts in 8 groups (the real model has
// 256 experts in 20 layers: too many to initialise randomly in a test; 64 keep the routing shape:
// 8 groups, 4 kept, top-8).
inline model::ModelConfig RingMiniShapeConfig(int layers = 5, int experts = 64) {
  absl::StatusOr<model::ModelConfig> c =
      model::LoadModelConfig("configs/models/ring-mini-linear-2.0.json");
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  c->num_hidden_layers = layers;
  c->num_experts = experts;
  c->layer_types.clear();
  for (int l = 0; l < layers; ++l) {
    c->layer_types.push_back((l + 1) % c->layer_group_size == 0 ? model::LayerType::kSoftmax
                                                                : model::LayerType::kLinear);
  }
  return *c;
}

// Seeded weights of RandomWeights' scales (matrices uniform with variance 2/fan_in, norms in
// [0.5, 1.5], expert bias in [−0.05, 0.05]) from a counter-based generator, filled in parallel:
// fast enough for billions of parameters.
inline model::ModelWeights FastRandomWeights(const model::ModelConfig& config, uint64_t seed,
                                             const Context& ctx) {
  model::ModelWeights weights = model::AllocateWeights(config);
  uint64_t stream = seed * 1000;
  weights.ForEachParameter([&](const std::string& name, Tensor& t) {
    float lo = -0.05f, hi = 0.05f;
    if (name.find("expert_bias") == std::string::npos) {
      lo = 0.5f, hi = 1.5f;
      if (t.rank() == 2) {
        hi = std::sqrt(6.0f / static_cast<float>(t.dim(1)));
        lo = -hi;
      }
    }
    const uint64_t key = ++stream * 0x9E3779B97F4A7C15ull;
    float* p = t.data<float>();
    ctx.ParallelFor(t.numel(), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        uint64_t z = key + static_cast<uint64_t>(i) * 0xBF58476D1CE4E5B9ull;  // splitmix64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        p[i] = lo + (hi - lo) * static_cast<float>(z >> 40) * 0x1.0p-24f;
      }
    });
  });
  return weights;
}

// A copy of the host weights with every tensor UploadWeights casts to bf16 (the matrices but the
// router) rounded to bf16, so a CPU forward over them sees the GPU's weight values.
inline model::ModelWeights RoundedAsUploaded(const model::ModelConfig& config,
                                             const model::ModelWeights& weights) {
  std::vector<Tensor> src;  // views, in ForEachParameter order
  weights.ForEachParameter([&](const std::string&, const Tensor& t) { src.push_back(t); });
  model::ModelWeights out = model::AllocateWeights(config);
  size_t next = 0;
  out.ForEachParameter([&](const std::string& name, Tensor& t) {
    const Tensor& s = src[next++];
    const bool bf16 = t.rank() >= 2 && !name.ends_with("mlp.gate.weight");
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float v = s.data<float>()[i];
      t.data<float>()[i] = bf16 ? RoundToBf16(v) : v;
    }
  });
  return out;
}

// The model with its weights uploaded to the GPU.
inline model::HybridModel GpuModel(const Context& ctx, const model::HybridModel& host) {
  absl::StatusOr<model::ModelWeights> w = model::UploadWeights(ctx, host.config(), host.weights());
  EXPECT_TRUE(w.ok()) << w.status();
  return model::HybridModel(host.config(), w.ok() ? *std::move(w) : model::ModelWeights());
}

}  // namespace tandem::testing

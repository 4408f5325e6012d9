// TrainingForward / Backward on the GPU (label gpu; skips without a device): the tiny model's GPU
// gradients against the CPU's (weights rounded as uploaded) within a bound measured from the bf16
// weight rounding's own effect on the gradients; the trainer's log-probs bitwise those of
// HybridModel::Forward on the GPU (the numerics contract: trainer == rollout); two backward runs
// bitwise equal; and the master → compute cast bitwise UploadWeights. The tolerance's premise and
// the host-side pieces run without a GPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "model/device_weights.h"
#include "model/hybrid_model.h"
#include "model/hybrid_model_backward.h"
#include "model/hybrid_model_backward_weights.h"
#include "tests/model/gpu/gpu_model_util.h"
#include "tests/testing/compare.h"
#include "tests/testing/tiny_model.h"

namespace tandem::model {
namespace {

using testing::BitwiseEqual;
using testing::Floats;
using testing::TokenBatch;

// The tiny GPU model with expert bias 3·e: experts and router groups are further apart than the
// sigmoid's range, so every token picks the same experts on both devices (as in
// hybrid_model_cuda_test).
ModelWeights ToleranceWeights(const ModelConfig& config) {
  ModelWeights weights = testing::RandomWeights(config, 3);
  for (LayerWeights& w : weights.layers) {
    if (!w.expert_bias.defined()) continue;
    for (int64_t e = 0; e < w.expert_bias.numel(); ++e) {
      w.expert_bias.data<float>()[e] = 3.0f * static_cast<float>(e);
    }
  }
  return weights;
}

// Sequences of 1, 17, 64, 65 and 200 tokens (chunk and tile edges); c_t uniform in [−1, 1].
struct Batch {
  TokenBatch tokens;
  std::vector<float> dlogprob;
};
Batch ToleranceBatch(const ModelConfig& config) {
  Batch b{testing::RandomTokenBatch({1, 17, 64, 65, 200}, 11, static_cast<int>(config.vocab_size)),
          {}};
  b.dlogprob = testing::RandomVector(b.tokens.tokens.size(), 88);
  return b;
}

struct Result {
  std::vector<float> logprob;
  ModelWeights grads;  // host f32
};

// TrainingForward + Backward on ctx (CPU, or the GPU with `model` uploaded); grads come back to
// the host.
Result RunBackward(const Context& ctx, const HybridModel& model, const Batch& b,
                   bool recompute = false) {
  Result r;
  const int64_t T = static_cast<int64_t>(b.tokens.tokens.size());
  absl::StatusOr<ModelWeights> grads = AllocateGradients(ctx, model.config());
  EXPECT_TRUE(grads.ok()) << grads.status();
  if (!grads.ok()) return r;
  absl::StatusOr<Tensor> lp =
      ForwardBackward(ctx, model, testing::MakeForwardInput(b.tokens),
                      Tensor::FromVector(b.dlogprob, {T}), *grads, {.recompute_layers = recompute});
  EXPECT_TRUE(lp.ok()) << lp.status();
  if (!lp.ok()) return r;
  r.logprob.assign(Floats(*lp).begin(), Floats(*lp).end());
  absl::StatusOr<ModelWeights> host = CopyWeightsF32(ctx, model.config(), *grads, Device::kCPU);
  EXPECT_TRUE(host.ok()) << host.status();
  if (host.ok()) r.grads = *std::move(host);
  return r;
}

std::vector<std::pair<std::string, Tensor>> Tensors(const ModelWeights& w) {
  std::vector<std::pair<std::string, Tensor>> out;
  w.ForEachParameter([&](const std::string& name, const Tensor& t) { out.emplace_back(name, t); });
  return out;
}

// ‖a − b‖₂ and ‖b‖₂ of one tensor, in fp64.
struct Norms {
  double diff = 0, ref = 0;
};
Norms L2(const Tensor& a, const Tensor& b) {
  Norms n;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data<float>()[i], y = b.data<float>()[i];
    n.diff += (x - y) * (x - y);
    n.ref += y * y;
  }
  n.diff = std::sqrt(n.diff);
  n.ref = std::sqrt(n.ref);
  return n;
}

// Relative L2 distance of `a` from `ref`, per tensor and over all tensors together.
struct RelDiff {
  std::vector<double> per_tensor;  // ForEachParameter order; 0 where ref is all zeros
  double global = 0;
};
RelDiff Relative(const ModelWeights& a, const ModelWeights& ref) {
  RelDiff r;
  const auto ta = Tensors(a), tr = Tensors(ref);
  double diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < ta.size(); ++i) {
    const Norms n = L2(ta[i].second, tr[i].second);
    r.per_tensor.push_back(n.ref > 0 ? n.diff / n.ref : n.diff);
    diff2 += n.diff * n.diff;
    ref2 += n.ref * n.ref;
  }
  r.global = std::sqrt(diff2 / ref2);
  return r;
}

// The bound: the GPU rounds activations and upstream gradients to bf16 where they enter GEMMs and
// attention — roundings of the same kind as the weight cast (2^-9 relative each), about twice as
// many, independent, so adding ~sqrt(2)x the weight cast's effect — hence at most kFactor times
// the weight rounding's own effect on the gradients (measured on the CPU: relative L2 0.041
// overall, 0.056 for the worst tensor), per tensor but never below the overall effect (a tensor
// whose own weights round little still sees the others' rounding through the chain), plus a floor
// for fp32 summation order. 4x, as hybrid_model_cuda_test uses for the log-probs.
constexpr double kFactor = 4.0;
constexpr double kFloor = 1e-3;

// No GPU needed: the bound is not vacuous (the weight rounding visibly moves the gradients) nor
// meaningless (it moves them by a small fraction of their size).
TEST(HybridModelBackwardCudaTest, WeightRoundingEffectOnGradientsIsMeasurable) {
  const ModelConfig config = testing::TinyGpuConfig();
  const ModelWeights weights = ToleranceWeights(config);
  const Batch b = ToleranceBatch(config);
  const Result f32 = RunBackward(Context::Cpu(2), HybridModel(config, weights), b);
  const Result rounded = RunBackward(
      Context::Cpu(2), HybridModel(config, testing::RoundedAsUploaded(config, weights)), b);
  const RelDiff effect = Relative(f32.grads, rounded.grads);
  std::cout << "[ info ] relative |g(bf16 w) - g(f32 w)|: global " << effect.global << ", max "
            << *std::max_element(effect.per_tensor.begin(), effect.per_tensor.end()) << "\n";
  EXPECT_GT(effect.global, 1e-4);
  EXPECT_LT(effect.global, 0.1);
}

TEST(HybridModelBackwardCudaTest, GradientsMatchCpuWithinTheBf16RoundingEffect) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const ModelWeights weights = ToleranceWeights(config);
  const Batch b = ToleranceBatch(config);
  const Context cpu = Context::Cpu(2);
  const Context gpu = testing::CudaContext();
  const HybridModel host_f32(config, weights);
  const HybridModel host_rounded(config, testing::RoundedAsUploaded(config, weights));
  const Result f32 = RunBackward(cpu, host_f32, b);
  const Result rounded = RunBackward(cpu, host_rounded, b);
  const Result dev = RunBackward(gpu, testing::GpuModel(gpu, host_f32), b);
  ASSERT_FALSE(dev.logprob.empty());

  const RelDiff effect = Relative(f32.grads, rounded.grads);
  const RelDiff got = Relative(dev.grads, rounded.grads);
  std::cout << "[ info ] relative |g(gpu) - g(cpu, bf16 w)|: global " << got.global
            << " (weight-rounding effect " << effect.global << ")\n";
  EXPECT_LE(got.global, kFactor * effect.global + kFloor);
  const auto names = Tensors(rounded.grads);
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i].first;
    if (name.ends_with("expert_bias")) {  // no gradient on either device
      EXPECT_EQ(got.per_tensor[i], 0.0) << name;
      continue;
    }
    const double bound = kFactor * std::max(effect.per_tensor[i], effect.global) + kFloor;
    EXPECT_LE(got.per_tensor[i], bound) << name << ": gpu " << got.per_tensor[i]
                                        << ", weight-rounding effect " << effect.per_tensor[i];
  }
}

// The numerics contract: the trainer's log-probs are the rollout's (GPU Forward), bitwise, with
// and without per-layer recomputation.
TEST(HybridModelBackwardCudaTest, TrainingForwardLogprobsBitwiseEqualForward) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const Context gpu = testing::CudaContext();
  const HybridModel model = testing::GpuModel(gpu, HybridModel(config, ToleranceWeights(config)));
  const Batch b = ToleranceBatch(config);
  const ForwardInput input = testing::MakeForwardInput(b.tokens);
  absl::StatusOr<Tensor> forward = model.Forward(gpu, input);
  ASSERT_TRUE(forward.ok()) << forward.status();
  for (bool recompute : {false, true}) {
    absl::StatusOr<ForwardActivations> acts =
        TrainingForward(gpu, model, input, {.recompute_layers = recompute});
    ASSERT_TRUE(acts.ok()) << acts.status();
    ASSERT_EQ(acts->logprob.device(), Device::kCPU);
    EXPECT_TRUE(BitwiseEqual(Floats(acts->logprob), Floats(*forward)))
        << "recompute_layers " << recompute;
  }
  // And after a backward pass (Backward does not touch the log-probs ForwardBackward returns).
  EXPECT_TRUE(BitwiseEqual(RunBackward(gpu, model, b).logprob, Floats(*forward)));
}

// No atomics in any sum: the same input gives the same gradient bits, run after run, and per-layer
// recomputation reproduces the kept activations bitwise.
TEST(HybridModelBackwardCudaTest, GradientsAreDeterministic) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const Context gpu = testing::CudaContext();
  const HybridModel model = testing::GpuModel(gpu, HybridModel(config, ToleranceWeights(config)));
  const Batch b = ToleranceBatch(config);
  const Result first = RunBackward(gpu, model, b);
  const Result second = RunBackward(gpu, model, b);
  const Result recomputed = RunBackward(gpu, model, b, /*recompute=*/true);
  const auto t1 = Tensors(first.grads), t2 = Tensors(second.grads), t3 = Tensors(recomputed.grads);
  ASSERT_EQ(t1.size(), t2.size());
  for (size_t i = 0; i < t1.size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(Floats(t1[i].second), Floats(t2[i].second))) << t1[i].first;
    EXPECT_TRUE(BitwiseEqual(Floats(t1[i].second), Floats(t3[i].second)))
        << t1[i].first << " (recompute_layers)";
  }
}

// Host bytes of every stored tensor of GPU weights, in ForEachParameter order.
std::vector<std::vector<char>> DeviceBytes(const Context& ctx, const ModelWeights& w) {
  std::vector<std::vector<char>> out;
  w.ForEachParameter([&](const std::string& name, const Tensor& t) {
    absl::StatusOr<Tensor> host = kernels::cuda::CopyToHost(ctx, t);
    EXPECT_TRUE(host.ok()) << name << ": " << host.status();
    if (!host.ok()) return;
    const char* p = static_cast<const char*>(host->raw_data());
    out.emplace_back(p, p + host->nbytes());
  });
  return out;
}

// The trainer's compute weights (CastMasterInto from the GPU master) are UploadWeights' bits from
// the same host values: ties, NaN payloads, infinities and denormals included.
TEST(HybridModelBackwardCudaTest, CastMasterIntoGivesUploadWeightsBits) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig config = testing::TinyGpuConfig();
  const Context gpu = testing::CudaContext();
  ModelWeights host = ToleranceWeights(config);
  float* q = host.layers[0].qkv.data<float>();
  const uint32_t specials[] = {0x3f808000u, 0x3f818000u, 0x7fc12345u, 0x7f812345u,
                               0xff800000u, 0x00000001u, 0x807fffffu, 0x7f7fffffu};
  for (size_t i = 0; i < std::size(specials); ++i) std::memcpy(&q[i], &specials[i], 4);
  absl::StatusOr<ModelWeights> uploaded = UploadWeights(gpu, config, host);
  ASSERT_TRUE(uploaded.ok()) << uploaded.status();
  absl::StatusOr<ModelWeights> master = CopyWeightsF32(gpu, config, host, Device::kCUDA);
  ASSERT_TRUE(master.ok()) << master.status();
  ModelWeights compute = AllocateWeights(config, Device::kCUDA);
  ASSERT_TRUE(CastMasterInto(gpu, *master, compute).ok());
  const auto want = DeviceBytes(gpu, *uploaded), got = DeviceBytes(gpu, compute);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(want[i], got[i]) << "tensor " << i;
}

// Host-side pieces (no GPU): CPU gradients are zeroed f32 of the weights' shapes; the f32 copy and
// the cast (a plain copy on the CPU) reproduce the weights.
TEST(HybridModelBackwardCudaTest, HostCopiesAndGradientsOnTheCpu) {
  const ModelConfig config = testing::TinyGpuConfig();
  const Context cpu = Context::Cpu(1);
  const ModelWeights weights = ToleranceWeights(config);
  absl::StatusOr<ModelWeights> grads = AllocateGradients(cpu, config);
  ASSERT_TRUE(grads.ok()) << grads.status();
  absl::StatusOr<ModelWeights> copy = CopyWeightsF32(cpu, config, weights, Device::kCPU);
  ASSERT_TRUE(copy.ok()) << copy.status();
  ModelWeights cast = AllocateWeights(config);
  ASSERT_TRUE(CastMasterInto(cpu, weights, cast).ok());
  const auto tw = Tensors(weights), tg = Tensors(*grads), tc = Tensors(*copy), tk = Tensors(cast);
  ASSERT_EQ(tw.size(), tg.size());
  for (size_t i = 0; i < tw.size(); ++i) {
    EXPECT_EQ(tg[i].second.shape(), tw[i].second.shape()) << tw[i].first;
    EXPECT_TRUE(std::all_of(Floats(tg[i].second).begin(), Floats(tg[i].second).end(), [](float x) {
      return x == 0.0f;
    })) << tw[i].first;
    EXPECT_TRUE(BitwiseEqual(Floats(tc[i].second), Floats(tw[i].second))) << tw[i].first;
    EXPECT_TRUE(BitwiseEqual(Floats(tk[i].second), Floats(tw[i].second))) << tw[i].first;
  }
}

}  // namespace
}  // namespace tandem::model

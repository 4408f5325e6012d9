// Whole-model throughput on one GPU: Ring-mini-linear-2.0's shape (20 layers, 256 experts) with
// random weights in the GPU cast (model::AllocateWeights on the device, filled by a hash), the
// hybrid model (every 5th layer softmax) against an all-softmax variant of the same shape. Through
// model::ForwardStep, the rollout engine's step, at batch B (64) for contexts 4K..128K:
//   decode:  B sequences, one new token each at position context − 1;
//   decode+sample: the decode step, then every sequence's token drawn (rollout::SampleTokens, the
//            engine's sampling: temperature 1, on the GPU);
//   prefill: B sequences, one 64-token chunk each at positions [context − 64, context).
// The cache is filled synthetically (zeros; the kernels read every key whatever its value), so no
// 8M-token prefill is needed. A context whose KV cache does not fit in the GPU's free memory is
// reported as such. CUDA-event timing around whole steps (host work included), warm-up first,
// median of the timed steps; "host" is the median time the step call itself took on the host.
//   model_throughput_cuda_bench [--csv] [--contexts 4096,32768,65536,131072] [--batch 64]
//                               [--layers 20] [--experts 256] [--variants hybrid,all-softmax]
//                               [--modes decode,decode+sample,prefill]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/gpu/bench_util.cuh"
#include "kernels/core/context.h"
#include "kernels/core/contract.h"
#include "kernels/core/cuda_util.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/hybrid_model_step.h"
#include "model/inference_cache.h"
#include "model/weights.h"
#include "rollout/sampler.h"

namespace {

using tandem::Context;
using tandem::Device;
using tandem::DType;
using tandem::Tensor;
namespace model = tandem::model;
namespace rollout = tandem::rollout;

struct Options {
  bool csv = false;
  std::vector<int64_t> contexts = {4096, 32768, 65536, 131072};
  int64_t batch = 64;
  int64_t layers = 20;
  int64_t experts = 256;
  std::vector<std::string> variants = {"hybrid", "all-softmax"};
  std::vector<std::string> modes = {"decode", "decode+sample", "prefill"};
  bool Runs(const std::string& mode) const {
    return std::find(modes.begin(), modes.end(), mode) != modes.end();
  }
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = s.find(',', start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--csv") {
      o.csv = true;
    } else if (a == "--contexts" && has_value) {
      o.contexts.clear();
      for (const std::string& c : Split(argv[++i])) o.contexts.push_back(std::stoll(c));
    } else if (a == "--batch" && has_value) {
      o.batch = std::stoll(argv[++i]);
    } else if (a == "--layers" && has_value) {
      o.layers = std::stoll(argv[++i]);
    } else if (a == "--experts" && has_value) {
      o.experts = std::stoll(argv[++i]);
    } else if (a == "--variants" && has_value) {
      o.variants = Split(argv[++i]);
    } else if (a == "--modes" && has_value) {
      o.modes = Split(argv[++i]);
      for (const std::string& mode : o.modes) {
        if (mode != "decode" && mode != "decode+sample" && mode != "prefill") {
          std::fprintf(stderr, "--modes: unknown mode \"%s\" (decode, decode+sample, prefill)\n",
                       mode.c_str());
          std::exit(2);
        }
      }
    } else {
      std::fprintf(stderr, "unknown or incomplete argument: %s\n", a.c_str());
      std::exit(2);
    }
  }
  return o;
}

// t[i] = lo + (hi − lo)·u(i) with u a hash of (seed, i) in [0, 1), stored as f32 or bf16.
__global__ void FillUniform(void* p, bool bf16, int64_t n, uint64_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t z = seed + static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float v = lo + (hi - lo) * static_cast<float>(z >> 40) * 0x1.0p-24f;
    if (bf16) {
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    } else {
      static_cast<float*>(p)[i] = v;
    }
  }
}

// Weights of the GPU cast, filled like the tests' random weights: matrices uniform with variance
// 2/fan_in, norms in [0.5, 1.5], expert bias in [−0.05, 0.05].
model::ModelWeights RandomDeviceWeights(const model::ModelConfig& config) {
  model::ModelWeights w = model::AllocateWeights(config, Device::kCUDA);
  uint64_t seed = 1;
  w.ForEachParameter([&](const std::string& name, Tensor& t) {
    float lo = 0.5f, hi = 1.5f;
    if (name.find("expert_bias") != std::string::npos) {
      lo = -0.05f, hi = 0.05f;
    } else if (t.rank() == 2) {
      hi = std::sqrt(6.0f / static_cast<float>(t.dim(1)));
      lo = -hi;
    }
    FillUniform<<<1024, 256>>>(t.raw_data(), t.dtype() == DType::kBF16, t.numel(),
                               (seed++) * 0xD1B54A32D192ED03ull, lo, hi);
  });
  if (cudaDeviceSynchronize() != cudaSuccess) {
    std::fprintf(stderr, "weight fill failed\n");
    std::exit(1);
  }
  return w;
}

model::ModelConfig VariantConfig(const Options& o, const std::string& variant) {
  absl::StatusOr<model::ModelConfig> c =
      model::LoadModelConfig("configs/models/ring-mini-linear-2.0.json");
  CHECK_OK(c.status());
  c->num_hidden_layers = o.layers;
  c->num_experts = o.experts;
  c->layer_types.clear();
  for (int64_t l = 0; l < o.layers; ++l) {
    const bool softmax = variant == "all-softmax" || (l + 1) % c->layer_group_size == 0;
    c->layer_types.push_back(softmax ? model::LayerType::kSoftmax : model::LayerType::kLinear);
  }
  if (variant == "all-softmax") c->layer_group_size = 1;
  return *c;
}

// Medians over `steps` timed calls of fn after `warmup` calls: the step (CUDA events around it,
// host work included) and the host time of the call alone (until fn returns, with its launches
// queued); `before` runs untimed ahead of every call (cache bookkeeping).
struct StepTimes {
  double ms = 0, host_ms = 0;
};
template <typename Before, typename Fn>
StepTimes MedianMs(int warmup, int steps, Before&& before, Fn&& fn) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> ms, host_ms;
  for (int i = 0; i < warmup + steps; ++i) {
    before();
    cudaDeviceSynchronize();
    cudaEventRecord(start);
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float once = 0;
    cudaEventElapsedTime(&once, start, stop);
    if (i >= warmup) {
      ms.push_back(once);
      host_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  std::sort(host_ms.begin(), host_ms.end());
  return {ms[ms.size() / 2], host_ms[host_ms.size() / 2]};
}

// Sets every linear layer's open-chunk length of slots [0, batch) to `len`.
void SetOpenLen(const model::ModelConfig& config, model::InferenceCache& cache, int64_t batch,
                int32_t len) {
  const std::vector<int32_t> host(batch, len);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.layer_types[l] != model::LayerType::kLinear) continue;
    cudaMemcpy(cache.linear_layer(l).open_len.raw_data(), host.data(), batch * sizeof(int32_t),
               cudaMemcpyHostToDevice);
  }
}

void Report(const Options& o, const std::string& what, const std::string& variant, int64_t context,
            StepTimes t, int64_t tokens) {
  const double ms = t.ms, tok_s = tokens / (ms * 1e-3);
  std::printf(
      "%-12s %-8s context %7ld  batch %3ld  %9.2f ms/step  %10.0f tokens/s  (host %.2f ms)\n",
      variant.c_str(), what.c_str(), static_cast<long>(context), static_cast<long>(o.batch), ms,
      tok_s, t.host_ms);
  if (o.csv) {
    std::string name = "model_" + what + "_" + variant;
    std::replace(name.begin(), name.end(), '-', '_');
    std::replace(name.begin(), name.end(), '+', '_');
    std::printf("csv,%s,%ld,%ld,%.4f,%.1f,tokens/s\n", name.c_str(), static_cast<long>(context),
                static_cast<long>(o.batch), ms, tok_s);
  }
}

// Decode and prefill steps of one variant at one context, on a cache made for it.
void RunContext(const Options& o, const Context& ctx, const model::HybridModel& m,
                const std::string& variant, int64_t context) {
  const model::ModelConfig& config = m.config();
  const int64_t B = o.batch, per_seq = context / tandem::kAttentionKvTile;
  const int64_t num_blocks = B * per_seq;
  const int64_t bytes = num_blocks * model::InferenceCache::BytesPerBlock(config, Device::kCUDA) +
                        B * model::InferenceCache::BytesPerSlot(config);
  // Tensors free into the device's memory pool, which keeps the memory: hand it back to the
  // driver first so the free figure counts it.
  cudaDeviceSynchronize();
  cudaMemPool_t pool = nullptr;
  if (cudaDeviceGetDefaultMemPool(&pool, ctx.cuda_device()) == cudaSuccess) {
    cudaMemPoolTrimTo(pool, 0);
  }
  size_t free_bytes = 0, total_bytes = 0;
  cudaMemGetInfo(&free_bytes, &total_bytes);
  const int64_t reserve = int64_t{8} << 30;  // activations of a 4096-token step, workspaces
  if (bytes + reserve > static_cast<int64_t>(free_bytes)) {
    std::printf(
        "%-12s context %7ld  batch %3ld  cache does not fit: needs %.1f GiB (+%.0f GiB "
        "working memory), %.1f GiB free of %.1f GiB\n",
        variant.c_str(), static_cast<long>(context), static_cast<long>(B), bytes / 1073741824.0,
        reserve / 1073741824.0, free_bytes / 1073741824.0, total_bytes / 1073741824.0);
    if (o.csv) {
      std::printf("csv,model_cache_does_not_fit_%s,%ld,%ld,0,%.1f,GiB\n",
                  variant == "hybrid" ? "hybrid" : "all_softmax", static_cast<long>(context),
                  static_cast<long>(B), bytes / 1073741824.0);
    }
    return;
  }
  absl::StatusOr<model::InferenceCache> cache =
      model::InferenceCache::Create(config, num_blocks, B, Device::kCUDA);
  CHECK_OK(cache.status());
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.layer_types[l] == model::LayerType::kSoftmax) {
      cache->softmax_layer(l).k.SetZero();
      cache->softmax_layer(l).v.SetZero();
    }
  }
  for (int64_t b = 0; b < B; ++b) cache->ResetSlot(b);
  std::vector<model::StepSequence> decode(B), prefill(B);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> blocks(per_seq);
    for (int64_t j = 0; j < per_seq; ++j) blocks[j] = static_cast<int32_t>(b * per_seq + j);
    decode[b] = {b, context - 1, {static_cast<int32_t>((b * 7919) % config.vocab_size)}, blocks};
    std::vector<int32_t> chunk(tandem::kLinearAttentionChunk);
    for (size_t i = 0; i < chunk.size(); ++i) {
      chunk[i] = static_cast<int32_t>((b * 7919 + i * 104729) % config.vocab_size);
    }
    prefill[b] = {b, context - tandem::kLinearAttentionChunk, chunk, blocks};
  }
  const auto step = [&](const std::vector<model::StepSequence>& batch) {
    CHECK_OK(model::ForwardStep(ctx, m, batch, *cache).status());
  };
  if (o.Runs("decode")) {
    const StepTimes decode_ms = MedianMs(
        3, 10, [&] { SetOpenLen(config, *cache, B, tandem::kLinearAttentionChunk - 1); },
        [&] { step(decode); });
    Report(o, "decode", variant, context, decode_ms, B);
  }
  // The engine's decode step: the same, then every sequence draws its next token (temperature 1,
  // no top-k / top-p: on the GPU, rollout::SampleTokens).
  const rollout::SamplingOptions sampling;
  std::vector<rollout::TokenDraw> draws;
  for (int64_t b = 0; b < B; ++b) draws.push_back({b, &sampling, 0, context});
  if (o.Runs("decode+sample")) {
    const StepTimes sampled_ms = MedianMs(
        3, 10, [&] { SetOpenLen(config, *cache, B, tandem::kLinearAttentionChunk - 1); },
        [&] {
          absl::StatusOr<Tensor> logits = model::ForwardStep(ctx, m, decode, *cache);
          CHECK_OK(logits.status());
          for (const auto& drawn : rollout::SampleTokens(ctx, *logits, draws)) {
            CHECK_OK(drawn.status());
          }
        });
    Report(o, "decode+sample", variant, context, sampled_ms, B);
  }
  if (o.Runs("prefill")) {
    const StepTimes prefill_ms = MedianMs(
        1, 5, [&] { SetOpenLen(config, *cache, B, 0); }, [&] { step(prefill); });
    Report(o, "prefill", variant, context, prefill_ms, B * tandem::kLinearAttentionChunk);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  if (!tandem::kernels::cuda::CudaAvailable()) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  const Context ctx = Context::Cuda(0, nullptr, 16);
  for (const std::string& variant : o.variants) {
    const model::ModelConfig config = VariantConfig(o, variant);
    const model::ParameterCounts counts = model::CountParameters(config);
    std::printf("%s: %ld layers, %ld experts, %.2fB parameters (%.1f GB in the GPU cast)\n",
                variant.c_str(), static_cast<long>(config.num_hidden_layers),
                static_cast<long>(config.num_experts), counts.total / 1e9, counts.total * 2 / 1e9);
    const model::HybridModel m(config, RandomDeviceWeights(config));
    for (int64_t context : o.contexts) RunContext(o, ctx, m, variant, context);
  }
  return 0;
}

// Rollout decode throughput: decode tokens/s of model::ForwardStep (the engine's model step) plus
// the sampler, for B sequences at context length L, for each model config given. Comparing a
// hybrid config with its all-softmax variant shows the hybrid's advantage growing with L: its
// linear layers cost O(1) per token, softmax layers O(L).
//
// The caches are filled with synthetic values instead of prefilling L tokens (a decode step's cost
// does not depend on the values, and prefilling 32K tokens of an all-softmax model on a CPU would
// take far longer than the measurement). Weights: InitWeights(seed 1).
//
//   rollout_decode_bench --configs a.json,b.json --contexts 1024,4096 --batches 1,4 --steps 8
//     --repeats 3 --threads 1
// prints a markdown table row per (config, batch, context) and, with --json FILE, JSON lines.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_split.h"
#include "kernels/core/context.h"
#include "kernels/core/contract.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/hybrid_model_step.h"
#include "model/inference_cache.h"
#include "model/weights.h"
#include "rollout/request.h"
#include "rollout/sampler.h"

namespace tandem {
namespace {

struct Point {
  std::string config;
  int64_t batch = 0, context = 0;
  double tokens_per_s = 0, cpu_tokens_per_s = 0;  // wall time; CPU time of the process
  double ms_per_step = 0, cpu_ms_per_step = 0;
  int64_t cache_bytes = 0;
};

void Fill(Tensor& t, float scale) {
  float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = scale * static_cast<float>((i * 7919) % 17 - 8);
}

// B sequences, each with L positions in the cache: KV blocks and linear states filled, the open
// chunk holding L mod C tokens, exactly as after a prefill of L tokens.
model::InferenceCache MakeCache(const model::ModelConfig& config, int64_t B, int64_t L,
                                int64_t steps, std::vector<std::vector<int32_t>>& tables) {
  const int64_t per_seq = (L + steps + kAttentionKvTile) / kAttentionKvTile;
  model::InferenceCache cache = *model::InferenceCache::Create(config, B * per_seq, B);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.layer_types[l] == model::LayerType::kSoftmax) {
      Fill(cache.softmax_layer(l).k, 0.05f);
      Fill(cache.softmax_layer(l).v, 0.05f);
    } else {
      model::InferenceCache::LinearLayer& layer = cache.linear_layer(l);
      Fill(layer.state, 0.01f);
      Fill(layer.open_k, 0.05f);
      Fill(layer.open_v, 0.05f);
      for (int64_t b = 0; b < B; ++b) {
        layer.open_len.data<int32_t>()[b] = static_cast<int32_t>(L % kLinearAttentionChunk);
      }
    }
  }
  tables.assign(B, {});
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < per_seq; ++j)
      tables[b].push_back(static_cast<int32_t>(b * per_seq + j));
  }
  return cache;
}

// One engine-like decode step: ForwardStep over B single tokens, then LogSoftmax + draw per row.
void DecodeStep(const Context& ctx, const model::HybridModel& model, int64_t L, int64_t step,
                const std::vector<std::vector<int32_t>>& tables, model::InferenceCache& cache) {
  std::vector<model::StepSequence> batch;
  for (size_t b = 0; b < tables.size(); ++b) {
    batch.push_back(
        {static_cast<int64_t>(b), L + step, {static_cast<int32_t>((b + step) % 7)}, tables[b]});
  }
  absl::StatusOr<Tensor> logits = model::ForwardStep(ctx, model, batch, cache);
  if (!logits.ok()) {
    std::fprintf(stderr, "ForwardStep: %s\n", logits.status().ToString().c_str());
    std::exit(1);
  }
  const rollout::SamplingOptions sampling;
  std::vector<rollout::TokenDraw> draws;
  for (size_t b = 0; b < batch.size(); ++b) {
    draws.push_back({static_cast<int64_t>(b), &sampling, 0, L + step + 1});
  }
  (void)rollout::SampleTokens(ctx, *logits, draws);
}

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The best of `repeats` timings of `steps` decode steps each: on a shared machine the least
// disturbed run is the most reproducible figure. CPU time (all threads of the process) is reported
// beside wall time; with one thread it excludes time the process was descheduled.
Point Measure(const Context& ctx, const std::string& name, const model::HybridModel& model,
              int64_t B, int64_t L, int64_t steps, int64_t repeats) {
  std::vector<std::vector<int32_t>> tables;
  model::InferenceCache cache = MakeCache(model.config(), B, L, steps * repeats + 1, tables);
  DecodeStep(ctx, model, L, 0, tables, cache);  // warm-up
  double best_wall = 1e30, best_cpu = 1e30;
  for (int64_t r = 0; r < repeats; ++r) {
    const double c0 = CpuSeconds();
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 1; s <= steps; ++s) DecodeStep(ctx, model, L, r * steps + s, tables, cache);
    best_wall = std::min(
        best_wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    best_cpu = std::min(best_cpu, CpuSeconds() - c0);
  }
  Point p;
  p.config = name;
  p.batch = B;
  p.context = L;
  p.tokens_per_s = static_cast<double>(B * steps) / best_wall;
  p.cpu_tokens_per_s = static_cast<double>(B * steps) / best_cpu;
  p.ms_per_step = 1e3 * best_wall / static_cast<double>(steps);
  p.cpu_ms_per_step = 1e3 * best_cpu / static_cast<double>(steps);
  p.cache_bytes = static_cast<int64_t>(tables[0].size()) * B *
                      model::InferenceCache::BytesPerBlock(model.config()) +
                  B * model::InferenceCache::BytesPerSlot(model.config());
  return p;
}

std::vector<int64_t> Ints(const std::string& s) {
  std::vector<int64_t> out;
  for (absl::string_view p : absl::StrSplit(s, ',')) out.push_back(std::stoll(std::string(p)));
  return out;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  using namespace tandem;
  CLI::App app{"Rollout decode tokens/s against context length and batch size"};
  std::string configs =
      "configs/models/tiny-hybrid.json,configs/models/tiny-hybrid-all-softmax.json";
  std::string contexts = "1024,2048,4096,8192,16384,32768", batches = "1,4,16", json;
  int64_t steps = 8, repeats = 3;
  int threads = 1;
  app.add_option("--configs", configs, "comma-separated model config.json files");
  app.add_option("--contexts", contexts, "context lengths L");
  app.add_option("--batches", batches, "batch sizes B");
  app.add_option("--steps", steps, "timed decode steps per repeat");
  app.add_option("--repeats", repeats, "timed repeats per point; the best is reported");
  app.add_option("--threads", threads, "CPU threads");
  app.add_option("--json", json, "also write JSON lines here");
  CLI11_PARSE(app, argc, argv);
  const Context ctx = Context::Cpu(threads);
  std::ofstream out;
  if (!json.empty()) out.open(json);
  std::printf(
      "| config | B | L | tokens/s (CPU time) | tokens/s (wall) | CPU ms/step | wall ms/step | "
      "cache MiB |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (absl::string_view path : absl::StrSplit(configs, ',')) {
    absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(std::string(path));
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
      return 1;
    }
    model::ModelWeights weights = model::AllocateWeights(*config);
    model::InitWeights(*config, 1, weights);
    const model::HybridModel model(*config, std::move(weights));
    const std::string name = std::string(path.substr(path.rfind('/') + 1));
    for (int64_t B : Ints(batches)) {
      for (int64_t L : Ints(contexts)) {
        const Point p = Measure(ctx, name, model, B, L, steps, repeats);
        std::printf("| %s | %ld | %ld | %.1f | %.1f | %.3f | %.3f | %.1f |\n", name.c_str(),
                    static_cast<long>(B), static_cast<long>(L), p.cpu_tokens_per_s, p.tokens_per_s,
                    p.cpu_ms_per_step, p.ms_per_step,
                    static_cast<double>(p.cache_bytes) / (1 << 20));
        std::fflush(stdout);
        if (out) {
          out << "{\"config\": \"" << name << "\", \"batch\": " << B << ", \"context\": " << L
              << ", \"tokens_per_s\": " << p.tokens_per_s << ", \"ms_per_step\": " << p.ms_per_step
              << ", \"cpu_tokens_per_s\": " << p.cpu_tokens_per_s
              << ", \"cpu_ms_per_step\": " << p.cpu_ms_per_step
              << ", \"cache_bytes\": " << p.cache_bytes << "}\n";
        }
      }
    }
  }
  return 0;
}

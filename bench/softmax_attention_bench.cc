// CPU causal GQA softmax attention: packed forward (one sequence of T tokens) and paged decode
// (one query over a context of N keys), H=16, Hkv=4, D=128, at 1 and 2 threads.
// FLOPs count 2 per multiply-add of q·k and p·v over the causal half: 4·H·D·T(T+1)/2.
#include <cmath>
#include <numeric>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/core/context.h"
#include "kernels/softmax_attention/softmax_attention.h"

namespace tandem::kernels {
namespace {

constexpr int64_t kH = 16, kHkv = 4, kD = 128;

Tensor Filled(Shape shape, float value) {
  Tensor t = Tensor::Empty(std::move(shape), DType::kF32);
  float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = value * static_cast<float>((i * 7919) % 17 - 8);
  return t;
}

SoftmaxAttentionParams Params() { return {kH, kHkv, kD, 1.0f / std::sqrt(float{kD})}; }

void BM_SoftmaxAttentionFwd(benchmark::State& state) {
  const int64_t T = state.range(0);
  Context ctx = Context::Cpu(static_cast<int>(state.range(1)));
  Tensor q = Filled({T, kH, kD}, 0.01f), k = Filled({T, kHkv, kD}, 0.02f),
         v = Filled({T, kHkv, kD}, 0.03f);
  Tensor cu = Tensor::FromVector(std::vector<int32_t>{0, static_cast<int32_t>(T)}, {2});
  Tensor o = Tensor::Empty({T, kH, kD}, DType::kF32), lse = Tensor::Empty({T, kH}, DType::kF32);
  for (auto _ : state) {
    if (!SoftmaxAttentionFwd(ctx, Params(), q, k, v, cu, o, lse).ok()) state.SkipWithError("fwd");
    benchmark::DoNotOptimize(o.raw_data());
  }
  const double flops = 4.0 * kH * kD * T * (T + 1) / 2.0;
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SoftmaxAttentionFwd)
    ->ArgNames({"T", "threads"})
    ->ArgsProduct({{512, 2048}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_SoftmaxAttentionDecode(benchmark::State& state) {
  const int64_t context = state.range(0), tile = kAttentionKvTile;
  const int64_t blocks = (context + tile - 1) / tile;
  Context ctx = Context::Cpu(static_cast<int>(state.range(1)));
  Tensor q = Filled({1, kH, kD}, 0.01f);
  Tensor k_cache = Filled({blocks, tile, kHkv, kD}, 0.02f);
  Tensor v_cache = Filled({blocks, tile, kHkv, kD}, 0.03f);
  std::vector<int32_t> table(blocks);
  for (int64_t j = 0; j < blocks; ++j) table[j] = static_cast<int32_t>((j * 5) % blocks);
  Tensor tables = Tensor::FromVector(table, {1, blocks});
  Tensor seq_lens = Tensor::FromVector(std::vector<int32_t>{static_cast<int32_t>(context)}, {1});
  Tensor o = Tensor::Empty({1, kH, kD}, DType::kF32);
  for (auto _ : state) {
    if (!SoftmaxAttentionDecode(ctx, Params(), q, k_cache, v_cache, tables, seq_lens, o).ok()) {
      state.SkipWithError("decode");
    }
    benchmark::DoNotOptimize(o.raw_data());
  }
  const double flops = 4.0 * kH * kD * context;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SoftmaxAttentionDecode)
    ->ArgNames({"context", "threads"})
    ->ArgsProduct({{1024, 4096}, {1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace tandem::kernels

BENCHMARK_MAIN();

// CPU chunked linear attention (C = 64): forward over one sequence of T tokens and decode steps of
// B sequences, H=16, D=128 (Ring-mini's linear layers), at 1 and 2 threads.
// Forward FLOPs count the useful work, 2 per multiply-add: per token and head 4·D² (inter term and
// boundary update) + 2·D·(C+1) (causal half of q·k and of the intra sum).
#include <cmath>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/core/context.h"
#include "kernels/linear_attention/linear_attention.h"

namespace tandem::kernels {
namespace {

constexpr int64_t kH = 16, kD = 128, kC = kLinearAttentionChunk;

Tensor Filled(Shape shape, float value) {
  Tensor t = Tensor::Empty(std::move(shape), DType::kF32);
  float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = value * static_cast<float>((i * 7919) % 17 - 8);
  return t;
}

Tensor Decays() {
  std::vector<float> x(kH);
  for (int64_t h = 0; h < kH; ++h) x[h] = std::exp2(-static_cast<float>(h + 1) / 2.0f);
  return Tensor::FromVector(x, {kH});
}

LinearAttentionParams Params() { return {kH, kD, 1.0f / std::sqrt(float{kD})}; }

void BM_LinearAttentionFwd(benchmark::State& state) {
  const int64_t T = state.range(0);
  Context ctx = Context::Cpu(static_cast<int>(state.range(1)));
  Tensor q = Filled({T, kH, kD}, 0.01f), k = Filled({T, kH, kD}, 0.02f),
         v = Filled({T, kH, kD}, 0.03f), decay = Decays();
  Tensor cu = Tensor::FromVector(std::vector<int32_t>{0, static_cast<int32_t>(T)}, {2});
  Tensor o = Tensor::Empty({T, kH, kD}, DType::kF32);  // [T, H, D]
  Tensor chunk_states =
      Tensor::Empty({(T + kC - 1) / kC, kH, kD, kD}, DType::kF32);  // [NC, H, D, D]
  Tensor none;
  for (auto _ : state) {
    if (!LinearAttentionFwd(ctx, Params(), q, k, v, decay, cu, none, o, chunk_states, none).ok()) {
      state.SkipWithError("fwd");
    }
    benchmark::DoNotOptimize(o.raw_data());
  }
  const double flops = static_cast<double>(T) * kH * (4.0 * kD * kD + 2.0 * kD * (kC + 1));
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LinearAttentionFwd)
    ->ArgNames({"T", "threads"})
    ->ArgsProduct({{512, 2048, 8192}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_LinearAttentionBwd(benchmark::State& state) {
  const int64_t T = state.range(0);
  Context ctx = Context::Cpu(static_cast<int>(state.range(1)));
  Tensor q = Filled({T, kH, kD}, 0.01f), k = Filled({T, kH, kD}, 0.02f),
         v = Filled({T, kH, kD}, 0.03f), d_o = Filled({T, kH, kD}, 0.04f), decay = Decays();
  Tensor cu = Tensor::FromVector(std::vector<int32_t>{0, static_cast<int32_t>(T)}, {2});
  Tensor o = Tensor::Empty({T, kH, kD}, DType::kF32);
  Tensor chunk_states = Tensor::Empty({(T + kC - 1) / kC, kH, kD, kD}, DType::kF32);
  Tensor dq = Tensor::Empty({T, kH, kD}, DType::kF32), dk = Tensor::Empty({T, kH, kD}, DType::kF32),
         dv = Tensor::Empty({T, kH, kD}, DType::kF32), none;
  if (!LinearAttentionFwd(ctx, Params(), q, k, v, decay, cu, none, o, chunk_states, none).ok()) {
    state.SkipWithError("fwd");
  }
  for (auto _ : state) {
    if (!LinearAttentionBwd(ctx, Params(), q, k, v, decay, cu, chunk_states, d_o, dq, dk, dv, none)
             .ok()) {
      state.SkipWithError("bwd");
    }
    benchmark::DoNotOptimize(dq.raw_data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LinearAttentionBwd)
    ->ArgNames({"T", "threads"})
    ->ArgsProduct({{2048}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// One decode step of B sequences per iteration. open_len advances every step, so the timing
// averages over chunk offsets 0..63, one boundary update in 64 steps included.
void BM_LinearAttentionDecode(benchmark::State& state) {
  const int64_t B = state.range(0);
  Context ctx = Context::Cpu(static_cast<int>(state.range(1)));
  Tensor q = Filled({B, kH, kD}, 0.01f), k = Filled({B, kH, kD}, 0.02f),
         v = Filled({B, kH, kD}, 0.03f), decay = Decays();
  Tensor st = Filled({B, kH, kD, kD}, 0.001f);  // [B, H, D, D]
  Tensor open_k = Filled({B, kC, kH, kD}, 0.02f), open_v = Filled({B, kC, kH, kD}, 0.03f);
  Tensor open_len = Tensor::Zeros({B}, DType::kI32);
  Tensor o = Tensor::Empty({B, kH, kD}, DType::kF32);
  for (auto _ : state) {
    if (!LinearAttentionDecode(ctx, Params(), q, k, v, decay, st, open_k, open_v, open_len, o)
             .ok()) {
      state.SkipWithError("decode");
    }
    benchmark::DoNotOptimize(o.raw_data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(B), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LinearAttentionDecode)
    ->ArgNames({"B", "threads"})
    ->ArgsProduct({{1, 8}, {1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace tandem::kernels

BENCHMARK_MAIN();

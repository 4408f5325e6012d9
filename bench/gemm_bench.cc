// CPU GEMM throughput: our batch-invariant GemmNT (forward layer layout, C = A·Bᵀ) against OpenBLAS
// cblas_sgemm (RowMajor, NoTrans x Trans) on one thread, at 512x2048x2048 and model shapes
// (M = 1, 64, 512 tokens; N, K in {2048, 6144}). Reports GFLOP/s (2·M·N·K per call).
//   OPENBLAS_NUM_THREADS=1 build-gemm/bench/gemm_bench
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/core/context.h"
#include "kernels/gemm/gemm.h"
#ifdef TANDEM_HAVE_BLAS
#include <cblas.h>
#endif

namespace tandem::kernels {
namespace {

// Operands for one shape, filled with small deterministic values (speed does not depend on them).
struct Operands {
  explicit Operands(int64_t m, int64_t n, int64_t k) : a(m * k), b(n * k), c(m * n) {
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 13) * 0.01f - 0.06f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 7) * 0.02f - 0.07f;
  }
  std::vector<float> a, b, c;  // a: [M, K]; b: [N, K] (NT) or [K, N]; c: [M, N]
};

void SetFlops(benchmark::State& state, int64_t m, int64_t n, int64_t k) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: M, N, K, threads.
void BM_OursNT(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Context ctx = Context::Cpu(static_cast<int>(state.range(3)));
  Operands x(m, n, k);
  for (auto _ : state) {
    cpu::GemmNT(ctx, m, n, k, x.a.data(), k, x.b.data(), k, x.c.data(), n, false);
    benchmark::DoNotOptimize(x.c.data());
  }
  SetFlops(state, m, n, k);
}

// The other two layouts (backward), ours only. Args: M, N, K, layout (1 = NN, 2 = TN).
void BM_OursBackward(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const bool tn = state.range(3) == 2;
  const Context ctx = Context::Cpu(1);
  Operands x(m, n, k);
  for (auto _ : state) {
    if (tn) {
      cpu::GemmTN(ctx, m, n, k, x.a.data(), m, x.b.data(), n, x.c.data(), n, false);
    } else {
      cpu::GemmNN(ctx, m, n, k, x.a.data(), k, x.b.data(), n, x.c.data(), n, false);
    }
    benchmark::DoNotOptimize(x.c.data());
  }
  state.SetLabel(tn ? "TN" : "NN");
  SetFlops(state, m, n, k);
}

#ifdef TANDEM_HAVE_BLAS
// Args: M, N, K. Single-threaded: main() pins OpenBLAS to one thread.
void BM_OpenBlasNT(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Operands x(m, n, k);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x.a.data(), k, x.b.data(),
                k, 0.0f, x.c.data(), n);
    benchmark::DoNotOptimize(x.c.data());
  }
  SetFlops(state, m, n, k);
}
#endif

// 512x2048x2048, then M = 1, 64, 512 tokens against (N, K) = (2048, 2048), (6144, 2048), (2048,
// 6144).
void Shapes(benchmark::internal::Benchmark* b, std::vector<int64_t> extra) {
  const int64_t kShapes[][2] = {{2048, 2048}, {6144, 2048}, {2048, 6144}};
  std::vector<int64_t> args = {512, 2048, 2048};
  args.insert(args.end(), extra.begin(), extra.end());
  b->Args(args);
  for (int64_t m : {1, 64, 512}) {
    for (const auto& nk : kShapes) {
      if (m == 512 && nk[0] == 2048 && nk[1] == 2048) continue;  // already first
      args = {m, nk[0], nk[1]};
      args.insert(args.end(), extra.begin(), extra.end());
      b->Args(args);
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_OursNT)->Apply([](auto* b) { Shapes(b, {1}); });
BENCHMARK(BM_OursNT)->Args({512, 2048, 2048, 2})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OursBackward)
    ->Args({512, 2048, 2048, 1})
    ->Args({512, 2048, 2048, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
#ifdef TANDEM_HAVE_BLAS
BENCHMARK(BM_OpenBlasNT)->Apply([](auto* b) { Shapes(b, {}); });
#endif

}  // namespace
}  // namespace tandem::kernels

int main(int argc, char** argv) {
#ifdef TANDEM_HAVE_BLAS
  openblas_set_num_threads(1);  // compare one core against one core
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

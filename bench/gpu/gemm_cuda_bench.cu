// GPU GEMM benchmark: Tandem's two batch-invariant GEMMs, cuda::GemmNT (our mma.sync kernel) and
// cuda::GemmNTPinned (cuBLASLt with one pinned algorithm per shape), against cuBLAS (cublasGemmEx,
// bf16 in, fp32 compute and out, default algorithm per call: the speed a fixed choice gives up) at
// the Ring-mini projection shapes. Speeds are printed as fractions of cuBLAS's (1.00 = parity).
// Plain program, CUDA-event timing. With --csv it also prints, per shape and M, the pinned path:
//   csv,gemm_<N>x<K>,<M>,1,<lt ms>,<cuBLAS ms / lt ms>,x
//   gemm_cuda_bench [--quick] [--csv]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef TANDEM_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

#include "bench/gpu/bench_util.cuh"
#include "kernels/core/context.h"
#include "kernels/gemm/gemm_cuda.h"

namespace {

template <typename Fn>
double TimeMs(Fn&& fn, bool quick) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  fn();  // warm-up (also first-call setup)
  CHECK_CUDA(cudaEventRecord(start));
  fn();
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float once = 0.0f;
  CHECK_CUDA(cudaEventElapsedTime(&once, start, stop));
  const double budget_ms = quick ? 20.0 : 200.0;
  const int iters = std::clamp(static_cast<int>(budget_ms / std::max(once, 1e-3f)), 3, 1000);
  CHECK_CUDA(cudaEventRecord(start));
  for (int i = 0; i < iters; ++i) fn();
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float total = 0.0f;
  CHECK_CUDA(cudaEventElapsedTime(&total, start, stop));
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return total / iters;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = tandem::bench::HasFlag(argc, argv, "--quick");
  const bool csv = tandem::bench::HasFlag(argc, argv, "--csv");
  const int64_t ms[] = {1, 64, 1024, 4096, 16384};
  // Ring-mini-linear-2.0 weights: linear-attention fused qkv, softmax qkv, g_proj / dense,
  // layer-0 MLP gate/up and down, shared expert gate/up and down.
  const int64_t nks[][2] = {{6144, 2048}, {3072, 2048}, {2048, 2048}, {5120, 2048},
                            {2048, 5120}, {512, 2048},  {2048, 512}};
  std::vector<std::string> csv_lines;
  tandem::bench::PrintDevice("; tile " + std::to_string(tandem::kernels::cuda::kGemmTileM) + "x" +
                             std::to_string(tandem::kernels::cuda::kGemmTileN) + "x" +
                             std::to_string(tandem::kernels::cuda::kGemmTileK) + " for every M");
#ifdef TANDEM_HAVE_CUBLAS
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return 1;
#endif
  const tandem::Context ctx = tandem::Context::Cuda(0, nullptr);
  std::printf("%6s %6s %6s | %9s %8s | %9s %8s | %9s %8s | %6s %6s | %8s %8s\n", "M", "N", "K",
              "mma ms", "TFLOP/s", "lt ms", "TFLOP/s", "cuBLAS ms", "TFLOP/s", "mma/cB", "lt/cB",
              "rel mma", "rel lt");
  for (const auto& nk : nks) {
    const int64_t n = nk[0], k = nk[1], max_m = ms[4];
    __nv_bfloat16 *a, *b;
    float *c, *c_ref;
    CHECK_CUDA(cudaMalloc(&a, max_m * k * sizeof(__nv_bfloat16)));
    CHECK_CUDA(cudaMalloc(&b, n * k * sizeof(__nv_bfloat16)));
    CHECK_CUDA(cudaMalloc(&c, max_m * n * sizeof(float)));
    CHECK_CUDA(cudaMalloc(&c_ref, max_m * n * sizeof(float)));
    tandem::bench::FillBf16(a, max_m * k, 1);
    tandem::bench::FillBf16(b, n * k, 2);
    float* c_lt;
    CHECK_CUDA(cudaMalloc(&c_lt, max_m * n * sizeof(float)));
    {
      tandem::kernels::cuda::GemmNTArgs g;
      g.m = 1, g.n = n, g.k = k, g.a = a, g.lda = k, g.b = b, g.ldb = k, g.c = c_lt, g.ldc = n;
      const auto info = tandem::kernels::cuda::GemmNTPinnedInfo(ctx, g);
      std::printf("N=%ld K=%ld pinned: %s\n", (long)n, (long)k,
                  !info.ok() ? std::string(info.status().message()).c_str()
                  : info->cublaslt
                      ? ("cuBLASLt " + info->algo + " (rule: " + info->rule + ")").c_str()
                      : ("our kernel (" + info->why + ")").c_str());
    }
    for (int64_t m : ms) {
      tandem::kernels::cuda::GemmNTArgs g;
      g.m = m, g.n = n, g.k = k, g.a = a, g.lda = k, g.b = b, g.ldb = k, g.c = c, g.ldc = n;
      const double ours = TimeMs([&] { (void)tandem::kernels::cuda::GemmNT(nullptr, g); }, quick);
      const absl::Status s = tandem::kernels::cuda::GemmNT(nullptr, g);
      if (!s.ok()) {
        std::fprintf(stderr, "GemmNT: %s\n", std::string(s.message()).c_str());
        return 1;
      }
      tandem::kernels::cuda::GemmNTArgs glt = g;
      glt.c = c_lt;
      const double lt = TimeMs([&] { (void)tandem::kernels::cuda::GemmNTPinned(ctx, glt); }, quick);
      const absl::Status lt_status = tandem::kernels::cuda::GemmNTPinned(ctx, glt);
      if (!lt_status.ok()) {
        std::fprintf(stderr, "GemmNTPinned: %s\n", std::string(lt_status.message()).c_str());
        return 1;
      }
      const double flop = 2.0 * m * n * k;
      double ref = 0.0, rel = 0.0, rel_lt = 0.0;
#ifdef TANDEM_HAVE_CUBLAS
      const float alpha = 1.0f, beta = 0.0f;
      // cuBLAS is column-major: row-major C[M,N] = A·Bᵀ is Cᵀ[N,M] = B·Aᵀ, where B and A are
      // seen as column-major [K,N] and [K,M] matrices, so B is used transposed.
      auto cublas = [&] {
        cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_16BF, k, a,
                     CUDA_R_16BF, k, &beta, c_ref, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
      };
      ref = TimeMs(cublas, quick);
      CHECK_CUDA(cudaDeviceSynchronize());
      rel = tandem::bench::MaxRelDiff(c, c_ref, m * n);
      rel_lt = tandem::bench::MaxRelDiff(c_lt, c_ref, m * n);
#endif
      std::printf(
          "%6ld %6ld %6ld | %9.4f %8.1f | %9.4f %8.1f | %9.4f %8.1f | %6.2f %6.2f | %8.1e %8.1e\n",
          (long)m, (long)n, (long)k, ours, flop / ours * 1e-9, lt, flop / lt * 1e-9, ref,
          ref > 0 ? flop / ref * 1e-9 : 0.0, ref > 0 ? ref / ours : 0.0, ref > 0 ? ref / lt : 0.0,
          rel, rel_lt);
      std::fflush(stdout);
      char line[128];
      std::snprintf(line, sizeof(line), "csv,gemm_%ldx%ld,%ld,1,%.5f,%.4f,x", (long)n, (long)k,
                    (long)m, lt, ref > 0 ? ref / lt : 0.0);
      csv_lines.push_back(line);
    }
    CHECK_CUDA(cudaFree(a));
    CHECK_CUDA(cudaFree(b));
    CHECK_CUDA(cudaFree(c));
    CHECK_CUDA(cudaFree(c_ref));
    CHECK_CUDA(cudaFree(c_lt));
  }
  std::printf(
      "mma/cB, lt/cB = cuBLAS time / our time (speed as a fraction of cuBLAS; 1.00 = "
      "parity); rel = max |ours - cuBLAS| / max |cuBLAS|\n");
  if (csv) {
    for (const std::string& line : csv_lines) std::printf("%s\n", line.c_str());
  }
#ifdef TANDEM_HAVE_CUBLAS
  cublasDestroy(handle);
#endif
  return 0;
}

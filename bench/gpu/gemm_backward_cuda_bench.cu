// GPU benchmark of the backward GEMM layouts at the Ring-mini weight shapes [out, in]:
//   NN  dX[T, in]  = dY[T, out] · W[out, in]     (cuda::GemmNN; M = T, N = in, K = out)
//   TN  dW[out, in] = dY[T, out]ᵀ · X[T, in]     (cuda::GemmTN; M = out, N = in, K = T tokens)
// against cuBLAS (cublasGemmEx, bf16 in, fp32 compute and out, default algorithm per call),
// speeds as fractions of cuBLAS's (1.00 = parity; the target is >= 0.8). CUDA-event timing.
//   gemm_backward_cuda_bench [--quick] [--csv]
// With --csv, one line per layout, shape and T: csv,gemm_<nn|tn>_<out>x<in>,<T>,1,<ms>,<cuBLAS ms
// / ours>,x
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

int main(int argc, char** argv) {
  namespace cu = tandem::kernels::cuda;
  const bool quick = tandem::bench::HasFlag(argc, argv, "--quick");
  const bool csv = tandem::bench::HasFlag(argc, argv, "--csv");
  // Median of >= 10 timed runs after one warm-up (and a device sync).
  const tandem::bench::Timing timing{/*warmups=*/1, /*runs=*/quick ? 10 : 25,
                                     /*sync_after_warmup=*/true, /*check_last_error=*/false};
  const int64_t ts[] = {4096, 8192, 16384};
  const int64_t weights[][2] = {{6144, 2048}, {3072, 2048}, {2048, 2048}, {5120, 2048},
                                {2048, 5120}, {512, 2048},  {2048, 512}};  // [out, in]
  const int64_t max_t = ts[2], max_dim = 6144;
  tandem::bench::PrintDevice("; GemmTN token chunk " + std::to_string((long)cu::kGemmTnChunk));
  __nv_bfloat16 *dy, *x, *w;
  float *c, *c_ref;
  CHECK_CUDA(cudaMalloc(&dy, max_t * max_dim * sizeof(__nv_bfloat16)));
  CHECK_CUDA(cudaMalloc(&x, max_t * max_dim * sizeof(__nv_bfloat16)));
  CHECK_CUDA(cudaMalloc(&w, max_dim * max_dim * sizeof(__nv_bfloat16)));
  CHECK_CUDA(cudaMalloc(&c, max_t * max_dim * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&c_ref, max_t * max_dim * sizeof(float)));
  tandem::bench::FillBf16(dy, max_t * max_dim, 1);
  tandem::bench::FillBf16(x, max_t * max_dim, 2);
  tandem::bench::FillBf16(w, max_dim * max_dim, 3);
#ifdef TANDEM_HAVE_CUBLAS
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return 1;
#endif
  const tandem::Context ctx = tandem::Context::Cuda(0, nullptr);
  std::vector<std::string> csv_lines;
  std::printf("%3s %6s %6s %6s | %9s %8s | %9s %8s | %6s | %8s\n", "op", "T", "out", "in", "ms",
              "TFLOP/s", "cuBLAS ms", "TFLOP/s", "us/cB", "rel");
  for (bool tn : {false, true}) {
    for (const auto& wt : weights) {
      const int64_t out = wt[0], in = wt[1];
      for (int64_t t : ts) {
        cu::GemmBackwardArgs g;  // NN: dY [T, out] · W [out, in]; TN: dY [T, out]ᵀ · X [T, in]
        g.m = tn ? out : t, g.n = in, g.k = tn ? t : out;
        g.a = dy, g.lda = out, g.b = tn ? x : w, g.ldb = in, g.c = c, g.ldc = in;
        if (t == ts[0]) {
          const auto info = tn ? cu::GemmTNPinnedInfo(ctx, g) : cu::GemmNNPinnedInfo(ctx, g);
          std::printf("%s out=%ld in=%ld: %s\n", tn ? "TN" : "NN", (long)out, (long)in,
                      !info.ok() ? std::string(info.status().message()).c_str()
                      : info->cublaslt
                          ? ("cuBLASLt " + info->algo + " [" + info->rule + "]").c_str()
                          : ("our kernel (" + info->why + ")").c_str());
        }
        auto run = [&] { return tn ? cu::GemmTN(ctx, g) : cu::GemmNN(ctx, g); };
        const absl::Status s = run();
        if (!s.ok()) {
          std::fprintf(stderr, "%s: %s\n", tn ? "GemmTN" : "GemmNN",
                       std::string(s.message()).c_str());
          return 1;
        }
        const double ours = tandem::bench::MedianMs([&] { (void)run(); }, timing);
        const double flop = 2.0 * t * out * in;
        double ref = 0.0, rel = 0.0;
#ifdef TANDEM_HAVE_CUBLAS
        const float alpha = 1.0f, beta = 0.0f;
        // Column-major: c[M,N] row-major is Cᵀ[N,M] = b'[N,K] · op(a'), b' = b as [N,K] (ld N);
        // a' = a as [K,M] (NN, ld K) or [M,K] used transposed (TN, ld M).
        auto cublas = [&] {
          cublasGemmEx(handle, CUBLAS_OP_N, tn ? CUBLAS_OP_T : CUBLAS_OP_N, g.n, g.m, g.k, &alpha,
                       g.b, CUDA_R_16BF, g.ldb, g.a, CUDA_R_16BF, g.lda, &beta, c_ref, CUDA_R_32F,
                       g.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        };
        ref = tandem::bench::MedianMs(cublas, timing);
        CHECK_CUDA(cudaDeviceSynchronize());
        rel = tandem::bench::MaxRelDiff(c, c_ref, g.m * g.n);
#endif
        std::printf("%3s %6ld %6ld %6ld | %9.4f %8.1f | %9.4f %8.1f | %6.2f | %8.1e\n",
                    tn ? "TN" : "NN", (long)t, (long)out, (long)in, ours, flop / ours * 1e-9, ref,
                    ref > 0 ? flop / ref * 1e-9 : 0.0, ref > 0 ? ref / ours : 0.0, rel);
        std::fflush(stdout);
        char line[128];
        std::snprintf(line, sizeof(line), "csv,gemm_%s_%ldx%ld,%ld,1,%.5f,%.4f,x", tn ? "tn" : "nn",
                      (long)out, (long)in, (long)t, ours, ref > 0 ? ref / ours : 0.0);
        csv_lines.push_back(line);
      }
    }
  }
  std::printf(
      "us/cB = cuBLAS time / our time (1.00 = parity); rel = max |ours - cuBLAS| / max "
      "|cuBLAS|\n");
  if (csv) {
    for (const std::string& line : csv_lines) std::printf("%s\n", line.c_str());
  }
#ifdef TANDEM_HAVE_CUBLAS
  cublasDestroy(handle);
#endif
  CHECK_CUDA(cudaFree(dy));
  CHECK_CUDA(cudaFree(x));
  CHECK_CUDA(cudaFree(w));
  CHECK_CUDA(cudaFree(c));
  CHECK_CUDA(cudaFree(c_ref));
  return 0;
}

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

#include "kernels/core/context.h"
#include "kernels/gemm/gemm_cuda.h"

namespace {

#define CHECK_CUDA(expr)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

// Deterministic values in [-1, 1) from a hash of the index.
__global__ void FillKernel(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = __float2bfloat16_rn(static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
}

// Median of >= 10 timed runs after a warm-up.
template <typename Fn>
double TimeMs(Fn&& fn, bool quick) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  fn();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> times(quick ? 10 : 25);
  for (float& t : times) {
    CHECK_CUDA(cudaEventRecord(start));
    fn();
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Largest |x - y| relative to the largest |y|.
double MaxRelDiff(const float* x, const float* y, int64_t n) {
  std::vector<float> hx(n), hy(n);
  CHECK_CUDA(cudaMemcpy(hx.data(), x, n * sizeof(float), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(hy.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost));
  double diff = 0.0, scale = 1e-30;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(hx[i] - hy[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(hy[i])));
  }
  return diff / scale;
}

}  // namespace

int main(int argc, char** argv) {
  namespace cu = tandem::kernels::cuda;
  bool quick = false, csv = false;
  for (int i = 1; i < argc; ++i) {
    quick = quick || std::strcmp(argv[i], "--quick") == 0;
    csv = csv || std::strcmp(argv[i], "--csv") == 0;
  }
  const int64_t ts[] = {4096, 8192, 16384};
  const int64_t weights[][2] = {{6144, 2048}, {3072, 2048}, {2048, 2048}, {5120, 2048},
                                {2048, 5120}, {512, 2048},  {2048, 512}};  // [out, in]
  const int64_t max_t = ts[2], max_dim = 6144;
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs; GemmTN token chunk %ld\n", prop.name, prop.multiProcessorCount,
              (long)cu::kGemmTnChunk);
  __nv_bfloat16 *dy, *x, *w;
  float *c, *c_ref;
  CHECK_CUDA(cudaMalloc(&dy, max_t * max_dim * sizeof(__nv_bfloat16)));
  CHECK_CUDA(cudaMalloc(&x, max_t * max_dim * sizeof(__nv_bfloat16)));
  CHECK_CUDA(cudaMalloc(&w, max_dim * max_dim * sizeof(__nv_bfloat16)));
  CHECK_CUDA(cudaMalloc(&c, max_t * max_dim * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&c_ref, max_t * max_dim * sizeof(float)));
  FillKernel<<<1024, 256>>>(dy, max_t * max_dim, 1);
  FillKernel<<<1024, 256>>>(x, max_t * max_dim, 2);
  FillKernel<<<1024, 256>>>(w, max_dim * max_dim, 3);
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
        const double ours = TimeMs([&] { (void)run(); }, quick);
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
        ref = TimeMs(cublas, quick);
        CHECK_CUDA(cudaDeviceSynchronize());
        rel = MaxRelDiff(c, c_ref, g.m * g.n);
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

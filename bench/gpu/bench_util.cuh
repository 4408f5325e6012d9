// Helpers shared by the bench/gpu/*_cuda_bench.cu programs: status/CUDA checks that exit, the
// deterministic bf16 fill every bench seeds its inputs with, CUDA-event median timing (each bench
// keeps its own warm-up and run counts through Timing), flag parsing and the device line. One
// copy, so two benches that claim the same inputs or the same timing method really share them.
#ifndef TANDEM_BENCH_GPU_BENCH_UTIL_CUH_
#define TANDEM_BENCH_GPU_BENCH_UTIL_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/core/tensor.h"

// Exits with file:line and the message when an absl::Status expression is not ok.
#define CHECK_OK(expr)                                                                            \
  do {                                                                                            \
    const absl::Status s_ = (expr);                                                               \
    if (!s_.ok()) {                                                                               \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, std::string(s_.message()).c_str()); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

// Exits with file:line, the expression and the error when a CUDA runtime call fails.
#define CHECK_CUDA(expr)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

namespace tandem::bench {

// Deterministic bf16 values in [-1, 1) from a hash of the index (the same values for any grid).
__global__ void FillKernel(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = __float2bfloat16_rn(static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
}

// Fills n device bf16 values with FillKernel (asynchronous, default stream).
inline void FillBf16(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  FillKernel<<<1024, 256>>>(p, n, seed);
}

// A new device bf16 tensor filled by FillKernel.
inline Tensor RandomBf16(Shape shape, uint32_t seed) {
  Tensor t = Tensor::Empty(std::move(shape), DType::kBF16, Device::kCUDA);
  FillBf16(static_cast<__nv_bfloat16*>(t.raw_data()), t.numel(), seed);
  return t;
}

// A host i32 vector tensor (e.g. cu_seqlens).
inline Tensor HostI32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(v.size())}, DType::kI32);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

// How a bench times: `warmups` untimed calls, then `runs` timed calls (the median is the
// figure). Each bench keeps the counts and checks it always used.
struct Timing {
  int warmups = 2;
  int runs = 15;
  bool sync_after_warmup = false;  // cudaDeviceSynchronize between warm-up and the timed runs
  bool check_last_error = true;    // exit when the runs leave a CUDA error behind
};

// Median milliseconds of fn under `timing`, timed as bench/gpu/anchor_compare.py times the
// anchors: a pair of CUDA events (default stream) around each call, the calls queued back to back
// and one wait at the end. A call's figure is then its span on the GPU; host work that the
// previous call's GPU work covers is not in it, as in a training or serving loop.
template <typename Fn>
double MedianMs(Fn&& fn, const Timing& timing = Timing{}) {
  for (int i = 0; i < timing.warmups; ++i) fn();
  if (timing.sync_after_warmup) CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> events(2 * timing.runs);
  for (cudaEvent_t& e : events) CHECK_CUDA(cudaEventCreate(&e));
  for (int r = 0; r < timing.runs; ++r) {
    CHECK_CUDA(cudaEventRecord(events[2 * r]));
    fn();
    CHECK_CUDA(cudaEventRecord(events[2 * r + 1]));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> ms(timing.runs);
  for (int r = 0; r < timing.runs; ++r) {
    CHECK_CUDA(cudaEventElapsedTime(&ms[r], events[2 * r], events[2 * r + 1]));
  }
  for (cudaEvent_t& e : events) CHECK_CUDA(cudaEventDestroy(e));
  if (timing.check_last_error) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
      std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
      std::exit(1);
    }
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Largest |x - y| relative to the largest |y| over n device floats.
inline double MaxRelDiff(const float* x, const float* y, int64_t n) {
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

// Whether `flag` (e.g. "--csv") is among the arguments.
inline bool HasFlag(int argc, char** argv, const char* flag) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], flag) == 0) return true;
  }
  return false;
}

// Device 0's properties; prints "no CUDA device" and exits with 1 where there is none.
inline cudaDeviceProp DeviceOrExit() {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::fprintf(stderr, "no CUDA device\n");
    std::exit(1);
  }
  return prop;
}

// Prints "device: <name>, <n> SMs<extra>" and returns device 0's properties (see DeviceOrExit).
inline cudaDeviceProp PrintDevice(const std::string& extra = "") {
  const cudaDeviceProp prop = DeviceOrExit();
  std::printf("device: %s, %d SMs%s\n", prop.name, prop.multiProcessorCount, extra.c_str());
  return prop;
}

}  // namespace tandem::bench

#endif  // TANDEM_BENCH_GPU_BENCH_UTIL_CUH_

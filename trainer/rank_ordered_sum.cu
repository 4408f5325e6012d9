// SumInRankOrder: one thread per element, the P adds in rank order (explicit __fadd_rn).
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "trainer/rank_ordered_sum.h"

namespace tandem::trainer {
namespace {

__global__ void SumInRankOrderKernel(const float* __restrict__ slices, int ranks, int64_t stride,
                                     int64_t n, float* __restrict__ out) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) {
    float sum = slices[i];
    for (int r = 1; r < ranks; ++r) sum = __fadd_rn(sum, slices[r * stride + i]);
    out[i] = sum;
  }
}

}  // namespace

absl::Status SumInRankOrder(const float* slices, int ranks, int64_t stride, int64_t n, float* out,
                            cudaStream_t stream) {
  TANDEM_CHECK_ARG(ranks >= 1, "ranks: expected >= 1, got ", ranks);
  TANDEM_CHECK_ARG(n >= 0 && n <= stride, "n: expected in [0, stride = ", stride, "], got ", n);
  if (n == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 4096);
  SumInRankOrderKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(slices, ranks,
                                                                               stride, n, out);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::trainer

// The device half of the NCCL collective's float all-reduce: the sum of the P slices one rank
// received, in rank order. Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace tandem::trainer {

// out[i] = ((x_0[i] + x_1[i]) + x_2[i]) + … + x_{P−1}[i] for i < n, where x_r = slices + r·stride
// (device memory): fp32 round-to-nearest adds in rank order, never contracted — the operations of
// the MPI collective's host loop, so both collectives give the same bits. Queued on `stream`.
absl::Status SumInRankOrder(const float* slices, int ranks, int64_t stride, int64_t n, float* out,
                            cudaStream_t stream);

}  // namespace tandem::trainer

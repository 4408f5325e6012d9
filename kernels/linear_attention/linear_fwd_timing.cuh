// Internal to kernels/linear_attention and its benchmark: a debug hook that records CUDA events
// around the phases of the tensor-core forward (scan, then output kernel), so the benchmark can
// show where the time goes. Not thread-safe; off (null) unless a benchmark sets it.
#pragma once

#include <cuda_runtime.h>

namespace tandem::kernels::cuda::linear {

struct FwdPhaseEvents {
  cudaEvent_t start, scanned, done;  // before the scan, between the launches, after the output
};

// The events the next forward calls record, or null.
FwdPhaseEvents* ForwardPhaseEvents();
void SetForwardPhaseEvents(FwdPhaseEvents* events);

}  // namespace tandem::kernels::cuda::linear

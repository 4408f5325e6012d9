// Internal to kernels/linear_attention, its benchmark and its GPU test: debug hooks. One records
// CUDA events around the phases of the two-launch tensor-core forward (scan, then output kernel),
// so the benchmark can show where the time goes; one turns the fused forward off, so the benchmark
// can time the two-launch forward beside it; one counts fused launches, so a test can assert that
// the fused path ran. Not thread-safe; set only by a benchmark or a test.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::kernels::cuda::linear {

struct FwdPhaseEvents {
  cudaEvent_t start, scanned, done;  // before the scan, between the launches, after the output
};

// The events the next forward calls record, or null.
FwdPhaseEvents* ForwardPhaseEvents();
void SetForwardPhaseEvents(FwdPhaseEvents* events);

// On by default: bf16 forwards at D = 128 without chunk_states take the fused kernel where the
// build and the device have it (ForwardIsFused).
void SetForwardFusedEnabled(bool enabled);
bool ForwardIsFused(int64_t head_dim);
// Whether the fused forward's CTAs for `batch` sequences of `heads` heads fit the GPU in one wave.
bool FusedOneWave(int batch, int heads);
// How many fused forwards this process has launched, so a test can tell which path ran.
int64_t FusedLaunches();

}  // namespace tandem::kernels::cuda::linear

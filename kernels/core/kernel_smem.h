// Raising a kernel's dynamic shared-memory limit (needed above 48 KB) once per kernel and device:
// the attribute call costs microseconds on every launch otherwise, and the attribute belongs to
// the device, so a process-wide "once" would miss a second GPU. Host code; CUDA builds only.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>

namespace tandem::kernels::cuda {

// carveout >= 0 also sets the preferred shared-memory carveout (cudaSharedmemCarveoutMaxShared
// where two large blocks must share an SM). REQUIRES: the same `bytes` and carveout on every call
// for one kernel (its shared-memory size).
template <auto kKernel>
cudaError_t AllowSmem(int bytes, int carveout = -1) {
  static std::atomic<uint64_t> done{0};  // bit d: device d (devices 64 apart share a bit)
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  const uint64_t bit = uint64_t{1} << (device & 63);
  if ((done.load(std::memory_order_acquire) & bit) != 0) return cudaSuccess;
  e = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess && carveout >= 0) {
    e = cudaFuncSetAttribute(kKernel, cudaFuncAttributePreferredSharedMemoryCarveout, carveout);
  }
  if (e == cudaSuccess) done.fetch_or(bit, std::memory_order_release);
  return e;
}

}  // namespace tandem::kernels::cuda

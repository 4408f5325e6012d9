// The --device flag of the commands that run the model (`tandem logprobs`, `tandem generate`):
// "cpu" (default) or "cuda" (GPU 0, default stream). A CUDA request fails clearly when this
// binary was built without CUDA or the machine has no usable GPU.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/context.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/core/cuda_util.h"
#endif

namespace tandem::cli {

// The context for `device`; `threads` sizes the host pool (on the GPU it serves the weight cast
// and host-side checks). Errors name the flag.
inline absl::StatusOr<Context> ContextForDevice(const std::string& device, int threads) {
  if (device == "cpu") return Context::Cpu(threads);
  if (device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device: expected cpu or cuda, got '", device, "'"));
  }
#ifdef TANDEM_HAVE_CUDA
  if (!kernels::cuda::CudaAvailable()) {
    return absl::FailedPreconditionError("--device cuda: no usable CUDA device on this machine");
  }
  return Context::Cuda(0, nullptr, threads);
#else
  return absl::FailedPreconditionError(
      "--device cuda: this tandem was built without CUDA (configure with -DTANDEM_CUDA=ON)");
#endif
}

}  // namespace tandem::cli

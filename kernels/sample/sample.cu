// CUDA Philox: one thread per key evaluates philox.cuh's function and writes the words and the
// uniform's 53 bits.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/sample/philox.cuh"
#include "kernels/sample/sample_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    PhiloxKernel(int64_t n, const uint64_t* keys, uint32_t* words, uint64_t* bits) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= n) return;
  const PhiloxWords w = SampleWords(keys[3 * i], keys[3 * i + 1], keys[3 * i + 2]);
  if (words != nullptr) {
    for (int j = 0; j < 4; ++j) words[4 * i + j] = w.w[j];
  }
  if (bits != nullptr) bits[i] = UniformBits(w);
}

}  // namespace

absl::Status PhiloxUniformBits(const Context& ctx, const Tensor& keys, Tensor& words,
                               Tensor& bits) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(keys, "keys", DType::kI64, {-1, 3}, Device::kCUDA));
  const int64_t n = keys.dim(0);
  if (words.defined()) {
    TANDEM_RETURN_IF_ERROR(ExpectTensor(words, "words", DType::kI32, {n, 4}, Device::kCUDA));
  }
  if (bits.defined()) {
    TANDEM_RETURN_IF_ERROR(ExpectTensor(bits, "bits", DType::kI64, {n}, Device::kCUDA));
  }
  TANDEM_CHECK_ARG(n / kThreads < 0x7fffffff, "keys: too many rows, got ", n);
  if (n == 0) return absl::OkStatus();
  PhiloxKernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0,
                 StreamOf(ctx)>>>(
      n, static_cast<const uint64_t*>(keys.raw_data()),
      words.defined() ? static_cast<uint32_t*>(words.raw_data()) : nullptr,
      bits.defined() ? static_cast<uint64_t*>(bits.raw_data()) : nullptr);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

// CUDA plumbing shared by every CUDA kernel: cudaError_t -> absl::Status with file:line, device
// detection (tests skip without a GPU), and Tensor copies between host and device, including the
// f32 <-> bf16 casts that weights and activations go through. Built only when TANDEM_HAVE_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// OK for cudaSuccess, otherwise Internal "file:line: expr: cudaErrorName: description".
absl::Status CudaErrorToStatus(cudaError_t error, const char* expr, const char* file, int line);

// True when the CUDA runtime finds at least one usable device. Cached after the first call.
bool CudaAvailable();

// The current device's multiprocessors (cached per device; 0 if unknown).
int Multiprocessors();

// The stream kernels launch on for `ctx` (the default stream when the context has none).
inline cudaStream_t StreamOf(const Context& ctx) {
  return static_cast<cudaStream_t>(ctx.cuda_stream());
}

// Waits for all work queued on `ctx`'s stream and reports any asynchronous error.
absl::Status Synchronize(const Context& ctx);

// Copies src into dst (same dtype and shape; either may live on either device). Ordered on the
// context's stream; copies that end on the host are complete when this returns.
absl::Status CopyTensor(const Context& ctx, const Tensor& src, Tensor& dst);
// New owning tensors holding a copy of `t` on the device / on the host.
absl::StatusOr<Tensor> CopyToDevice(const Context& ctx, const Tensor& t);
absl::StatusOr<Tensor> CopyToHost(const Context& ctx, const Tensor& t);

// Casts on the tensor's own device into a new tensor there. ToBf16 takes f32 (round to nearest
// even, NaNs stay quiet: the same bits as FloatToBf16 on the host); ToF32 takes bf16 (exact).
// A tensor already of the target dtype is returned as a copy.
absl::StatusOr<Tensor> ToBf16(const Context& ctx, const Tensor& t);
absl::StatusOr<Tensor> ToF32(const Context& ctx, const Tensor& t);

// Copies `bytes` host bytes to device memory `dst`, ordered on `stream`; `src` may be reused or
// freed as soon as this returns. Small copies go through pinned staging buffers: from pageable
// memory, the host time of a call grew with the bytes copied (a 32K attention forward's 64 KB of
// work items: 128 us per call, 49 us staged, on the H200 machine), and the GPU idled behind it
// whenever the kernel the copy fed was the next work queued.
absl::Status UploadAsync(void* dst, const void* src, size_t bytes, cudaStream_t stream);

// Device memory allocated stream-ordered on one stream and freed there when the buffer goes out
// of scope — also on an early error return, so a failed call leaks nothing.
class StreamBuffer {
 public:
  StreamBuffer() = default;
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  ~StreamBuffer() {
    if (data_ != nullptr) cudaFreeAsync(data_, stream_);
  }
  // At least `bytes` (>= 1) bytes on `stream`. REQUIRES: not yet allocated.
  absl::Status Allocate(cudaStream_t stream, size_t bytes);
  // A copy of `host` (UploadAsync: `host` may change once this returns) in a new allocation.
  template <typename T>
  absl::Status Upload(cudaStream_t stream, const std::vector<T>& host) {
    absl::Status allocated = Allocate(stream, host.size() * sizeof(T));
    if (!allocated.ok() || host.empty()) return allocated;
    return UploadAsync(data_, host.data(), host.size() * sizeof(T), stream);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace tandem::kernels::cuda

// Returns the enclosing function's absl::Status when `expr` (a cudaError_t) is not cudaSuccess.
#define TANDEM_CUDA_RETURN_IF_ERROR(expr)                                                    \
  do {                                                                                       \
    ::cudaError_t tandem_cuda_error_ = (expr);                                               \
    if (tandem_cuda_error_ != ::cudaSuccess) {                                               \
      return ::tandem::kernels::cuda::CudaErrorToStatus(tandem_cuda_error_, #expr, __FILE__, \
                                                        __LINE__);                           \
    }                                                                                        \
  } while (0)

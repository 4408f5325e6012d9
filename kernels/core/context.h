// Context: where and how kernels run. Passed explicitly to every kernel; there are no globals.
// A CUDA context also names the device and stream, and carries per-context state that GPU
// libraries create on first use (the cuBLASLt handle, workspace and pinned algorithms).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "kernels/core/tensor.h"
#include "kernels/core/thread_pool.h"

namespace tandem {

class Context {
 public:
  // A CPU context with its own pool of `num_threads` threads (>= 1).
  static Context Cpu(int num_threads = 1);
  // A CUDA context: kernels launch on `stream` (a cudaStream_t; null: the default stream) of
  // device `device`. The CPU pool (`num_threads`) serves host-side work such as argument checks.
  static Context Cuda(int device = 0, void* stream = nullptr, int num_threads = 1);

  Device device() const { return device_; }
  ThreadPool& pool() const { return *pool_; }
  int num_threads() const { return pool_->num_threads(); }
  // The CUDA stream (cudaStream_t) kernels launch on; null means the default stream.
  void* cuda_stream() const { return cuda_stream_; }
  // The CUDA device ordinal (0 for CPU contexts).
  int cuda_device() const { return cuda_device_; }

  // Per-context state of a GPU library, named by `key`: made by `make` on the first call and
  // returned by every later one, also from copies of this context (they share it). Thread-safe.
  std::shared_ptr<void> Resource(const std::string& key,
                                 const std::function<std::shared_ptr<void>()>& make) const;

  // Shorthand for pool().ParallelFor.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t min_chunk = 1) const {
    pool_->ParallelFor(n, fn, min_chunk);
  }

 private:
  struct Resources;

  Device device_ = Device::kCPU;
  std::shared_ptr<ThreadPool> pool_;
  void* cuda_stream_ = nullptr;
  int cuda_device_ = 0;
  std::shared_ptr<Resources> resources_;
};

}  // namespace tandem

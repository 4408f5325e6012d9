// Context: where and how kernels run. Passed explicitly to every kernel; there are no globals.
#pragma once

#include <memory>

#include "kernels/core/tensor.h"
#include "kernels/core/thread_pool.h"

namespace tandem {

class Context {
 public:
  // A CPU context with its own pool of `num_threads` threads (>= 1).
  static Context Cpu(int num_threads = 1);

  Device device() const { return device_; }
  ThreadPool& pool() const { return *pool_; }
  int num_threads() const { return pool_->num_threads(); }
  // The CUDA stream (cudaStream_t) kernels launch on; null means the default stream.
  void* cuda_stream() const { return cuda_stream_; }

  // Shorthand for pool().ParallelFor.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t min_chunk = 1) const {
    pool_->ParallelFor(n, fn, min_chunk);
  }

 private:
  Device device_ = Device::kCPU;
  std::shared_ptr<ThreadPool> pool_;
  void* cuda_stream_ = nullptr;
};

}  // namespace tandem

// A fixed-size CPU thread pool with one operation: ParallelFor over independent work items.
// Work is split into contiguous, equal ranges, one per thread. The numerics contract (rule 1)
// forbids splitting a reduction across threads, so kernels only hand it loops whose iterations
// write disjoint outputs; results are then identical for any thread count.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem {

class ThreadPool {
 public:
  // num_threads >= 1; the calling thread is one of them, so num_threads - 1 are spawned.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) on disjoint ranges covering [0, n), in parallel, and returns when all are
  // done. Ranges are at least `min_chunk` items long. Thread-safe for one caller at a time; a
  // nested call from inside fn runs serially.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t min_chunk = 1);

 private:
  void WorkerLoop(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace tandem

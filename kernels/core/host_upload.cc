// UploadAsync: host bytes to the device through a ring of pinned staging buffers per device.
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"

namespace tandem::kernels::cuda {
namespace {

// Above this a copy goes from the caller's memory directly: its transfer, not the host's part,
// dominates, and a slot would pin that much for good.
constexpr size_t kMaxStagedBytes = size_t{4} << 20;

// Pinned buffers that uploads go through, on one device. A slot is reused once the copy it last
// fed has run (its event). With 32 slots the host can queue that many uploads (a few per layer)
// ahead of the GPU before it waits for the oldest; 32 × 64 KB stay pinned.
class StagingRing {
 public:
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;
  StagingRing() = default;

  absl::Status Copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& slot = slots_[next_];
    next_ = (next_ + 1) % slots_.size();
    if (slot.copied != nullptr) TANDEM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(slot.copied));
    if (slot.capacity < bytes) {
      if (slot.host != nullptr) TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeHost(slot.host));
      slot.host = nullptr;
      slot.capacity = 0;
      const size_t capacity = std::max<size_t>(bytes, size_t{64} << 10);
      TANDEM_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&slot.host, capacity, cudaHostAllocDefault));
      slot.capacity = capacity;
    }
    if (slot.copied == nullptr) {
      TANDEM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&slot.copied, cudaEventDisableTiming));
    }
    std::memcpy(slot.host, src, bytes);
    TANDEM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst, slot.host, bytes, cudaMemcpyHostToDevice, stream));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(slot.copied, stream));
    return absl::OkStatus();
  }

 private:
  struct Slot {
    void* host = nullptr;
    size_t capacity = 0;
    cudaEvent_t copied = nullptr;
  };
  std::mutex mu_;
  std::array<Slot, 32> slots_{};
  size_t next_ = 0;
};

// Device `device`'s ring (events belong to one device). Never destroyed: uploads may still be
// in flight when static destructors run.
StagingRing& RingOf(int device) {
  static std::mutex mu;
  static auto* rings = new std::map<int, std::unique_ptr<StagingRing>>();
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<StagingRing>& ring = (*rings)[device];
  if (ring == nullptr) ring = std::make_unique<StagingRing>();
  return *ring;
}

}  // namespace

absl::Status UploadAsync(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  // A captured graph would copy from the staging slot whenever it is replayed, by then refilled:
  // captured and large copies read the caller's memory.
  if (capture != cudaStreamCaptureStatusNone || bytes > kMaxStagedBytes) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
    return absl::OkStatus();
  }
  int device = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  return RingOf(device).Copy(dst, src, bytes, stream);
}

}  // namespace tandem::kernels::cuda

// InferenceCache: the memory the rollout engine keeps per sequence between engine steps
// (DESIGN.md §6, contract rules 2 and 3).
//   softmax layers: paged K and V blocks of kAttentionKvTile positions; block j of a sequence holds
//     positions [j·tile, (j+1)·tile). Which blocks a sequence owns (and ref-counting for forks) is
//     the engine's business; this class only owns the memory.
//   linear layers: per slot, the fp32 state at the sequence's last chunk boundary, the open chunk's
//     k and v, and how many of them are valid (open_len).
// Memory is allocated once, up front, from a byte budget the engine turns into block/slot counts.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/tensor.h"
#include "model/config.h"

namespace tandem::model {

// The dtype attention layers keep q, k and v in, and the cache its K/V blocks and open-chunk rows:
// f32 on the CPU, bf16 on the GPU (half the cache, and what the GPU's tensor-core attention
// kernels read). The training forward stores its k, v the same way on each device, so decode
// reads the very values the forward pass attends over (contract rule 2).
inline DType KvCacheDType(Device device) {
  return device == Device::kCUDA ? DType::kBF16 : DType::kF32;
}

class InferenceCache {
 public:
  struct SoftmaxLayer {
    Tensor k;  // [num_blocks, kAttentionKvTile, Hkv, D] in KvCacheDType(device)
    Tensor v;  // [num_blocks, kAttentionKvTile, Hkv, D]
  };
  struct LinearLayer {
    Tensor state;     // [num_slots, H, D, D] fp32 boundary state
    Tensor open_k;    // [num_slots, C, H, D] in KvCacheDType(device)
    Tensor open_v;    // [num_slots, C, H, D]
    Tensor open_len;  // [num_slots] i32
  };

  // Bytes one KV block takes over all softmax layers, and one slot over all linear layers, for a
  // cache on `device` (K/V and open rows in KvCacheDType(device); linear state always f32).
  static int64_t BytesPerBlock(const ModelConfig& config, Device device = Device::kCPU);
  static int64_t BytesPerSlot(const ModelConfig& config, Device device = Device::kCPU);

  // On Device::kCUDA the memory is GPU memory and the slot/block copies below run on the default
  // stream (use a default-stream CUDA context with it).
  static absl::StatusOr<InferenceCache> Create(const ModelConfig& config, int64_t num_blocks,
                                               int64_t num_slots, Device device = Device::kCPU);

  Device device() const { return device_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_slots() const { return num_slots_; }
  // Indexed by layer; an entry of the other kind is empty.
  SoftmaxLayer& softmax_layer(int64_t layer) { return softmax_[layer]; }
  LinearLayer& linear_layer(int64_t layer) { return linear_[layer]; }

  // Zeroes a slot's state and open chunk (a sequence starting at position 0).
  void ResetSlot(int64_t slot);
  // Copies a slot's linear state, open chunk and open_len in every linear layer (fork).
  void CopySlot(int64_t src, int64_t dst);
  // Copies a KV block in every softmax layer (copy-on-write of a partly filled shared block).
  void CopyBlock(int64_t src, int64_t dst);

 private:
  Device device_ = Device::kCPU;
  int64_t num_blocks_ = 0;
  int64_t num_slots_ = 0;
  std::vector<SoftmaxLayer> softmax_;
  std::vector<LinearLayer> linear_;
};

}  // namespace tandem::model

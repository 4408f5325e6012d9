// InferenceCache: allocation and the slot/block copies the rollout engine needs to fork and reset
// sequences. The engine decides which sequence owns which block or slot; this file only moves
// bytes, so a copied slot or block continues bitwise where the original left off.
#include "model/inference_cache.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/core/contract.h"
#include "kernels/core/status_macros.h"

#ifdef TANDEM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tandem::model {
namespace {

int64_t CountLayers(const ModelConfig& config, LayerType type) {
  int64_t n = 0;
  for (LayerType t : config.layer_types) n += t == type ? 1 : 0;
  return n;
}

// Copies element row `src` of `t` (dimension 0) onto row `dst`, on the tensor's device.
void CopyRow(Tensor& t, int64_t src, int64_t dst) {
  if (src == dst) return;
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(t.dim(0));
  char* base = static_cast<char*>(t.raw_data());
  if (t.device() == Device::kCPU) {
    std::memcpy(base + dst * row_bytes, base + src * row_bytes, row_bytes);
    return;
  }
#ifdef TANDEM_HAVE_CUDA
  // Ordered on the default stream with the kernels that read the cache.
  cudaMemcpy(base + dst * row_bytes, base + src * row_bytes, row_bytes, cudaMemcpyDeviceToDevice);
#endif
}

void ZeroRow(Tensor& t, int64_t row) {
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(t.dim(0));
  char* p = static_cast<char*>(t.raw_data()) + row * row_bytes;
  if (t.device() == Device::kCPU) {
    std::memset(p, 0, row_bytes);
    return;
  }
#ifdef TANDEM_HAVE_CUDA
  cudaMemset(p, 0, row_bytes);
#endif
}

}  // namespace

int64_t InferenceCache::BytesPerBlock(const ModelConfig& config, Device device) {
  const int64_t per_layer = 2 * kAttentionKvTile * config.num_key_value_heads * config.head_dim *
                            static_cast<int64_t>(DTypeSize(KvCacheDType(device)));
  return CountLayers(config, LayerType::kSoftmax) * per_layer;
}

int64_t InferenceCache::BytesPerSlot(const ModelConfig& config, Device device) {
  const int64_t H = config.num_attention_heads, D = config.head_dim;
  const int64_t per_layer = H * D * D * static_cast<int64_t>(sizeof(float)) +
                            2 * kLinearAttentionChunk * H * D * DTypeSize(KvCacheDType(device)) +
                            static_cast<int64_t>(sizeof(int32_t));
  return CountLayers(config, LayerType::kLinear) * per_layer;
}

absl::StatusOr<InferenceCache> InferenceCache::Create(const ModelConfig& config, int64_t num_blocks,
                                                      int64_t num_slots, Device device) {
  TANDEM_CHECK_ARG(num_blocks >= 0, "num_blocks: must be >= 0, got ", num_blocks);
  TANDEM_CHECK_ARG(num_slots >= 0, "num_slots: must be >= 0, got ", num_slots);
  TANDEM_CHECK_ARG(static_cast<int64_t>(config.layer_types.size()) == config.num_hidden_layers,
                   "config: ", config.layer_types.size(), " layer types for ",
                   config.num_hidden_layers, " layers");
  const int64_t H = config.num_attention_heads, Hkv = config.num_key_value_heads;
  const int64_t D = config.head_dim, C = kLinearAttentionChunk;
  InferenceCache cache;
  cache.device_ = device;
  cache.num_blocks_ = num_blocks;
  cache.num_slots_ = num_slots;
  cache.softmax_.resize(config.num_hidden_layers);
  cache.linear_.resize(config.num_hidden_layers);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.layer_types[l] == LayerType::kSoftmax) {
      // Blocks are always written before they are read, so they need no clearing.
      const DType kv = KvCacheDType(device);
      cache.softmax_[l].k = Tensor::Empty({num_blocks, kAttentionKvTile, Hkv, D}, kv, device);
      cache.softmax_[l].v = Tensor::Empty({num_blocks, kAttentionKvTile, Hkv, D}, kv, device);
    } else {
      // Slots are zeroed by ResetSlot when a sequence takes them.
      cache.linear_[l].state = Tensor::Empty({num_slots, H, D, D}, DType::kF32, device);
      const DType rows = KvCacheDType(device);  // the dtype the layer's k, v come in
      cache.linear_[l].open_k = Tensor::Empty({num_slots, C, H, D}, rows, device);
      cache.linear_[l].open_v = Tensor::Empty({num_slots, C, H, D}, rows, device);
      cache.linear_[l].open_len = Tensor::Zeros({num_slots}, DType::kI32, device);
    }
  }
  return cache;
}

void InferenceCache::ResetSlot(int64_t slot) {
  for (LinearLayer& layer : linear_) {
    if (!layer.state.defined()) continue;
    ZeroRow(layer.state, slot);
    ZeroRow(layer.open_k, slot);
    ZeroRow(layer.open_v, slot);
    ZeroRow(layer.open_len, slot);
  }
}

void InferenceCache::CopySlot(int64_t src, int64_t dst) {
  for (LinearLayer& layer : linear_) {
    if (!layer.state.defined()) continue;
    CopyRow(layer.state, src, dst);
    CopyRow(layer.open_k, src, dst);
    CopyRow(layer.open_v, src, dst);
    CopyRow(layer.open_len, src, dst);
  }
}

void InferenceCache::CopyBlock(int64_t src, int64_t dst) {
  for (SoftmaxLayer& layer : softmax_) {
    if (!layer.k.defined()) continue;
    CopyRow(layer.k, src, dst);
    CopyRow(layer.v, src, dst);
  }
}

}  // namespace tandem::model

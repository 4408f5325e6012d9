// Internal to kernels/softmax_attention (included by the wgmma forward's headers only): the sm_90a
// forward's K/V ring — its shape constants and shared-memory layout, what the producer and the
// consumers agree on about a block's current item (WsBlock: the ring's stage and phase of each of
// its tiles, counted across the block's items), the producer warp's walk, and the stages' wgmma
// descriptors.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/softmax_attention/attention_mma_kernels.cuh"
#include "kernels/softmax_attention/attention_wgmma.cuh"

namespace tandem::kernels::cuda::attention_mma {

inline constexpr int kWgRows = 64;  // query rows per consumer warpgroup
inline constexpr int kWgStages = 4;
inline constexpr int kWgThreads = 128;
inline constexpr int kWsThreads = kWgThreads + kFwdThreads;    // producer warpgroup + 2 consumers
inline constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // 128·40 + 256·232 <= 64K
// A split ends no earlier than tile kSplit / kTile − 1, by which time every consumer warp has
// released tile kSplit / kTile − 1 − kWgStages >= 0, so it has read its Q rows: the running totals
// may reuse the Q smem.
static_assert(kSplit / kTile > kWgStages,
              "totals overwrite Q rows only after every warp read them");

template <int kD>
struct WgSmem {
  static constexpr size_t kKvBytes = size_t{2} * kWgStages * kSwTileBytes<kD>;
  static constexpr size_t kQBytes = std::max(size_t{kFwdRows} * kLd<kD> * sizeof(bf16),
                                             size_t{Smem<kD>::kTotalFloats} * kFwdThreads * 4);
  static constexpr size_t kBytes = 1024 + kKvBytes + kQBytes;  // 1024: to align the base
  static constexpr uint32_t kTileTx = 2 * kSwTileBytes<kD>;    // K and V bytes of a full tile
  __device__ static unsigned char* K(unsigned char* base, int stage) {
    return base + (2 * stage) * kSwTileBytes<kD>;
  }
  __device__ static unsigned char* V(unsigned char* base, int stage) {
    return base + (2 * stage + 1) * kSwTileBytes<kD>;
  }
  __device__ static bf16* Q(unsigned char* base) {
    return reinterpret_cast<bf16*>(base + kKvBytes);
  }
};

// What the producer and the consumers of one block agree on about its current item. The ring
// runs on across the block's items: the item's tile i is the block's tile tile0 + i, whose stage
// and mbarrier phase follow from that count.
struct WsBlock {
  int seq_start, kv_head, num_keys, num_tiles;
  uint32_t tile0;
  uint64_t* full;   // [kWgStages]: tile landed (1 arrival + the bulk copies' bytes)
  uint64_t* empty;  // [kWgStages]: the 8 consumer warps are done with the stage
  __device__ int Stage(int i) const { return static_cast<int>((tile0 + i) % kWgStages); }
  __device__ uint32_t Phase(int i) const { return ((tile0 + i) / kWgStages) & 1u; }
  // Whether the stage of tile i held an earlier tile of the block (then it must be released).
  __device__ bool Reused(int i) const { return tile0 + i >= static_cast<uint32_t>(kWgStages); }
};

// Producer warp (threads 0..31): the item's tile i into its stage once every consumer warp
// released the block's tile kWgStages earlier (of this item or an earlier one). A full tile comes
// by bulk tensor copies ([64 dims, 1 head, 64 keys] boxes); a partial one by cp.async with zeros
// past the sequence's keys, so no other row enters.
template <int kD>
__device__ __forceinline__ void ProduceTiles(const WsBlock& b, unsigned char* smem, const bf16* k,
                                             const bf16* v, int64_t kv_ld, const CUtensorMap* tmk,
                                             const CUtensorMap* tmv) {
  const int lane = threadIdx.x;
  const bf16* kb = k + (int64_t{b.seq_start} * kv_ld / kD + b.kv_head) * kD;
  const bf16* vb = v + (int64_t{b.seq_start} * kv_ld / kD + b.kv_head) * kD;
  for (int i = 0; i < b.num_tiles; ++i) {
    const int stage = b.Stage(i), a = i * kTile, valid = min(kTile, b.num_keys - a);
    if (b.Reused(i)) MbarWait(&b.empty[stage], b.Phase(i) ^ 1u);
    unsigned char* ks = WgSmem<kD>::K(smem, stage);
    unsigned char* vs = WgSmem<kD>::V(smem, stage);
    if (valid == kTile) {
      if (lane == 0) {
        MbarArriveExpectTx(&b.full[stage], WgSmem<kD>::kTileTx);
#pragma unroll
        for (int c = 0; c < kD / 64; ++c) {
          TmaLoad3d(ks + c * kSwBlockBytes, tmk, c * 64, b.kv_head, b.seq_start + a,
                    &b.full[stage]);
          TmaLoad3d(vs + c * kSwBlockBytes, tmv, c * 64, b.kv_head, b.seq_start + a,
                    &b.full[stage]);
        }
      }
    } else {
      const auto row = [=](int j) { return (a + j) * kv_ld; };
      LoadTileSwizzledAsync<kD>(kb, valid, row, ks, 32);
      LoadTileSwizzledAsync<kD>(vb, valid, row, vs, 32);
      CpAsyncMbarArrive(&b.full[stage]);
      __syncwarp();
      if (lane == 0) MbarArrive(&b.full[stage]);
    }
  }
}

// The stage-0 K and V tiles as wgmma descriptors; stage s lies 2s tiles further on.
struct StageDescs {
  TileDesc k0, v0;
  template <int kD>
  __device__ static StageDescs Of(unsigned char* smem) {
    return {KTileDesc(WgSmem<kD>::K(smem, 0)), VTileDesc(WgSmem<kD>::V(smem, 0))};
  }
  template <int kD>
  __device__ static TileDesc AtStage(const TileDesc& d0, int stage) {
    return {d0.lo + static_cast<uint32_t>(stage) * (2 * kSwTileBytes<kD> / 16), d0.hi};
  }
};

}  // namespace tandem::kernels::cuda::attention_mma

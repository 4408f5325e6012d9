// Compile-time constants of the numerics contract (DESIGN.md §3). Every path that must agree
// bitwise (training forward, prefill, decode) reads its tile and chunk sizes from here, and none
// of them depend on the problem size, the batch or the thread count.
#pragma once

#include <cstdint>

namespace tandem {

// Linear attention chunk length C (rule 3): chunk boundaries sit at positions 0, C, 2C, ... of
// every sequence. Also the length of the open-chunk k/v buffer a decoding sequence keeps.
inline constexpr int64_t kLinearAttentionChunk = 64;

// Softmax attention KV tile (rule 2): every query reduces over keys in tiles [a, a + tile) with
// a a multiple of the tile. Also the block length of the rollout engine's paged KV cache.
inline constexpr int64_t kAttentionKvTile = 64;

// Softmax attention split length (rule 2): keys are grouped into splits of this many positions;
// each split is reduced tile by tile with online softmax, then split partials are merged in
// ascending split order. A multiple of kAttentionKvTile.
inline constexpr int64_t kAttentionSplitLength = 1024;
static_assert(kAttentionSplitLength % kAttentionKvTile == 0,
              "a split must hold a whole number of KV tiles");

}  // namespace tandem

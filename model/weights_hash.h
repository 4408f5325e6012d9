// A 64-bit fingerprint of weight bits, so that the trainer and a rollout worker can check cheaply
// that they hold the same weights (DESIGN.md §3: same weight bits, same log-probs). Also the
// per-tensor checksum of the weight-sync protocol (proto/tandem/v1/rollout.proto).
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/weights.h"

namespace tandem::model {

// The hash's starting value (FNV-1a's 64-bit offset basis).
inline constexpr uint64_t kHashSeed = 0xcbf29ce484222325ULL;

// FNV-1a over 64-bit words, each word first mixed by MurmurHash3's 64-bit finalizer:
//   h ← (h ⊕ fmix64(w)) · 0x100000001b3   for each little-endian 8-byte word w of data,
// a final partial word zero-padded, then h ← (h ⊕ fmix64(n)) · prime with n = the byte count, so
// that trailing zero bytes and the split into calls both change the result. Word-wise so that a
// 400 MB model hashes in well under a second (one multiply per 8 bytes on the dependency chain);
// the finalizer makes every input bit reach every output bit. Not cryptographic: it detects
// corruption and mismatched versions, not an adversary. Same value on every little-endian host.
uint64_t HashBytes(const void* data, size_t n, uint64_t seed = kHashSeed);

// The whole model: h = kHashSeed, then h = HashBytes(tensor bytes, nbytes, h) for every tensor in
// ForEachParameter order (f32 bits as stored; tied lm_head not visited). Names and shapes are not
// hashed: both sides have the same config, and the weight-sync header checks those separately.
uint64_t WeightsHash(const ModelWeights& weights);

}  // namespace tandem::model

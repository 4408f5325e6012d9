// HashBytes and WeightsHash: word-wise FNV-1a with a MurmurHash3 finalizer per word (see the
// header for the exact definition, which both sides of a weight sync must agree on).
#include "model/weights_hash.h"

#include <cstring>
#include <string>

namespace tandem::model {
namespace {

constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

// MurmurHash3's 64-bit finalizer: a bijection in which every input bit affects every output bit.
inline uint64_t Fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

}  // namespace

uint64_t HashBytes(const void* data, size_t n, uint64_t seed) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint64_t h = seed;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes + i, 8);  // little-endian hosts only (x86-64, aarch64)
    h = (h ^ Fmix64(w)) * kFnvPrime;
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, bytes + i, n - i);
    h = (h ^ Fmix64(w)) * kFnvPrime;
  }
  return (h ^ Fmix64(static_cast<uint64_t>(n))) * kFnvPrime;
}

uint64_t WeightsHash(const ModelWeights& weights) {
  uint64_t h = kHashSeed;
  weights.ForEachParameter([&](const std::string& /*name*/, const Tensor& t) {
    h = HashBytes(t.raw_data(), t.nbytes(), h);
  });
  return h;
}

}  // namespace tandem::model

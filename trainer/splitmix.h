// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fully specified generator, so seeded data orders
// and synthetic tasks are the same on every platform and standard library (std::shuffle and the
// std distributions are implementation-defined).
#pragma once

#include <cstdint>

namespace tandem::trainer {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  // Mixes two words into one seed (e.g. (run seed, epoch) or (seed, sample index)).
  static uint64_t Mix(uint64_t a, uint64_t b) { return SplitMix64(a ^ Scramble(b)).Next(); }

  uint64_t Next() {
    state_ += 0x9E3779B97F4A7C15ull;
    return Scramble(state_);
  }
  // Uniform in [0, n), n > 0, by the multiply-shift map (bias below 2^-40 for n < 2^24).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

 private:
  static uint64_t Scramble(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

}  // namespace tandem::trainer

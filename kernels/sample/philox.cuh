// Philox4x32-10 on the device, the same function as kernels::Philox4x32 / UniformFromKey
// (sample.h, sample_cpu.cc): counter (position lo, position hi, sample lo, sample hi), key (seed
// lo, seed hi), and the uniform's 53 bits from words 0 and 1. Include from .cu files only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::kernels::cuda {

struct PhiloxWords {
  uint32_t w[4];
};

__device__ __forceinline__ PhiloxWords Philox4x32_10(PhiloxWords ctr, uint32_t k0, uint32_t k1) {
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint32_t hi0 = __umulhi(0xD2511F53u, ctr.w[0]), lo0 = 0xD2511F53u * ctr.w[0];
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, ctr.w[2]), lo1 = 0xCD9E8D57u * ctr.w[2];
    ctr = {{hi1 ^ ctr.w[1] ^ k0, lo1, hi0 ^ ctr.w[3] ^ k1, lo0}};
  }
  return ctr;
}

// The Philox words of one draw (seed, sample index, position).
__device__ __forceinline__ PhiloxWords SampleWords(uint64_t seed, uint64_t sample_index,
                                                   uint64_t position) {
  const PhiloxWords ctr{{static_cast<uint32_t>(position), static_cast<uint32_t>(position >> 32),
                         static_cast<uint32_t>(sample_index),
                         static_cast<uint32_t>(sample_index >> 32)}};
  return Philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// The 53 random bits of UniformFromKey; the uniform is bits · 2^-53 (exact in double).
__device__ __forceinline__ uint64_t UniformBits(const PhiloxWords& w) {
  return (static_cast<uint64_t>(w.w[0]) << 32 | w.w[1]) >> 11;
}

__device__ __forceinline__ double UniformFromWords(const PhiloxWords& w) {
  return static_cast<double>(UniformBits(w)) * 0x1.0p-53;
}

}  // namespace tandem::kernels::cuda

// Philox4x32-10 and inverse-CDF sampling from a row of log-probs.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/sample/sample.h"

namespace tandem::kernels {
namespace {
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1
constexpr int kPhiloxRounds = 10;

void MulHiLo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}
}  // namespace

std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  for (int round = 0; round < kPhiloxRounds; ++round) {
    if (round > 0) {
      key[0] += kPhiloxW0;
      key[1] += kPhiloxW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    MulHiLo(kPhiloxM0, ctr[0], hi0, lo0);
    MulHiLo(kPhiloxM1, ctr[2], hi1, lo1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
  }
  return ctr;
}

double UniformFromKey(const SampleKey& key) {
  std::array<uint32_t, 4> out = Philox4x32(
      {static_cast<uint32_t>(key.position), static_cast<uint32_t>(key.position >> 32),
       static_cast<uint32_t>(key.sample_index), static_cast<uint32_t>(key.sample_index >> 32)},
      {static_cast<uint32_t>(key.seed), static_cast<uint32_t>(key.seed >> 32)});
  uint64_t bits = (static_cast<uint64_t>(out[0]) << 32 | out[1]) >> 11;  // 53 bits
  return static_cast<double>(bits) * 0x1.0p-53;
}

absl::StatusOr<int32_t> SampleToken(const float* logprobs, int64_t vocab,
                                    const SamplingParams& params, const SampleKey& key) {
  if (vocab < 1) return absl::InvalidArgumentError("vocab: expected at least 1 entry");
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k: expected >= 0, got ", params.top_k));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p: expected in (0, 1], got ", params.top_p));
  }
  // Candidates by log-prob descending, ties to the lower id (NaN and -inf never win).
  auto better = [&](int32_t a, int32_t b) {
    float la = logprobs[a], lb = logprobs[b];
    if (la != lb) return la > lb || std::isnan(lb);
    return a < b;
  };
  if (params.greedy) {
    int32_t best = 0;
    for (int32_t v = 1; v < vocab; ++v) {
      if (better(v, best)) best = v;
    }
    if (!std::isfinite(logprobs[best])) {
      return absl::InvalidArgumentError("logprobs: no finite entry in the row");
    }
    return best;
  }
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = params.top_k > 0 ? std::min(params.top_k, vocab) : vocab;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), better);
  order.resize(keep);
  // Probabilities in candidate order; top-p cuts the smallest prefix reaching top_p.
  std::vector<double> prob(keep);
  double total = 0.0;
  int64_t kept = 0;
  for (; kept < keep; ++kept) {
    double p = std::exp(static_cast<double>(logprobs[order[kept]]));
    if (!(p > 0.0)) break;  // -inf, NaN or underflow: this and the rest cannot be drawn
    prob[kept] = p;
    total += p;
    if (params.top_p < 1.0f && total >= params.top_p) {
      ++kept;
      break;
    }
  }
  if (kept == 0) return absl::InvalidArgumentError("logprobs: no finite entry in the row");
  double target = UniformFromKey(key) * total;
  double cumulative = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    cumulative += prob[i];
    if (target < cumulative) return order[i];
  }
  return order[kept - 1];  // target rounded up to the total
}

}  // namespace tandem::kernels

// fp64 reference masked cross-entropy: loss = Σ_t m_t · (lse_t − z_t[target_t]) / max(Σ m, 1),
// and its gradient m_t / max(Σ m, 1) · (softmax(z_t) − onehot(target_t)) · dloss.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tests/kernels/reference/lm_head_logprob_ref.h"

namespace tandem::reference {

inline double MaskDenominator(const std::vector<double>& mask) {
  double s = 0;
  for (double m : mask) s += m;
  return std::max(s, 1.0);
}

// Tokens with mask 0 are skipped (their target may be out of range).
inline double CrossEntropy(const std::vector<double>& logits, const std::vector<int32_t>& targets,
                           const std::vector<double>& mask, int64_t v) {
  double num = 0;
  for (size_t t = 0; t < targets.size(); ++t) {
    if (mask[t] == 0) continue;
    num += mask[t] * (LogSumExp(&logits[t * v], v, 1.0) - logits[t * v + targets[t]]);
  }
  return num / MaskDenominator(mask);
}

inline std::vector<double> CrossEntropyBwd(const std::vector<double>& logits,
                                           const std::vector<int32_t>& targets,
                                           const std::vector<double>& mask, int64_t v,
                                           double dloss) {
  std::vector<double> g(logits.size(), 0.0);
  const double den = MaskDenominator(mask);
  for (size_t t = 0; t < targets.size(); ++t) {
    if (mask[t] == 0) continue;
    double lse = LogSumExp(&logits[t * v], v, 1.0);
    for (int64_t j = 0; j < v; ++j) {
      double p = std::exp(logits[t * v + j] - lse);
      g[t * v + j] = dloss * mask[t] / den * (p - (j == targets[t] ? 1.0 : 0.0));
    }
  }
  return g;
}

}  // namespace tandem::reference

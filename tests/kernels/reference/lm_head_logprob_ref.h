// fp64 reference LM head and log-probabilities: logits = h·Wᵀ, z = logits / temperature,
// lse = log Σ exp(z), logprob = z[target] − lse, and the gradient of Σ dlogprob · logprob.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tandem::reference {

// logits [T, V] = h [T, Dm] · w [V, Dm]ᵀ.
inline std::vector<double> LmHead(const std::vector<double>& h, const std::vector<double>& w,
                                  int64_t t, int64_t v, int64_t dm) {
  std::vector<double> logits(t * v, 0.0);
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t j = 0; j < v; ++j) {
      for (int64_t k = 0; k < dm; ++k) logits[r * v + j] += h[r * dm + k] * w[j * dm + k];
    }
  }
  return logits;
}

// log Σ_v exp(row_v / temperature), shifted by the max for range.
inline double LogSumExp(const double* row, int64_t v, double temperature) {
  double m = -INFINITY;
  for (int64_t j = 0; j < v; ++j) m = std::max(m, row[j] / temperature);
  if (std::isinf(m)) return m;
  double s = 0;
  for (int64_t j = 0; j < v; ++j) s += std::exp(row[j] / temperature - m);
  return m + std::log(s);
}

// log_softmax(logits / temperature), [T, V].
inline std::vector<double> LogSoftmax(const std::vector<double>& logits, int64_t t, int64_t v,
                                      double temperature) {
  std::vector<double> out(t * v);
  for (int64_t r = 0; r < t; ++r) {
    double lse = LogSumExp(&logits[r * v], v, temperature);
    for (int64_t j = 0; j < v; ++j) out[r * v + j] = logits[r * v + j] / temperature - lse;
  }
  return out;
}

// logprob [T] of each row's target.
inline std::vector<double> Logprob(const std::vector<double>& logits,
                                   const std::vector<int32_t>& targets, int64_t v,
                                   double temperature) {
  const int64_t t = static_cast<int64_t>(targets.size());
  auto ls = LogSoftmax(logits, t, v, temperature);
  std::vector<double> out(t);
  for (int64_t r = 0; r < t; ++r) out[r] = ls[r * v + targets[r]];
  return out;
}

// ∂(Σ_t dlogprob_t · logprob_t)/∂logits = dlogprob_t · (onehot − softmax(z_t)) / temperature.
inline std::vector<double> LogprobBwd(const std::vector<double>& logits,
                                      const std::vector<int32_t>& targets,
                                      const std::vector<double>& dlogprob, int64_t v,
                                      double temperature) {
  const int64_t t = static_cast<int64_t>(targets.size());
  auto ls = LogSoftmax(logits, t, v, temperature);
  std::vector<double> g(t * v);
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t j = 0; j < v; ++j) {
      double onehot = j == targets[r] ? 1.0 : 0.0;
      g[r * v + j] = dlogprob[r] * (onehot - std::exp(ls[r * v + j])) / temperature;
    }
  }
  return g;
}

}  // namespace tandem::reference

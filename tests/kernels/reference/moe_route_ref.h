// fp64 reference for the MoE router (kernels/moe_route/moe_route.h), written for clarity: sigmoid
// scores, group-limited top-k on the biased scores with ties to the lower index, and the weights
// (and their gradient) as functions of the logits for a FIXED selection.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/moe_route/moe_route.h"

namespace tandem::testing {

struct RouteRefResult {
  std::vector<int32_t> idx;    // [T, K]
  std::vector<double> weight;  // [T, K]
  std::vector<double> scores;  // [T, E]
};

inline double SigmoidRef(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Position of the largest v[i] among the allowed i; a later index wins only if strictly larger.
inline int ArgMaxRef(const std::vector<double>& v, const std::vector<bool>& allowed) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(v.size()); ++i) {
    if (allowed[i] && (best < 0 || v[i] > v[best])) best = i;
  }
  return best;
}

// Top-k expert indices of one token (rank order), from its logits [E] and the bias [E].
inline std::vector<int32_t> SelectRef(const kernels::MoeRouteParams& p,
                                      const std::vector<double>& logits,
                                      const std::vector<double>& bias) {
  const int e_count = static_cast<int>(p.num_experts);
  const int groups = static_cast<int>(p.n_group), size = e_count / groups;
  std::vector<double> b(e_count);
  for (int e = 0; e < e_count; ++e) b[e] = SigmoidRef(logits[e]) + bias[e];
  // Group score: the sum of the group's two best biased scores (its only one for size 1).
  std::vector<double> group_score(groups);
  for (int g = 0; g < groups; ++g) {
    std::vector<double> members(b.begin() + g * size, b.begin() + (g + 1) * size);
    std::vector<bool> open(size, true);
    int first = ArgMaxRef(members, open);
    group_score[g] = members[first];
    open[first] = false;
    if (size > 1) group_score[g] += members[ArgMaxRef(members, open)];
  }
  std::vector<bool> group_open(groups, true), allowed(e_count, false);
  for (int r = 0; r < p.topk_group; ++r) {
    int g = ArgMaxRef(group_score, group_open);
    group_open[g] = false;
    for (int e = g * size; e < (g + 1) * size; ++e) allowed[e] = true;
  }
  std::vector<int32_t> idx;
  for (int k = 0; k < p.top_k; ++k) {
    int e = ArgMaxRef(b, allowed);
    allowed[e] = false;
    idx.push_back(e);
  }
  return idx;
}

// Weights of one token for the given selection: p_k / (Σ p + 1e-20) · scale (or p_k · scale).
inline std::vector<double> WeightsRef(const kernels::MoeRouteParams& p,
                                      const std::vector<double>& logits,
                                      const std::vector<int32_t>& idx) {
  double sum = 0;
  for (int32_t e : idx) sum += SigmoidRef(logits[e]);
  std::vector<double> w;
  for (int32_t e : idx) {
    double s = SigmoidRef(logits[e]);
    w.push_back((p.norm_topk_prob ? s / (sum + 1e-20) : s) * p.routed_scaling_factor);
  }
  return w;
}

// Forward over all T tokens; logits [T, E], bias [E].
inline RouteRefResult MoeRouteFwdRef(const kernels::MoeRouteParams& p,
                                     const std::vector<double>& logits,
                                     const std::vector<double>& bias) {
  const size_t e_count = p.num_experts, t_count = logits.size() / e_count;
  RouteRefResult r;
  for (size_t t = 0; t < t_count; ++t) {
    std::vector<double> row(logits.begin() + t * e_count, logits.begin() + (t + 1) * e_count);
    std::vector<int32_t> idx = SelectRef(p, row, bias);
    std::vector<double> w = WeightsRef(p, row, idx);
    r.idx.insert(r.idx.end(), idx.begin(), idx.end());
    r.weight.insert(r.weight.end(), w.begin(), w.end());
    for (double x : row) r.scores.push_back(SigmoidRef(x));
  }
  return r;
}

// dlogits [T, E] from dweight [T, K] with the selection idx [T, K] held fixed. Derivation:
// w_k = c·p_k/S with S = Σ_j p_j (+ε), so ∂w_k/∂p_j = c·(δ_kj/S − p_k/S²) and ∂p/∂x = p(1 − p).
inline std::vector<double> MoeRouteBwdRef(const kernels::MoeRouteParams& p,
                                          const std::vector<double>& logits,
                                          const std::vector<int32_t>& idx,
                                          const std::vector<double>& dweight) {
  const size_t e_count = p.num_experts, k_count = p.top_k, t_count = logits.size() / e_count;
  const double c = p.routed_scaling_factor;
  std::vector<double> dlogits(t_count * e_count, 0.0);
  for (size_t t = 0; t < t_count; ++t) {
    auto pr = [&](size_t k) { return SigmoidRef(logits[t * e_count + idx[t * k_count + k]]); };
    double sum = 1e-20;
    for (size_t k = 0; k < k_count; ++k) sum += pr(k);
    for (size_t j = 0; j < k_count; ++j) {
      double dp = 0;  // ∂L/∂p_j = Σ_k dw_k ∂w_k/∂p_j
      for (size_t k = 0; k < k_count; ++k) {
        double dwk_dpj = p.norm_topk_prob ? c * ((k == j ? 1.0 / sum : 0.0) - pr(k) / (sum * sum))
                                          : (k == j ? c : 0.0);
        dp += dweight[t * k_count + k] * dwk_dpj;
      }
      dlogits[t * e_count + idx[t * k_count + j]] += dp * pr(j) * (1 - pr(j));
    }
  }
  return dlogits;
}

}  // namespace tandem::testing

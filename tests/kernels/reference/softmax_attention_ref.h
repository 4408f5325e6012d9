// Plain fp64 reference for causal GQA softmax attention over packed sequences, forward and
// backward, written for clarity: full softmax per query row, no tiling, no online rescaling.
// The backward uses δ_i = Σ_j P_ij·dP_ij (not rowsum(dO∘O)), so it is derived independently of
// the kernel it checks; it is itself checked against finite differences of the forward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tandem::testing::ref {

struct AttentionShape {
  int64_t H = 0, Hkv = 0, D = 0;
  double scale = 0;
  std::vector<int32_t> cu_seqlens;  // [B + 1]
  int64_t T() const { return cu_seqlens.back(); }
};

// Calls fn(start, len) for every packed sequence.
template <typename Fn>
void ForEachSequence(const AttentionShape& s, const Fn& fn) {
  for (size_t b = 0; b + 1 < s.cu_seqlens.size(); ++b) {
    fn(int64_t{s.cu_seqlens[b]}, int64_t{s.cu_seqlens[b + 1] - s.cu_seqlens[b]});
  }
}

// Softmax probabilities P[j], j = 0..i, of query row i (head h) of the sequence at `start`.
inline std::vector<double> AttentionProbs(const AttentionShape& s, const std::vector<double>& q,
                                          const std::vector<double>& k, int64_t start, int64_t i,
                                          int64_t h, double* lse) {
  const int64_t g = h / (s.H / s.Hkv);
  std::vector<double> score(i + 1);
  double max_score = -INFINITY;
  for (int64_t j = 0; j <= i; ++j) {
    double dot = 0;
    for (int64_t d = 0; d < s.D; ++d) {
      dot += q[((start + i) * s.H + h) * s.D + d] * k[((start + j) * s.Hkv + g) * s.D + d];
    }
    score[j] = s.scale * dot;
    max_score = std::max(max_score, score[j]);
  }
  double sum = 0;
  for (double x : score) sum += std::exp(x - max_score);
  for (double& x : score) x = std::exp(x - max_score) / sum;
  if (lse) *lse = max_score + std::log(sum);
  return score;
}

// o [T, H, D], lse [T, H].
inline void SoftmaxAttentionFwd(const AttentionShape& s, const std::vector<double>& q,
                                const std::vector<double>& k, const std::vector<double>& v,
                                std::vector<double>& o, std::vector<double>& lse) {
  o.assign(s.T() * s.H * s.D, 0.0);
  lse.assign(s.T() * s.H, 0.0);
  ForEachSequence(s, [&](int64_t start, int64_t len) {
    for (int64_t i = 0; i < len; ++i) {
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t row = (start + i) * s.H + h, g = h / (s.H / s.Hkv);
        std::vector<double> p = AttentionProbs(s, q, k, start, i, h, &lse[row]);
        for (int64_t j = 0; j <= i; ++j) {
          for (int64_t d = 0; d < s.D; ++d) {
            o[row * s.D + d] += p[j] * v[((start + j) * s.Hkv + g) * s.D + d];
          }
        }
      }
    }
  });
}

// dq [T, H, D], dk, dv [T, Hkv, D] for the loss Σ d_o ∘ o.
inline void SoftmaxAttentionBwd(const AttentionShape& s, const std::vector<double>& q,
                                const std::vector<double>& k, const std::vector<double>& v,
                                const std::vector<double>& d_o, std::vector<double>& dq,
                                std::vector<double>& dk, std::vector<double>& dv) {
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  ForEachSequence(s, [&](int64_t start, int64_t len) {
    for (int64_t i = 0; i < len; ++i) {
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t row = (start + i) * s.H + h, g = h / (s.H / s.Hkv);
        std::vector<double> p = AttentionProbs(s, q, k, start, i, h, nullptr);
        std::vector<double> dp(i + 1, 0.0);  // dP_ij = dO_i · v_j
        double delta = 0;                    // Σ_j P_ij dP_ij
        for (int64_t j = 0; j <= i; ++j) {
          for (int64_t d = 0; d < s.D; ++d) {
            dp[j] += d_o[row * s.D + d] * v[((start + j) * s.Hkv + g) * s.D + d];
          }
          delta += p[j] * dp[j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const int64_t kv = ((start + j) * s.Hkv + g) * s.D;
          const double ds = p[j] * (dp[j] - delta);  // dLoss/dscore_ij
          for (int64_t d = 0; d < s.D; ++d) {
            dq[row * s.D + d] += s.scale * ds * k[kv + d];
            dk[kv + d] += s.scale * ds * q[row * s.D + d];
            dv[kv + d] += p[j] * d_o[row * s.D + d];
          }
        }
      }
    }
  });
}

}  // namespace tandem::testing::ref

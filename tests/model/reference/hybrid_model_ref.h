// Plain fp64 reference of the whole hybrid-model forward pass (MODEL.md §1.4, §2, §3, §3b), read
// from the same ModelWeights as HybridModel. Written for clarity: linear attention as the plain
// per-token recurrence S = λS + kᵀv, softmax attention as a full softmax, MoE as explicit loops.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kernels/core/tensor.h"
#include "model/config.h"
#include "model/weights.h"

namespace tandem::model::reference {

using Mat = std::vector<double>;  // row-major

// y [T, N] = x [T, K] · w [N, K]ᵀ.
inline Mat Linear(const Mat& x, const Tensor& w) {
  const int64_t N = w.dim(0), K = w.dim(1), T = static_cast<int64_t>(x.size()) / K;
  Mat y(T * N, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) y[t * N + n] += x[t * K + k] * w.data<float>()[n * K + k];
  return y;
}

// Each row of `width` values RMS-normalised, times its slice of w (w indexed by the row's flat
// offset modulo |w|): the plain norm and per-head qk norm (width = |w|) and the grouped output
// norm (width = |w| / groups).
inline Mat RmsNorm(const Mat& x, int64_t width, const Tensor& w, double eps) {
  const int64_t w_len = w.numel();
  Mat y(x.size());
  for (size_t r = 0; r * width < x.size(); ++r) {
    double ss = 0;
    for (int64_t d = 0; d < width; ++d) ss += x[r * width + d] * x[r * width + d];
    const double rstd = 1.0 / std::sqrt(ss / width + eps);
    const int64_t w0 = (r * width) % w_len;
    for (int64_t d = 0; d < width; ++d)
      y[r * width + d] = x[r * width + d] * rstd * w.data<float>()[w0 + d];
  }
  return y;
}

inline double Sigmoid(double g) { return 1.0 / (1.0 + std::exp(-g)); }

// Columns [c0, c0 + n) of x [T, C].
inline Mat Columns(const Mat& x, int64_t C, int64_t c0, int64_t n) {
  const int64_t T = static_cast<int64_t>(x.size()) / C;
  Mat y(T * n);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i) y[t * n + i] = x[t * C + c0 + i];
  return y;
}

// Per-head RMSNorm, then NeoX rotate-half RoPE on the first R dims. x [T, n, D].
inline Mat NormRope(const Mat& x, int64_t D, const Tensor& w, const std::vector<int>& pos,
                    const ModelConfig& c) {
  Mat y = RmsNorm(x, D, w, c.rms_norm_eps);
  const int64_t R = c.rotary_dim(), rows = static_cast<int64_t>(x.size()) / D;
  const int64_t heads = rows / static_cast<int64_t>(pos.size());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = r / heads;
    double* h = &y[r * D];
    for (int64_t i = 0; i < R / 2; ++i) {
      const double angle = pos[t] * std::pow(c.rope_theta, -2.0 * i / R);
      const double a = h[i], b = h[i + R / 2];
      h[i] = a * std::cos(angle) - b * std::sin(angle);
      h[i + R / 2] = b * std::cos(angle) + a * std::sin(angle);
    }
  }
  return y;
}

// Attention over packed sequences; q [T, H, D], k, v [T, Hkv, D]. Linear: the recurrence
// S_t = λ S_{t−1} + k_tᵀ v_t, o_t = s q_t S_t. Softmax: causal, scale s, GQA.
inline Mat Attention(const Mat& q, const Mat& k, const Mat& v, const std::vector<int>& cu,
                     int64_t H, int64_t Hkv, int64_t D, bool linear, const std::vector<float>& x) {
  const double s = 1.0 / std::sqrt(static_cast<double>(D));
  Mat o(q.size(), 0.0);
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / Hkv);
      auto Q = [&](int64_t t, int64_t d) { return q[(t * H + h) * D + d]; };
      auto K = [&](int64_t t, int64_t d) { return k[(t * Hkv + g) * D + d]; };
      auto V = [&](int64_t t, int64_t d) { return v[(t * Hkv + g) * D + d]; };
      Mat S(D * D, 0.0);
      for (int64_t t = cu[b]; t < cu[b + 1]; ++t) {
        double* out = &o[(t * H + h) * D];
        if (linear) {
          const double lambda = std::exp(-static_cast<double>(x[h]));
          for (int64_t i = 0; i < D; ++i)
            for (int64_t j = 0; j < D; ++j)
              S[i * D + j] = lambda * S[i * D + j] + K(t, i) * V(t, j);
          for (int64_t i = 0; i < D; ++i)
            for (int64_t j = 0; j < D; ++j) out[j] += s * Q(t, i) * S[i * D + j];
          continue;
        }
        std::vector<double> score;
        for (int64_t j = cu[b]; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += Q(t, d) * K(j, d);
          score.push_back(s * dot);
        }
        const double m = *std::max_element(score.begin(), score.end());
        double sum = 0;
        for (double& e : score) sum += (e = std::exp(e - m));
        for (int64_t j = cu[b]; j <= t; ++j)
          for (int64_t d = 0; d < D; ++d) out[d] += score[j - cu[b]] / sum * V(j, d);
      }
    }
  }
  return o;
}

// down(silu(gate(x)) · up(x)).
inline Mat Swiglu(const Mat& x, const Tensor& gate, const Tensor& up, const Tensor& down) {
  Mat g = Linear(x, gate), u = Linear(x, up);
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] * Sigmoid(g[i]) * u[i];
  return Linear(g, down);
}

// One token's routed experts (MODEL.md §3b): group-limited top-k over p + bias, weights from p.
inline std::vector<std::pair<int64_t, double>> Route(const double* logits, const LayerWeights& w,
                                                     const ModelConfig& c) {
  const int64_t E = c.num_experts, per_group = E / c.n_group;
  std::vector<double> p(E), b(E), group_score(c.n_group);
  for (int64_t e = 0; e < E; ++e)
    b[e] = (p[e] = Sigmoid(logits[e])) + w.expert_bias.data<float>()[e];
  for (int64_t g = 0; g < c.n_group; ++g) {
    std::vector<double> in(b.begin() + g * per_group, b.begin() + (g + 1) * per_group);
    std::sort(in.rbegin(), in.rend());
    group_score[g] = in[0] + (per_group > 1 ? in[1] : 0.0);
  }
  // Stable sorts by descending score keep ties in ascending index order.
  std::vector<int64_t> groups(c.n_group), experts;
  std::iota(groups.begin(), groups.end(), 0);
  std::stable_sort(groups.begin(), groups.end(),
                   [&](int64_t a, int64_t z) { return group_score[a] > group_score[z]; });
  for (int64_t i = 0; i < c.topk_group; ++i)
    for (int64_t e = 0; e < per_group; ++e) experts.push_back(groups[i] * per_group + e);
  std::sort(experts.begin(), experts.end());
  std::stable_sort(experts.begin(), experts.end(),
                   [&](int64_t a, int64_t z) { return b[a] > b[z]; });
  std::vector<std::pair<int64_t, double>> chosen;
  double sum = 0;
  for (int64_t k = 0; k < c.num_experts_per_tok; ++k) sum += p[experts[k]];
  for (int64_t k = 0; k < c.num_experts_per_tok; ++k) {
    const double norm = c.norm_topk_prob ? sum + 1e-20 : 1.0;
    chosen.push_back({experts[k], p[experts[k]] / norm * c.routed_scaling_factor});
  }
  return chosen;
}

// Σ_k w_k · expert_k(x) + shared(x), token by token.
inline Mat Moe(const Mat& x, const LayerWeights& w, const ModelConfig& c) {
  const int64_t Dm = c.hidden_size, T = static_cast<int64_t>(x.size()) / Dm;
  const int64_t I = c.moe_intermediate_size;
  Mat logits = Linear(x, w.router), y(x.size(), 0.0);
  if (c.shared_intermediate_size() > 0) y = Swiglu(x, w.shared_gate, w.shared_up, w.shared_down);
  for (int64_t t = 0; t < T; ++t) {
    Mat xt(x.begin() + t * Dm, x.begin() + (t + 1) * Dm);
    for (auto [e, weight] : Route(&logits[t * c.num_experts], w, c)) {
      auto slice = [&](const Tensor& s, int64_t rows, int64_t cols) {
        return Tensor::View(const_cast<float*>(s.data<float>()) + e * rows * cols, {rows, cols},
                            DType::kF32);
      };
      Mat ye = Swiglu(xt, slice(w.experts.gate, I, Dm), slice(w.experts.up, I, Dm),
                      slice(w.experts.down, Dm, I));
      for (int64_t d = 0; d < Dm; ++d) y[t * Dm + d] += weight * ye[d];
    }
  }
  return y;
}

// logprob [T]: log_softmax(lm_head(norm(x)) / temperature)[target], 0 where target = −1.
inline std::vector<double> Forward(const ModelConfig& c, const ModelWeights& w,
                                   const std::vector<int>& tokens, const std::vector<int>& cu,
                                   const std::vector<int>& targets, double temperature) {
  const int64_t T = tokens.size(), Dm = c.hidden_size, H = c.num_attention_heads;
  const int64_t D = c.head_dim, V = c.vocab_size;
  std::vector<int> pos(T);
  for (size_t b = 0; b + 1 < cu.size(); ++b)
    for (int t = cu[b]; t < cu[b + 1]; ++t) pos[t] = t - cu[b];
  Mat x(T * Dm);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < Dm; ++d) x[t * Dm + d] = w.embed.data<float>()[tokens[t] * Dm + d];
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const bool linear = c.layer_types[l] == LayerType::kLinear;
    const int64_t Hkv = c.kv_heads(l);
    Mat h = RmsNorm(x, Dm, lw.input_layernorm, c.rms_norm_eps);
    Mat qkv = Linear(h, lw.qkv);
    const int64_t C = (H + 2 * Hkv) * D;
    Mat q = NormRope(Columns(qkv, C, 0, H * D), D, lw.query_layernorm, pos, c);
    Mat k = NormRope(Columns(qkv, C, H * D, Hkv * D), D, lw.key_layernorm, pos, c);
    Mat v = Columns(qkv, C, (H + Hkv) * D, Hkv * D);
    Mat o =
        Attention(q, k, v, cu, H, Hkv, D, linear, linear ? c.LinearDecay(l) : std::vector<float>{});
    if (linear) {
      Mat gate = Linear(h, lw.g_proj);
      o = RmsNorm(o, H * D / c.group_norm_size, lw.g_norm, c.rms_norm_eps);
      for (size_t i = 0; i < o.size(); ++i) o[i] *= Sigmoid(gate[i]);
    }
    Mat attn = Linear(o, lw.dense);
    for (size_t i = 0; i < x.size(); ++i) x[i] += attn[i];
    h = RmsNorm(x, Dm, lw.post_attention_layernorm, c.rms_norm_eps);
    Mat ffn = c.IsMoeLayer(l) ? Moe(h, lw, c) : Swiglu(h, lw.mlp_gate, lw.mlp_up, lw.mlp_down);
    for (size_t i = 0; i < x.size(); ++i) x[i] += ffn[i];
  }
  Mat logits = Linear(RmsNorm(x, Dm, w.final_norm, c.rms_norm_eps), w.lm_head);
  std::vector<double> logprob(T, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    if (targets[t] < 0) continue;
    double m = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, logits[t * V + v] / temperature);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[t * V + v] / temperature - m);
    logprob[t] = logits[t * V + targets[t]] / temperature - m - std::log(sum);
  }
  return logprob;
}

}  // namespace tandem::model::reference

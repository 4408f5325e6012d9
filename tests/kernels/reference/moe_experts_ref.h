// fp64 reference for the routed experts (kernels/moe_experts/moe_experts.h), written for clarity:
// one (token, rank) pair at a time, y = W_down (silu(W_gate x) · W_up x), out_t = Σ_k w_k y_k, and
// the hand-derived backward of the same loop.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace tandem::testing {

struct ExpertsRefProblem {
  int64_t t = 0, k = 0, e = 0, dm = 0, i = 0;  // T, K, E, Dm, I
  std::vector<double> x;                       // [T, Dm]
  std::vector<int32_t> idx;                    // [T, K]
  std::vector<double> weight;                  // [T, K]
  std::vector<double> gate, up;                // [E, I, Dm]
  std::vector<double> down;                    // [E, Dm, I]
};

struct ExpertsRefForward {
  std::vector<double> out;       // [T, Dm]
  std::vector<double> gate, up;  // [T·K, I] projections before the activation
  std::vector<double> y;         // [T·K, Dm]
};

struct ExpertsRefGrads {
  std::vector<double> dx;              // [T, Dm]
  std::vector<double> dweight;         // [T, K]
  std::vector<double> dgate_w, dup_w;  // [E, I, Dm]
  std::vector<double> ddown_w;         // [E, Dm, I]
};

inline double SigmoidD(double v) { return 1.0 / (1.0 + std::exp(-v)); }

inline ExpertsRefForward MoeExpertsFwdRef(const ExpertsRefProblem& p) {
  const int64_t dm = p.dm, ni = p.i;
  ExpertsRefForward f{std::vector<double>(p.t * dm, 0.0), std::vector<double>(p.t * p.k * ni),
                      std::vector<double>(p.t * p.k * ni), std::vector<double>(p.t * p.k * dm)};
  for (int64_t t = 0; t < p.t; ++t) {
    for (int64_t k = 0; k < p.k; ++k) {
      const int64_t r = t * p.k + k, e = p.idx[r];
      std::vector<double> h(ni);
      for (int64_t j = 0; j < ni; ++j) {
        double g = 0, u = 0;
        for (int64_t c = 0; c < dm; ++c) {
          g += p.gate[(e * ni + j) * dm + c] * p.x[t * dm + c];
          u += p.up[(e * ni + j) * dm + c] * p.x[t * dm + c];
        }
        f.gate[r * ni + j] = g;
        f.up[r * ni + j] = u;
        h[j] = g * SigmoidD(g) * u;
      }
      for (int64_t c = 0; c < dm; ++c) {
        double y = 0;
        for (int64_t j = 0; j < ni; ++j) y += p.down[(e * dm + c) * ni + j] * h[j];
        f.y[r * dm + c] = y;
        f.out[t * dm + c] += p.weight[r] * y;
      }
    }
  }
  return f;
}

// Gradients of L = Σ dout · out with respect to x, the routing weights and the expert weights.
inline ExpertsRefGrads MoeExpertsBwdRef(const ExpertsRefProblem& p,
                                        const std::vector<double>& dout) {
  const int64_t dm = p.dm, ni = p.i;
  const ExpertsRefForward f = MoeExpertsFwdRef(p);
  ExpertsRefGrads gr{std::vector<double>(p.t * dm, 0.0), std::vector<double>(p.t * p.k, 0.0),
                     std::vector<double>(p.gate.size(), 0.0), std::vector<double>(p.up.size(), 0.0),
                     std::vector<double>(p.down.size(), 0.0)};
  for (int64_t t = 0; t < p.t; ++t) {
    for (int64_t k = 0; k < p.k; ++k) {
      const int64_t r = t * p.k + k, e = p.idx[r];
      std::vector<double> dy(dm), dh(ni, 0.0);
      for (int64_t c = 0; c < dm; ++c) {
        dy[c] = p.weight[r] * dout[t * dm + c];  // out = Σ w y
        gr.dweight[r] += dout[t * dm + c] * f.y[r * dm + c];
      }
      for (int64_t j = 0; j < ni; ++j) {
        const double g = f.gate[r * ni + j], u = f.up[r * ni + j], s = SigmoidD(g);
        for (int64_t c = 0; c < dm; ++c) {  // y = W_down h
          dh[j] += p.down[(e * dm + c) * ni + j] * dy[c];
          gr.ddown_w[(e * dm + c) * ni + j] += dy[c] * g * s * u;
        }
        const double dg = dh[j] * u * s * (1 + g * (1 - s));  // h = g σ(g) u
        const double du = dh[j] * g * s;
        for (int64_t c = 0; c < dm; ++c) {  // g = W_gate x, u = W_up x
          gr.dgate_w[(e * ni + j) * dm + c] += dg * p.x[t * dm + c];
          gr.dup_w[(e * ni + j) * dm + c] += du * p.x[t * dm + c];
          gr.dx[t * dm + c] +=
              dg * p.gate[(e * ni + j) * dm + c] + du * p.up[(e * ni + j) * dm + c];
        }
      }
    }
  }
  return gr;
}

}  // namespace tandem::testing

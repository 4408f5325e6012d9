// fp64 reference SwiGLU, h = silu(g) · u with silu(g) = g · sigmoid(g), and its gradient.
#pragma once

#include <cmath>
#include <vector>

namespace tandem::reference {

inline std::vector<double> SwigluFwd(const std::vector<double>& g, const std::vector<double>& u) {
  std::vector<double> h(g.size());
  for (size_t i = 0; i < g.size(); ++i) h[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  return h;
}

struct SwigluGrads {
  std::vector<double> dgate, dup;
};

// silu'(g) = s + g · s · (1 − s) with s = sigmoid(g).
inline SwigluGrads SwigluBwd(const std::vector<double>& g, const std::vector<double>& u,
                             const std::vector<double>& dh) {
  SwigluGrads out{std::vector<double>(g.size()), std::vector<double>(g.size())};
  for (size_t i = 0; i < g.size(); ++i) {
    double s = 1.0 / (1.0 + std::exp(-g[i]));
    out.dup[i] = dh[i] * g[i] * s;
    out.dgate[i] = dh[i] * u[i] * (s + g[i] * s * (1 - s));
  }
  return out;
}

}  // namespace tandem::reference

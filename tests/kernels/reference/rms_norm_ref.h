// fp64 reference RMSNorm, forward and backward, written for clarity: the oracle the CPU kernel
// and its finite-difference check are compared against. Layout: x, y [T, D] row-major, w [D].
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace tandem::reference {

// rstd = 1 / sqrt(mean(x²) + eps) of one row of n values.
inline double RmsRstd(const double* x, int64_t n, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  return 1.0 / std::sqrt(ss / n + eps);
}

struct RmsNormOut {
  std::vector<double> y;     // [T, D]
  std::vector<double> rstd;  // [T]
};

inline RmsNormOut RmsNormFwd(const std::vector<double>& x, const std::vector<double>& w, int64_t t,
                             int64_t d, double eps) {
  RmsNormOut out{std::vector<double>(t * d), std::vector<double>(t)};
  for (int64_t r = 0; r < t; ++r) {
    double rstd = RmsRstd(&x[r * d], d, eps);
    out.rstd[r] = rstd;
    for (int64_t i = 0; i < d; ++i) out.y[r * d + i] = x[r * d + i] * rstd * w[i];
  }
  return out;
}

// Backward through u = x · rstd(x) for one row, given dn = ∂L/∂u:
//   ∂L/∂x_j = rstd · dn_j − x_j · rstd³ / n · Σ_i dn_i x_i.
inline void RmsRowBwd(const double* x, const double* dn, int64_t n, double eps, double* dx) {
  double rstd = RmsRstd(x, n, eps);
  double dot = 0;
  for (int64_t i = 0; i < n; ++i) dot += dn[i] * x[i];
  for (int64_t j = 0; j < n; ++j) dx[j] = rstd * dn[j] - x[j] * rstd * rstd * rstd / n * dot;
}

struct RmsNormGrads {
  std::vector<double> dx;  // [T, D]
  std::vector<double> dw;  // [D]
};

inline RmsNormGrads RmsNormBwd(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& dy, int64_t t, int64_t d, double eps) {
  RmsNormGrads g{std::vector<double>(t * d), std::vector<double>(d, 0.0)};
  std::vector<double> dn(d);
  for (int64_t r = 0; r < t; ++r) {
    double rstd = RmsRstd(&x[r * d], d, eps);
    for (int64_t i = 0; i < d; ++i) {
      dn[i] = dy[r * d + i] * w[i];
      g.dw[i] += dy[r * d + i] * x[r * d + i] * rstd;
    }
    RmsRowBwd(&x[r * d], dn.data(), d, eps, &g.dx[r * d]);
  }
  return g;
}

}  // namespace tandem::reference

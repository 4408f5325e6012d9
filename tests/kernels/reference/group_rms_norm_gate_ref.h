// fp64 reference of grouped RMSNorm with a sigmoid output gate, forward and backward:
//   y = x · rstd_group · w · sigmoid(gate), x, gate, y [T, Ch], w [Ch], `groups` contiguous groups.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "tests/kernels/reference/rms_norm_ref.h"

namespace tandem::reference {

inline double Sigmoid(double g) { return 1.0 / (1.0 + std::exp(-g)); }

struct GroupNormOut {
  std::vector<double> y;     // [T, Ch]
  std::vector<double> rstd;  // [T, groups]
};

inline GroupNormOut GroupRmsNormGateFwd(const std::vector<double>& x,
                                        const std::vector<double>& gate,
                                        const std::vector<double>& w, int64_t t, int64_t ch,
                                        int64_t groups, double eps) {
  const int64_t n = ch / groups;
  GroupNormOut out{std::vector<double>(t * ch), std::vector<double>(t * groups)};
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = r * ch + g * n;
      double rstd = RmsRstd(&x[base], n, eps);
      out.rstd[r * groups + g] = rstd;
      for (int64_t i = 0; i < n; ++i) {
        out.y[base + i] = x[base + i] * rstd * w[g * n + i] * Sigmoid(gate[base + i]);
      }
    }
  }
  return out;
}

struct GroupNormGrads {
  std::vector<double> dx, dgate;  // [T, Ch]
  std::vector<double> dw;         // [Ch]
};

inline GroupNormGrads GroupRmsNormGateBwd(const std::vector<double>& x,
                                          const std::vector<double>& gate,
                                          const std::vector<double>& w,
                                          const std::vector<double>& dy, int64_t t, int64_t ch,
                                          int64_t groups, double eps) {
  const int64_t n = ch / groups;
  GroupNormGrads out{std::vector<double>(t * ch), std::vector<double>(t * ch),
                     std::vector<double>(ch, 0.0)};
  std::vector<double> dn(n);
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = r * ch + g * n;
      double rstd = RmsRstd(&x[base], n, eps);
      for (int64_t i = 0; i < n; ++i) {
        double s = Sigmoid(gate[base + i]), u = x[base + i] * rstd, wi = w[g * n + i];
        out.dgate[base + i] = dy[base + i] * u * wi * s * (1 - s);  // sigmoid' = s(1 − s)
        out.dw[g * n + i] += dy[base + i] * s * u;
        dn[i] = dy[base + i] * s * wi;
      }
      RmsRowBwd(&x[base], dn.data(), n, eps, &out.dx[base]);
    }
  }
  return out;
}

}  // namespace tandem::reference

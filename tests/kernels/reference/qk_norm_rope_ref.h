// fp64 reference of per-head RMSNorm followed by partial NeoX ("rotate half") RoPE, forward and
// backward. x, y [T, H, D] row-major, w [D], positions [T]; pairs (i, i + R/2) for i < R/2.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "tests/kernels/reference/rms_norm_ref.h"

namespace tandem::reference {

struct QkNormRopeShape {
  int64_t t, h, d, rotary_dim;
  double theta, eps;
};

// Rotation angle of pair i at position pos: pos · theta^(−2i/R).
inline double RopeAngle(int32_t pos, int64_t i, const QkNormRopeShape& s) {
  return pos * std::pow(s.theta, -2.0 * i / s.rotary_dim);
}

inline std::vector<double> QkNormRopeFwd(const std::vector<double>& x, const std::vector<double>& w,
                                         const std::vector<int32_t>& pos,
                                         const QkNormRopeShape& s) {
  std::vector<double> y(x.size()), n(s.d);
  const int64_t half = s.rotary_dim / 2;
  for (int64_t row = 0; row < s.t * s.h; ++row) {
    const double* xr = &x[row * s.d];
    double rstd = RmsRstd(xr, s.d, s.eps);
    for (int64_t i = 0; i < s.d; ++i) n[i] = xr[i] * rstd * w[i];
    double* yr = &y[row * s.d];
    for (int64_t i = 0; i < s.d; ++i) yr[i] = n[i];
    for (int64_t i = 0; i < half; ++i) {
      double a = RopeAngle(pos[row / s.h], i, s);
      yr[i] = n[i] * std::cos(a) - n[i + half] * std::sin(a);
      yr[i + half] = n[i + half] * std::cos(a) + n[i] * std::sin(a);
    }
  }
  return y;
}

struct QkNormRopeGrads {
  std::vector<double> dx;  // [T, H, D]
  std::vector<double> dw;  // [D]
};

// Backward: g = Rᵀ dy (rotate by −angle), then through n = (x·rstd)·w.
inline QkNormRopeGrads QkNormRopeBwd(const std::vector<double>& x, const std::vector<double>& w,
                                     const std::vector<int32_t>& pos, const std::vector<double>& dy,
                                     const QkNormRopeShape& s) {
  QkNormRopeGrads out{std::vector<double>(x.size()), std::vector<double>(s.d, 0.0)};
  std::vector<double> g(s.d), dn(s.d);
  const int64_t half = s.rotary_dim / 2;
  for (int64_t row = 0; row < s.t * s.h; ++row) {
    const double* xr = &x[row * s.d];
    const double* dyr = &dy[row * s.d];
    for (int64_t i = 0; i < s.d; ++i) g[i] = dyr[i];
    for (int64_t i = 0; i < half; ++i) {
      double a = RopeAngle(pos[row / s.h], i, s);
      g[i] = dyr[i] * std::cos(a) + dyr[i + half] * std::sin(a);
      g[i + half] = dyr[i + half] * std::cos(a) - dyr[i] * std::sin(a);
    }
    double rstd = RmsRstd(xr, s.d, s.eps);
    for (int64_t i = 0; i < s.d; ++i) {
      out.dw[i] += g[i] * xr[i] * rstd;
      dn[i] = g[i] * w[i];
    }
    RmsRowBwd(xr, dn.data(), s.d, s.eps, &out.dx[row * s.d]);
  }
  return out;
}

}  // namespace tandem::reference

// CPU RMSNorm (plain and fused with the residual add) and its backward. Rows are independent and
// each row is reduced by one thread in a fixed order, so a row's output does not depend on the
// batch or the thread count; weight gradients are split over columns, rows summed ascending.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/rms_norm/rms_norm.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/rms_norm/rms_norm_cuda.h"
#endif

namespace tandem::kernels {
namespace cpu {

float RmsRstd(const float* x, int64_t n, float eps) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  return 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
}

void RmsRowBwd(const float* x, float rstd, const float* dn, int64_t n, float* dx) {
  float dot = 0.0f;
  for (int64_t i = 0; i < n; ++i) dot += dn[i] * x[i];
  float c = dot * (rstd * rstd * rstd) / static_cast<float>(n);
  for (int64_t j = 0; j < n; ++j) dx[j] = dn[j] * rstd - x[j] * c;
}

}  // namespace cpu

namespace {

// y = (x · rstd) · w for one row; the single forward routine behind RmsNormFwd and AddRmsNormFwd.
float NormRow(const float* x, const float* w, int64_t d, float eps, float* y) {
  float rstd = cpu::RmsRstd(x, d, eps);
  for (int64_t i = 0; i < d; ++i) y[i] = (x[i] * rstd) * w[i];
  return rstd;
}

absl::Status CheckEps(float eps) {
  TANDEM_CHECK_ARG(eps >= 0.0f && std::isfinite(eps), "eps: expected a finite value >= 0, got ",
                   eps);
  return absl::OkStatus();
}

absl::Status CheckFwd(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                      const Tensor& rstd) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(x, "x", DType::kF32, {-1, -1}));
  const int64_t t = x.dim(0), d = x.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w, "w", DType::kF32, {d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(y, "y", DType::kF32, {t, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t}));
  return CheckEps(eps);
}

}  // namespace

absl::Status RmsNormFwd(const Context& ctx, const Tensor& x, const Tensor& w, float eps, Tensor& y,
                        Tensor& rstd) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::RmsNormFwd(ctx, x, w, eps, y, rstd));
  TANDEM_RETURN_IF_ERROR(CheckFwd(x, w, eps, y, rstd));
  const int64_t d = x.dim(1);
  const float* xp = x.data<float>();  // [T, D]
  const float* wp = w.data<float>();  // [D]
  float* yp = y.data<float>();        // [T, D]
  float* rp = rstd.data<float>();     // [T]
  ctx.ParallelFor(x.dim(0), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) rp[t] = NormRow(xp + t * d, wp, d, eps, yp + t * d);
  });
  return absl::OkStatus();
}

absl::Status AddRmsNormFwd(const Context& ctx, const Tensor& x, const Tensor& delta,
                           const Tensor& w, float eps, Tensor& sum, Tensor& y, Tensor& rstd) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::AddRmsNormFwd(ctx, x, delta, w, eps, sum, y, rstd));
  TANDEM_RETURN_IF_ERROR(CheckFwd(x, w, eps, y, rstd));
  const int64_t t = x.dim(0), d = x.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(delta, "delta", DType::kF32, {t, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(sum, "sum", DType::kF32, {t, d}));
  const float* xp = x.data<float>();      // [T, D]
  const float* dp = delta.data<float>();  // [T, D]
  const float* wp = w.data<float>();      // [D]
  float* sp = sum.data<float>();          // [T, D], may alias x
  float* yp = y.data<float>();            // [T, D]
  float* rp = rstd.data<float>();         // [T]
  ctx.ParallelFor(t, [&](int64_t t0, int64_t t1) {
    for (int64_t r = t0; r < t1; ++r) {
      float* s = sp + r * d;
      for (int64_t i = 0; i < d; ++i) s[i] = xp[r * d + i] + dp[r * d + i];
      rp[r] = NormRow(s, wp, d, eps, yp + r * d);
    }
  });
  return absl::OkStatus();
}

absl::Status RmsNormBwd(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dy, Tensor& dx, Tensor& dw) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::RmsNormBwd(ctx, x, w, rstd, dy, dx, dw));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(x, "x", DType::kF32, {-1, -1}));
  const int64_t t = x.dim(0), d = x.dim(1);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w, "w", DType::kF32, {d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dy, "dy", DType::kF32, {t, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dx, "dx", DType::kF32, {t, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dw, "dw", DType::kF32, {d}));
  const float* xp = x.data<float>();     // [T, D]
  const float* wp = w.data<float>();     // [D]
  const float* rp = rstd.data<float>();  // [T]
  const float* gp = dy.data<float>();    // [T, D]
  float* dxp = dx.data<float>();         // [T, D]
  float* dwp = dw.data<float>();         // [D]
  ctx.ParallelFor(t, [&](int64_t t0, int64_t t1) {
    for (int64_t r = t0; r < t1; ++r) {
      float* g = dxp + r * d;  // holds ∂L/∂(x·rstd) = dy · w, then dx in place
      for (int64_t i = 0; i < d; ++i) g[i] = gp[r * d + i] * wp[i];
      cpu::RmsRowBwd(xp + r * d, rp[r], g, d, g);
    }
  });
  // dw_c += Σ_t dy[t, c] · (x[t, c] · rstd[t]): each thread owns columns, rows go ascending.
  ctx.ParallelFor(
      d,
      [&](int64_t c0, int64_t c1) {
        for (int64_t r = 0; r < t; ++r) {
          for (int64_t c = c0; c < c1; ++c) dwp[c] += gp[r * d + c] * (xp[r * d + c] * rp[r]);
        }
      },
      16);
  return absl::OkStatus();
}

}  // namespace tandem::kernels

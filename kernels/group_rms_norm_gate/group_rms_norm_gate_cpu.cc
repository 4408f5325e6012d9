// CPU grouped RMSNorm + sigmoid gate (the linear-attention output path) and its backward. Each
// group of a row is normalised by the shared RMS routine (kernels/rms_norm), one row per thread
// at a time, so outputs do not depend on the batch or the thread count; dw is split over columns
// with rows summed ascending.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/group_rms_norm_gate/group_rms_norm_gate.h"
#include "kernels/rms_norm/rms_norm.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/group_rms_norm_gate/group_rms_norm_gate_cuda.h"
#endif

namespace tandem::kernels {
namespace {

inline float Sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }

absl::Status CheckArgs(const GroupRmsNormGateParams& p, const Tensor& x, const Tensor& gate,
                       const Tensor& w, const Tensor& rstd) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(x, "x", DType::kF32, {-1, -1}));
  const int64_t t = x.dim(0), ch = x.dim(1);
  TANDEM_CHECK_ARG(p.groups >= 1 && ch % p.groups == 0, "groups: expected a divisor of the ", ch,
                   " channels, got ", p.groups);
  TANDEM_CHECK_ARG(p.eps >= 0 && std::isfinite(p.eps), "eps: expected >= 0, got ", p.eps);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(gate, "gate", DType::kF32, {t, ch}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w, "w", DType::kF32, {ch}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t, p.groups}));
  return absl::OkStatus();
}

}  // namespace

absl::Status GroupRmsNormGateFwd(const Context& ctx, const GroupRmsNormGateParams& p,
                                 const Tensor& x, const Tensor& gate, const Tensor& w, Tensor& y,
                                 Tensor& rstd) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::GroupRmsNormGateFwd(ctx, p, x, gate, w, y, rstd));
  TANDEM_RETURN_IF_ERROR(CheckArgs(p, x, gate, w, rstd));
  const int64_t ch = x.dim(1), n = ch / p.groups;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(y, "y", DType::kF32, {x.dim(0), ch}));
  const float* xp = x.data<float>();     // [T, Ch]
  const float* gp = gate.data<float>();  // [T, Ch]
  const float* wp = w.data<float>();     // [Ch]
  float* yp = y.data<float>();           // [T, Ch]
  float* rp = rstd.data<float>();        // [T, groups]
  ctx.ParallelFor(x.dim(0) * p.groups, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {  // g = t · groups + group: one contiguous slice of n
      const float* xs = xp + g * n;
      const float rs = cpu::RmsRstd(xs, n, p.eps);
      rp[g] = rs;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t c = (g % p.groups) * n + i;
        yp[g * n + i] = ((xs[i] * rs) * wp[c]) * Sigmoid(gp[g * n + i]);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status GroupRmsNormGateBwd(const Context& ctx, const GroupRmsNormGateParams& p,
                                 const Tensor& x, const Tensor& gate, const Tensor& w,
                                 const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgate,
                                 Tensor& dw) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::GroupRmsNormGateBwd(ctx, p, x, gate, w, rstd, dy, dx, dgate, dw));
  TANDEM_RETURN_IF_ERROR(CheckArgs(p, x, gate, w, rstd));
  const int64_t t = x.dim(0), ch = x.dim(1), n = ch / p.groups;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dy, "dy", DType::kF32, {t, ch}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dx, "dx", DType::kF32, {t, ch}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dgate, "dgate", DType::kF32, {t, ch}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dw, "dw", DType::kF32, {ch}));
  const float* xp = x.data<float>();     // [T, Ch]
  const float* gp = gate.data<float>();  // [T, Ch]
  const float* wp = w.data<float>();     // [Ch]
  const float* rp = rstd.data<float>();  // [T, groups]
  const float* dyp = dy.data<float>();   // [T, Ch]
  float* dxp = dx.data<float>();         // [T, Ch]
  float* dgp = dgate.data<float>();      // [T, Ch]
  float* dwp = dw.data<float>();         // [Ch]
  // With u = x·rstd, b = u·w, s = sigmoid(gate), y = b·s:
  //   dgate = dy·b·s(1−s);  ∂L/∂u = (dy·s)·w;  dw += (dy·s)·u.
  ctx.ParallelFor(t * p.groups, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const float rs = rp[g];
      float* dn = dxp + g * n;  // ∂L/∂u, then dx in place
      for (int64_t i = 0; i < n; ++i) {
        const int64_t e = g * n + i, c = (g % p.groups) * n + i;
        const float s = Sigmoid(gp[e]);
        dgp[e] = dyp[e] * ((xp[e] * rs) * wp[c]) * (s * (1.0f - s));
        dn[i] = (dyp[e] * s) * wp[c];
      }
      cpu::RmsRowBwd(xp + g * n, rs, dn, n, dn);
    }
  });
  ctx.ParallelFor(
      ch,
      [&](int64_t c0, int64_t c1) {
        for (int64_t r = 0; r < t; ++r) {
          for (int64_t c = c0; c < c1; ++c) {
            const int64_t e = r * ch + c;
            dwp[c] += (dyp[e] * Sigmoid(gp[e])) * (xp[e] * rp[r * p.groups + c / n]);
          }
        }
      },
      16);
  return absl::OkStatus();
}

}  // namespace tandem::kernels

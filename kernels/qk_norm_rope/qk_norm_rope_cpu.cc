// CPU per-head RMSNorm + partial NeoX RoPE and its backward. The rotation factors are tabulated
// once per token (they depend on the position only); each (t, h) head row is then normalised by
// the shared RMS routine and rotated, one row per thread at a time, so a head's bits do not
// depend on the batch or the thread count. dw is split over columns, rows summed ascending.
// The pair products are plain fp32 multiplies and one add: the build is ISO C++ (no GNU
// extensions), under which GCC does not contract them into fused multiply-adds.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/qk_norm_rope/qk_norm_rope.h"
#include "kernels/rms_norm/rms_norm.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/qk_norm_rope/qk_norm_rope_cuda.h"
#endif

namespace tandem::kernels {
namespace cpu {

void RopeCosSin(int64_t pos, int64_t rotary_dim, double theta, float* cos, float* sin) {
  for (int64_t i = 0; i < rotary_dim / 2; ++i) {
    double inv_freq = std::pow(theta, -(2.0 * static_cast<double>(i)) / rotary_dim);
    double angle = static_cast<double>(pos) * inv_freq;
    cos[i] = static_cast<float>(std::cos(angle));
    sin[i] = static_cast<float>(std::sin(angle));
  }
}

}  // namespace cpu

namespace {

// cos/sin per token: table[t] holds cos[0..R/2) then sin[0..R/2).
std::vector<float> RopeTable(const Context& ctx, const Tensor& positions, int64_t r, double theta) {
  const int64_t t = positions.dim(0);
  std::vector<float> table(t * r);  // [T, 2, R/2]
  const int32_t* pos = positions.data<int32_t>();
  ctx.ParallelFor(t, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0; i < t1; ++i) {
      cpu::RopeCosSin(pos[i], r, theta, table.data() + i * r, table.data() + i * r + r / 2);
    }
  });
  return table;
}

// ∂L/∂n_c for one head row: RoPE's transpose (a rotation by −angle) applied to dy at column c.
inline float RopeGrad(const float* dy, int64_t c, int64_t r, const float* cs) {
  const int64_t half = r / 2;
  if (c >= r) return dy[c];
  if (c < half) return dy[c] * cs[c] + dy[c + half] * cs[half + c];
  const int64_t i = c - half;
  return dy[c] * cs[i] - dy[i] * cs[half + i];
}

absl::Status CheckArgs(const QkNormRopeParams& p, const Tensor& x, const Tensor& w,
                       const Tensor& positions, const Tensor& rstd) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(x, "x", DType::kF32, {-1, -1, -1}));
  const int64_t t = x.dim(0), h = x.dim(1), d = x.dim(2);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w, "w", DType::kF32, {d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(positions, "positions", DType::kI32, {t}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t, h}));
  TANDEM_CHECK_ARG(p.rotary_dim >= 0 && p.rotary_dim <= d && p.rotary_dim % 2 == 0,
                   "rotary_dim: expected an even value in [0, ", d, "], got ", p.rotary_dim);
  TANDEM_CHECK_ARG(p.theta > 0 && std::isfinite(p.theta), "theta: expected > 0, got ", p.theta);
  TANDEM_CHECK_ARG(p.eps >= 0 && std::isfinite(p.eps), "eps: expected >= 0, got ", p.eps);
  const int32_t* pos = positions.data<int32_t>();
  for (int64_t i = 0; i < t; ++i) {
    TANDEM_CHECK_ARG(pos[i] >= 0, "positions: positions[", i, "] = ", pos[i], " is negative");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status QkNormRopeFwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, Tensor& y, Tensor& rstd) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::QkNormRopeFwd(ctx, p, x, w, positions, y, rstd));
  TANDEM_RETURN_IF_ERROR(CheckArgs(p, x, w, positions, rstd));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(y, "y", DType::kF32, {x.dim(0), x.dim(1), x.dim(2)}));
  TANDEM_CHECK_ARG(y.numel() == 0 || y.raw_data() != x.raw_data(), "y: may not alias x");
  const int64_t h = x.dim(1), d = x.dim(2), r = p.rotary_dim, half = r / 2;
  const std::vector<float> table = RopeTable(ctx, positions, r, p.theta);  // [T, 2, R/2]
  const float* xp = x.data<float>();                                       // [T, H, D]
  const float* wp = w.data<float>();                                       // [D]
  float* yp = y.data<float>();                                             // [T, H, D]
  float* rp = rstd.data<float>();                                          // [T, H]
  ctx.ParallelFor(x.dim(0) * h, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const float* xr = xp + row * d;
      float* yr = yp + row * d;
      const float* cs = table.data() + (row / h) * r;
      const float rs = cpu::RmsRstd(xr, d, p.eps);
      rp[row] = rs;
      for (int64_t i = 0; i < half; ++i) {
        const float a = (xr[i] * rs) * wp[i];                // n_i
        const float b = (xr[i + half] * rs) * wp[i + half];  // n_{i+R/2}
        yr[i] = a * cs[i] - b * cs[half + i];
        yr[i + half] = b * cs[i] + a * cs[half + i];
      }
      for (int64_t i = r; i < d; ++i) yr[i] = (xr[i] * rs) * wp[i];
    }
  });
  return absl::OkStatus();
}

absl::Status QkNormRopeBwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, const Tensor& rstd,
                           const Tensor& dy, Tensor& dx, Tensor& dw) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::QkNormRopeBwd(ctx, p, x, w, positions, rstd, dy, dx, dw));
  TANDEM_RETURN_IF_ERROR(CheckArgs(p, x, w, positions, rstd));
  const int64_t t = x.dim(0), h = x.dim(1), d = x.dim(2), r = p.rotary_dim;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dy, "dy", DType::kF32, {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dx, "dx", DType::kF32, {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dw, "dw", DType::kF32, {d}));
  const std::vector<float> table = RopeTable(ctx, positions, r, p.theta);  // [T, 2, R/2]
  const float* xp = x.data<float>();                                       // [T, H, D]
  const float* wp = w.data<float>();                                       // [D]
  const float* rp = rstd.data<float>();                                    // [T, H]
  const float* gp = dy.data<float>();                                      // [T, H, D]
  float* dxp = dx.data<float>();                                           // [T, H, D]
  float* dwp = dw.data<float>();                                           // [D]
  ctx.ParallelFor(t * h, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const float* cs = table.data() + (row / h) * r;
      float* dn = dxp + row * d;  // ∂L/∂(x·rstd) = RopeGrad · w, then dx in place
      for (int64_t c = 0; c < d; ++c) dn[c] = RopeGrad(gp + row * d, c, r, cs) * wp[c];
      cpu::RmsRowBwd(xp + row * d, rp[row], dn, d, dn);
    }
  });
  // dw_c += Σ_(t,h) RopeGrad_c · (x_c · rstd), each thread owning columns, rows ascending.
  ctx.ParallelFor(
      d,
      [&](int64_t c0, int64_t c1) {
        for (int64_t row = 0; row < t * h; ++row) {
          const float* cs = table.data() + (row / h) * r;
          for (int64_t c = c0; c < c1; ++c) {
            dwp[c] += RopeGrad(gp + row * d, c, r, cs) * (xp[row * d + c] * rp[row]);
          }
        }
      },
      16);
  return absl::OkStatus();
}

}  // namespace tandem::kernels

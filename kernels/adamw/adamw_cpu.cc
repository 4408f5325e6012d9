// CPU AdamW: one pass per element, threads over disjoint element ranges.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/adamw/adamw.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/adamw/adamw_cuda.h"
#endif

namespace tandem::kernels {
namespace {
absl::Status CheckLike(const Tensor& ref, const Tensor& t, const char* name) {
  if (t.dtype() != DType::kF32 || t.shape() != ref.shape() || t.device() != Device::kCPU) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected f32 ", ShapeString(ref.shape()), " on cpu, got ",
                     DTypeName(t.dtype()), " ", ShapeString(t.shape())));
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status AdamWStep(const Context& ctx, const AdamWParams& p, Tensor& param, const Tensor& grad,
                       Tensor& m, Tensor& v) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::AdamWStep(ctx, p, param, grad, m, v));
  TANDEM_RETURN_IF_ERROR(CheckLike(param, param, "param"));
  TANDEM_RETURN_IF_ERROR(CheckLike(param, grad, "grad"));
  TANDEM_RETURN_IF_ERROR(CheckLike(param, m, "m"));
  TANDEM_RETURN_IF_ERROR(CheckLike(param, v, "v"));
  TANDEM_CHECK_ARG(p.step >= 1, "step: expected >= 1, got ", p.step);
  TANDEM_CHECK_ARG(p.beta1 >= 0 && p.beta1 < 1 && p.beta2 >= 0 && p.beta2 < 1,
                   "beta1, beta2: expected in [0, 1)");
  const float bc1 = 1.0f - static_cast<float>(std::pow(static_cast<double>(p.beta1), p.step));
  const float bc2 = 1.0f - static_cast<float>(std::pow(static_cast<double>(p.beta2), p.step));
  float* w = param.data<float>();
  const float* g = grad.data<float>();
  float* mm = m.data<float>();
  float* vv = v.data<float>();
  ctx.ParallelFor(
      param.numel(),
      [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          mm[i] = p.beta1 * mm[i] + (1.0f - p.beta1) * g[i];
          vv[i] = p.beta2 * vv[i] + (1.0f - p.beta2) * (g[i] * g[i]);
          float m_hat = mm[i] / bc1;
          float v_hat = vv[i] / bc2;
          w[i] = w[i] - p.lr * (m_hat / (std::sqrt(v_hat) + p.eps) + p.weight_decay * w[i]);
        }
      },
      /*min_chunk=*/4096);
  return absl::OkStatus();
}

double SumOfSquares(const Tensor& t) {
  const float* x = t.data<float>();
  double s = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

absl::StatusOr<double> SumOfSquaresOnDevice(const Context& ctx, const Tensor& t) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::SumOfSquares(ctx, t));
  if (t.dtype() != DType::kF32 || t.device() != Device::kCPU) {
    return absl::InvalidArgumentError(absl::StrCat(
        "t: expected f32 on cpu, got ", DTypeName(t.dtype()), " on ", DeviceName(t.device())));
  }
  return SumOfSquares(t);
}

}  // namespace tandem::kernels

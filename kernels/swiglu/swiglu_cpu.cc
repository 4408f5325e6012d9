// CPU SwiGLU: elementwise, so trivially batch-invariant.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "kernels/swiglu/swiglu.h"

namespace tandem::kernels {
namespace cpu {

void SwigluFwd(int64_t n, const float* gate, const float* up, float* h) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    float silu = g / (1.0f + std::exp(-g));
    h[i] = silu * up[i];
  }
}

void SwigluBwd(int64_t n, const float* gate, const float* up, const float* dh, float* dgate,
               float* dup) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    float sig = 1.0f / (1.0f + std::exp(-g));
    float silu = g * sig;
    dup[i] = dh[i] * silu;
    // d silu / dg = sig · (1 + g · (1 − sig))
    dgate[i] = dh[i] * up[i] * (sig * (1.0f + g * (1.0f - sig)));
  }
}

}  // namespace cpu

namespace {
absl::Status CheckSame(const Tensor& ref, const Tensor& t, const char* name) {
  if (t.shape() != ref.shape() || t.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected f32 ", ShapeString(ref.shape()),
                                                   ", got ", DTypeName(t.dtype()), " ",
                                                   ShapeString(t.shape())));
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status SwigluFwd(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& h) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(gate, "gate", DType::kF32, {-1, -1}));
  TANDEM_RETURN_IF_ERROR(CheckSame(gate, up, "up"));
  TANDEM_RETURN_IF_ERROR(CheckSame(gate, h, "h"));
  int64_t cols = gate.dim(1);
  ctx.ParallelFor(gate.dim(0), [&](int64_t r0, int64_t r1) {
    cpu::SwigluFwd((r1 - r0) * cols, gate.data<float>() + r0 * cols, up.data<float>() + r0 * cols,
                   h.data<float>() + r0 * cols);
  });
  return absl::OkStatus();
}

absl::Status SwigluBwd(const Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dh,
                       Tensor& dgate, Tensor& dup) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(gate, "gate", DType::kF32, {-1, -1}));
  TANDEM_RETURN_IF_ERROR(CheckSame(gate, up, "up"));
  TANDEM_RETURN_IF_ERROR(CheckSame(gate, dh, "dh"));
  TANDEM_RETURN_IF_ERROR(CheckSame(gate, dgate, "dgate"));
  TANDEM_RETURN_IF_ERROR(CheckSame(gate, dup, "dup"));
  int64_t cols = gate.dim(1);
  ctx.ParallelFor(gate.dim(0), [&](int64_t r0, int64_t r1) {
    int64_t off = r0 * cols;
    cpu::SwigluBwd((r1 - r0) * cols, gate.data<float>() + off, up.data<float>() + off,
                   dh.data<float>() + off, dgate.data<float>() + off, dup.data<float>() + off);
  });
  return absl::OkStatus();
}

}  // namespace tandem::kernels

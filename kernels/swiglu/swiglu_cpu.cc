// CPU SwiGLU: elementwise, so trivially batch- and thread-invariant. silu is evaluated with one
// expression, g / (1 + exp(−g)), in forward and backward alike, so the backward's silu(g) (and
// hence dup) carries exactly the forward's bits.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/swiglu/swiglu.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/swiglu/swiglu_cuda.h"
#endif

namespace tandem::kernels {
namespace cpu {

void SwigluFwd(int64_t n, const float* gate, const float* up, float* h) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float silu = g / (1.0f + std::exp(-g));
    h[i] = silu * up[i];
  }
}

void SwigluBwd(int64_t n, const float* gate, const float* up, const float* dh, float* dgate,
               float* dup) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float den = 1.0f + std::exp(-g);
    const float sig = 1.0f / den;
    const float silu = g / den;  // the forward's expression
    dup[i] = dh[i] * silu;
    // d silu / dg = sig · (1 + g · (1 − sig))
    dgate[i] = dh[i] * up[i] * (sig * (1.0f + g * (1.0f - sig)));
  }
}

}  // namespace cpu

namespace {
// gate [T, I] f32 on the CPU, and each other tensor the same.
absl::Status CheckAll(const Tensor& gate,
                      std::initializer_list<std::pair<const Tensor*, const char*>> rest) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(gate, "gate", DType::kF32, {-1, -1}));
  for (const auto& [t, name] : rest) {
    TANDEM_RETURN_IF_ERROR(ExpectTensor(*t, name, DType::kF32, {gate.dim(0), gate.dim(1)}));
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status SwigluFwd(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& h) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::SwigluFwd(ctx, gate, up, h));
  TANDEM_RETURN_IF_ERROR(CheckAll(gate, {{&up, "up"}, {&h, "h"}}));
  const int64_t cols = gate.dim(1);
  ctx.ParallelFor(gate.dim(0), [&](int64_t r0, int64_t r1) {
    const int64_t off = r0 * cols;
    cpu::SwigluFwd((r1 - r0) * cols, gate.data<float>() + off, up.data<float>() + off,
                   h.data<float>() + off);
  });
  return absl::OkStatus();
}

absl::Status SwigluBwd(const Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dh,
                       Tensor& dgate, Tensor& dup) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::SwigluBwd(ctx, gate, up, dh, dgate, dup));
  TANDEM_RETURN_IF_ERROR(
      CheckAll(gate, {{&up, "up"}, {&dh, "dh"}, {&dgate, "dgate"}, {&dup, "dup"}}));
  const int64_t cols = gate.dim(1);
  ctx.ParallelFor(gate.dim(0), [&](int64_t r0, int64_t r1) {
    const int64_t off = r0 * cols;
    cpu::SwigluBwd((r1 - r0) * cols, gate.data<float>() + off, up.data<float>() + off,
                   dh.data<float>() + off, dgate.data<float>() + off, dup.data<float>() + off);
  });
  return absl::OkStatus();
}

}  // namespace tandem::kernels

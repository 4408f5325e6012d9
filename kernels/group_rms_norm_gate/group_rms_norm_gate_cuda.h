// Grouped RMSNorm + sigmoid gate on the GPU: the semantics of kernels::GroupRmsNormGateFwd / Bwd
// (group_rms_norm_gate.h). Storage: x, gate, y, dy, dx, dgate f32 or bf16 (independently), w f32
// or bf16, rstd and dw f32, all on the GPU. Each (t, group) slice is one block of
// kGroupNormThreads threads: thread i sums elements i, i + kGroupNormThreads, ... ascending, then
// BlockSum's fixed tree, so a row's outputs are the same bits in any batch (not the CPU's order:
// GPU and CPU agree to rounding). sigmoid(g) = 1 / (1 + expf(−g)). dw walks rows in ascending
// order, one thread per column (no atomics).
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/group_rms_norm_gate/group_rms_norm_gate.h"

namespace tandem::kernels::cuda {

inline constexpr int kGroupNormThreads = 256;

// x, gate, y [T, Ch]; w [Ch]; rstd [T, groups].
absl::Status GroupRmsNormGateFwd(const Context& ctx, const GroupRmsNormGateParams& p,
                                 const Tensor& x, const Tensor& gate, const Tensor& w, Tensor& y,
                                 Tensor& rstd);

// dx, dgate [T, Ch] overwritten; dw [Ch] accumulated (+=).
absl::Status GroupRmsNormGateBwd(const Context& ctx, const GroupRmsNormGateParams& p,
                                 const Tensor& x, const Tensor& gate, const Tensor& w,
                                 const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgate,
                                 Tensor& dw);

}  // namespace tandem::kernels::cuda

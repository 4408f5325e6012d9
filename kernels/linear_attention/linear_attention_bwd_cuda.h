// Chunked linear attention backward on the GPU (linear_attention.h's LinearAttentionBwd: same
// shapes and formulas), from the chunk-start states the forward saved. Two launches: an in-order
// reverse scan per (sequence, head, state tile) that forms every chunk's state-gradient sum
// Σ_i (s·λ^{i+1}·q_i)ᵀ do_i on the fly and writes the state gradient at every chunk end, then
// every chunk's dq, dk, dv. The GEMMs run
// on bf16 tensor cores with fp32 accumulation (states and weighted scores are rounded to bf16 as
// MMA operands); no atomics, so results are deterministic and independent of the packing.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/linear_attention/linear_attention.h"

namespace tandem::kernels::cuda {

// q, k, v, d_o [T, H, D] bf16 or f32 on the GPU; decay [H] f32 on the HOST; cu_seqlens [B + 1]
// i32 on the host or the GPU (read on the host); chunk_states [NC, H, D, D] f32 or bf16 on the GPU
// (the forward's; bf16 gives the same bits, as the products round S_c to bf16 anyway); dq, dk, dv
// [T, H, D] f32 or bf16 on the GPU, overwritten; d_initial_state [B, H, D, D] f32 on the GPU,
// written when defined. D is 32, 64 or 128; every tensor's storage must be 16-byte aligned.
absl::Status LinearAttentionBwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& chunk_states,
                                const Tensor& d_o, Tensor& dq, Tensor& dk, Tensor& dv,
                                Tensor& d_initial_state);

// For benchmarks: LinearAttentionBwd running only the launches named in `phases`. The chunk
// gradients alone read an uninitialised state-gradient scratch (timing only: garbage results).
inline constexpr int kLinearAttentionBwdScan = 1, kLinearAttentionBwdChunkGrads = 2;
absl::Status LinearAttentionBwdPhases(const Context& ctx, const LinearAttentionParams& p,
                                      const Tensor& q, const Tensor& k, const Tensor& v,
                                      const Tensor& decay, const Tensor& cu_seqlens,
                                      const Tensor& chunk_states, const Tensor& d_o, Tensor& dq,
                                      Tensor& dk, Tensor& dv, Tensor& d_initial_state, int phases);

}  // namespace tandem::kernels::cuda

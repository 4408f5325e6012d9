// Chunked linear attention on the GPU: the forward over packed sequences and chunk-aligned decode
// of linear_attention.h (same shapes and contract rule 3), with fp32 state.
//
// bf16 q, k, v run on tensor cores (mma.sync m16n8k16, fp32 accumulate) in two launches: (1) the
// scan, per (sequence, head, 32x32 state tile), walks the chunks in order, four at a time — their
// boundary sums Σ_j k_jᵀ bf16(λ^{C−1−j}·v_j) by mma, then S ← λ^C·S + sum in fp32 chunk by
// chunk — and writes every chunk-start state as bf16 to scratch (and in fp32 to chunk_states when
// asked); (2) the output kernel, per (chunk, head), o = s·(λ^{i+1}·q·bf16(S) + Σ_j bf16(λ^{i−j}
// q·k_j)·v_j) from that state. Decode keeps the boundary state and the open chunk's k, v, runs one
// block per (sequence, head) with every read (state, open rows) in flight before the first wait,
// and calls the same warp routines
// (linear_attention_mma.cuh) for its one row, placed where the forward has it, and for the boundary
// when the chunk fills, so chunked prefill followed by decode returns the one-pass forward's bits.
// The three bf16 roundings (scaled v, decayed scores, S in q·S) are the only precision given up
// against the CPU; the GPU test derives its tolerance from them. f32 q, k, v take fp32 CUDA-core
// kernels (the CPU's arithmetic). The decay powers pow[n] = exp(−n·x_h) are computed on the host by
// LinearAttentionDecayPowers (the CPU's table) and uploaded.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/linear_attention/linear_attention.h"

namespace tandem::kernels::cuda {

// Head dimensions the CUDA kernels are built for.
inline bool LinearAttentionHeadDimSupported(int64_t d) { return d == 32 || d == 64 || d == 128; }

// q, k, v [T, H, D] bf16 or f32 on the GPU; decay [H] f32 on the HOST; cu_seqlens [B + 1] i32 on
// the host or the GPU (read on the host); initial_state [B, H, D, D] f32 on the GPU or undefined
// (zeros); o [T, H, D] f32 or bf16 on the GPU; chunk_states [NC, H, D, D] and boundary_state
// [B, H, D, D] f32 on the GPU, or undefined to skip (see linear_attention.h). With bf16 q, k, v,
// chunk_states may be bf16: the scan then writes its bf16 operand states there and no f32 copy.
absl::Status LinearAttentionFwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& initial_state, Tensor& o,
                                Tensor& chunk_states, Tensor& boundary_state);

// One decode step. q, k, v [B, H, D] bf16 or f32 on the GPU; decay [H] f32 on the HOST; state
// [B, H, D, D] f32, open_k, open_v [B, C, H, D] f32 (or bf16, 16-byte aligned, when q, k, v are
// bf16) and open_len [B] i32, all on the GPU (open_len is read and advanced there,
// 0 ≤ open_len < C, not checked); o [B, H, D] f32 or bf16 on the GPU.
absl::Status LinearAttentionDecode(const Context& ctx, const LinearAttentionParams& p,
                                   const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& decay, Tensor& state, Tensor& open_k,
                                   Tensor& open_v, Tensor& open_len, Tensor& o);

}  // namespace tandem::kernels::cuda

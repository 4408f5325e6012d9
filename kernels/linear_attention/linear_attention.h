// Linear attention with a constant per-head decay (Ring-linear "lightning" attention, MODEL.md §2):
//   o_t = s · Σ_{j≤t} λ^{t−j} (q_t·k_j) v_j,   λ = exp(−x_h),  state S [D_k, D_v] in fp32.
//
// Numerics (contract rule 3): chunk length C = kLinearAttentionChunk; chunks start at positions
// 0, C, 2C, ... of every sequence. For t = c0 + i in the chunk starting at c0, with S_c0 the state
// before the chunk:
//   inter  = λ^{i+1} · (q_t S_c0)
//   intra  = Σ_{j=0..i} λ^{i−j} · (q_t·k_{c0+j}) · v_{c0+j}       (j ascending)
//   o_t    = s · (inter + intra)
//   S_{c0+C} = λ^C · S_c0 + Σ_{j=0..C−1} λ^{C−1−j} · k_{c0+j}ᵀ v_{c0+j}   (j ascending)
// Each of the three pieces is one routine, called by the chunked forward and by decode alike;
// powers of λ come from LinearAttentionDecayPowers. Decode keeps S at the last chunk boundary and
// the open chunk's k, v, and advances S only when the chunk fills, so chunked prefill followed by
// decode reproduces the one-pass forward bitwise.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/contract.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

struct LinearAttentionParams {
  int64_t num_heads = 0;  // H (q, k and v all have H heads)
  int64_t head_dim = 0;   // D
  float scale = 0.0f;     // s, usually D^-1/2
};

// pow[n] = exp(−(n·x)) for n = 0..C, in fp32: the one table every path reads. pow has C + 1
// entries.
void LinearAttentionDecayPowers(float x, float* pow);

// Chunked forward over packed sequences.
// q, k, v, o [T, H, D]; decay [H] f32 holds x_h > 0 (λ_h = exp(−x_h)); cu_seqlens [B + 1] i32.
// initial_state [B, H, D, D] or an undefined Tensor (zeros): the state before each sequence's first
// token. Optional outputs (pass an undefined Tensor to skip):
//   chunk_states [NC, H, D, D]: the state at the start of every chunk, chunks numbered sequence by
//     sequence, NC = Σ_b ceil(T_b / C); needed by the backward pass. f32; on the GPU with bf16
//     q, k, v it may be bf16 (the states rounded to nearest even — all the GPU backward uses).
//   boundary_state [B, H, D, D]: the state at the last chunk boundary ≤ T_b (after every full
//     chunk of sequence b) — with the k, v of the trailing partial chunk, what decode continues
//     from.
absl::Status LinearAttentionFwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& initial_state, Tensor& o,
                                Tensor& chunk_states, Tensor& boundary_state);

// Backward from the saved chunk states (f32; on the GPU also the bf16 ones a bf16 forward saves,
// with the same result). dq, dk, dv [T, H, D] overwritten; d_initial_state [B, H, D, D] written
// when defined. Deterministic, thread-count independent.
absl::Status LinearAttentionBwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& chunk_states,
                                const Tensor& d_o, Tensor& dq, Tensor& dk, Tensor& dv,
                                Tensor& d_initial_state);

// One decode step for B sequences. q, k, v [B, H, D] are the new token's; state [B, H, D, D] is
// the boundary state S_c0; open_k, open_v [B, C, H, D] hold the open chunk's k, v; open_len [B] i32
// is how many of them are valid (0 ≤ open_len < C). The step writes k, v at open_len, computes
// o [B, H, D] with the forward's routines, increments open_len, and when it reaches C advances
// state to the next boundary and resets open_len to 0.
absl::Status LinearAttentionDecode(const Context& ctx, const LinearAttentionParams& p,
                                   const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& decay, Tensor& state, Tensor& open_k,
                                   Tensor& open_v, Tensor& open_len, Tensor& o);

}  // namespace tandem::kernels

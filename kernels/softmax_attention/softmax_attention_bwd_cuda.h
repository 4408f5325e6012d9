// Backward of the causal GQA softmax attention on the GPU (the CPU API SoftmaxAttentionBwd in
// softmax_attention.h, same shapes and semantics), FlashAttention-2 style on bf16 tensor cores.
//
// Numerics: P is recomputed from the forward's lse; the score, dP and gradient products run on
// tensor cores (mma.sync m16n8k16; wgmma in kWgmmaSplit) with bf16 operands and fp32 accumulation
// (f32 q, k, v, d_o are rounded to bf16 first; P and dS are rounded to bf16 before they multiply
// dO, Q and K). δ = rowsum(dO ∘ O) is a fixed fp32 reduction. Deterministic without atomics: each
// dq, dk, dv element is accumulated by one thread in a fixed order (dk, dv: the group's query heads
// ascending, then query tiles ascending; dq: key tiles ascending) and written once, so the bits
// depend neither on the grid nor on the other sequences packed with it.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/softmax_attention/softmax_attention.h"

namespace tandem::kernels::cuda {

// Head dimensions the CUDA backward is built for.
inline bool SoftmaxAttentionBwdHeadDimSupported(int64_t d) {
  return d == 32 || d == 64 || d == 128;
}

// The backward kernels. kMmaSync: FlashAttention-2 style mma.sync (every supported head dim).
// kWgmmaSplit: sm_90a wgmma, D = 128 only (where SoftmaxAttentionBwdWgmmaAvailable), dK/dV blocks
// (no dQ) and dQ blocks (recomputing S and dP) in one launch, no hand-off. Both are deterministic
// (dq: key tiles ascending; dk, dv: the group's heads ascending), but their tile sizes and
// product chains differ, so their bits do.
enum class SoftmaxAttentionBwdKernel { kDefault, kMmaSync, kWgmmaSplit };

// True when the wgmma backward (kWgmmaSplit) can run here: head_dim 128 and
// SoftmaxAttentionUsesWgmma(128).
bool SoftmaxAttentionBwdWgmmaAvailable(int64_t head_dim);

// The kernel SoftmaxAttentionBwd (kDefault) runs at this head dim: kWgmmaSplit where available
// (kMmaSync when TANDEM_ATTENTION_BWD_WGMMA=0; read once); otherwise kMmaSync.
SoftmaxAttentionBwdKernel SoftmaxAttentionBwdDefaultKernel(int64_t head_dim);

// True when SoftmaxAttentionBwdDefaultKernel(head_dim) is the wgmma kernel.
bool SoftmaxAttentionBwdUsesWgmma(int64_t head_dim);

// q [T, H, D], k, v [T, Hkv, D], o, d_o [T, H, D]: bf16 or f32 on the GPU (each its own dtype).
// lse [T, H] f32 on the GPU (from SoftmaxAttentionFwd). cu_seqlens [B + 1] i32 on the host or the
// GPU (read on the host). dq [T, H, D], dk, dv [T, Hkv, D]: f32 or bf16 on the GPU, overwritten.
// Ordered on ctx's stream (synchronous only when an operand needed a bf16 copy).
absl::Status SoftmaxAttentionBwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, const Tensor& o, const Tensor& lse,
                                 const Tensor& d_o, Tensor& dq, Tensor& dk, Tensor& dv);

// The same with the kernel chosen by the caller (tests and benchmarks compare them): kWgmmaSplit
// where it is not available is an InvalidArgument error.
absl::Status SoftmaxAttentionBwdWithKernel(SoftmaxAttentionBwdKernel kernel, const Context& ctx,
                                           const SoftmaxAttentionParams& p, const Tensor& q,
                                           const Tensor& k, const Tensor& v,
                                           const Tensor& cu_seqlens, const Tensor& o,
                                           const Tensor& lse, const Tensor& d_o, Tensor& dq,
                                           Tensor& dk, Tensor& dv);

}  // namespace tandem::kernels::cuda

// Causal GQA softmax attention on the GPU: packed forward and paged decode (the CPU API in
// softmax_attention.h, same shapes and the same contract rule 2).
//
// Numerics: a query row at position t is reduced over its keys in KV tiles of kAttentionKvTile
// with online softmax in fp32 by one warp routine, tiles grouped into splits of
// kAttentionSplitLength whose partials are merged in ascending order by one merge routine. The
// forward and decode kernels run those routines on the same values in the same order, so decode
// at position t returns the forward pass's row t bit for bit, for any batch, packing or block
// table. bf16 q/k/v (decode: q and both caches; data 16-byte aligned) run on tensor cores
// (mma.sync m16n8k16, fp32 accumulate, P rounded to bf16 for P·V as in FlashAttention: outputs
// within 2^-8·max|v| of exact); any f32 operand selects fp32 CUDA-core kernels (FMA chains). Both
// entry points choose by the same rule, so forward and decode must be given the same dtypes.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/softmax_attention/softmax_attention.h"

namespace tandem::kernels::cuda {

// Head dimensions the CUDA kernels are built for.
inline bool SoftmaxAttentionHeadDimSupported(int64_t d) { return d == 32 || d == 64 || d == 128; }

// q [T, H, D], k, v [T, Hkv, D]: bf16 or f32 on the GPU (each its own dtype). cu_seqlens [B + 1]
// i32 on the host or the GPU (read on the host). o [T, H, D] f32 or bf16 on the GPU; lse [T, H]
// f32 on the GPU, or an undefined Tensor to skip it.
absl::Status SoftmaxAttentionFwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, Tensor& o, Tensor& lse);

// The forward kernels for bf16 q/k/v. kMmaSync: the mma.sync kernel (every supported head dim).
// kWgmma: the sm_90a warp-specialised wgmma kernel, its two consumer warpgroups taking turns at
// the tensor cores (head dims 64 and 128, where SoftmaxAttentionFwdKernelAvailable). Both give
// the same bits (decode == forward holds for each). kDefault: what SoftmaxAttentionFwd runs
// (kWgmma where available, else kMmaSync; f32 operands: the CUDA-core kernel).
enum class SoftmaxAttentionFwdKernel { kDefault, kMmaSync, kWgmma };

// True when `kernel` can run here at this head dim (kDefault, kMmaSync: always; kWgmma:
// SoftmaxAttentionUsesWgmma(head_dim)).
bool SoftmaxAttentionFwdKernelAvailable(SoftmaxAttentionFwdKernel kernel, int64_t head_dim);

// SoftmaxAttentionFwd with the kernel chosen by the caller (tests and benchmarks compare them):
// any kernel but kDefault needs bf16 q, k and v, and must be available (else InvalidArgument).
absl::Status SoftmaxAttentionFwdWithKernel(SoftmaxAttentionFwdKernel kernel, const Context& ctx,
                                           const SoftmaxAttentionParams& p, const Tensor& q,
                                           const Tensor& k, const Tensor& v,
                                           const Tensor& cu_seqlens, Tensor& o, Tensor& lse);

// q [B, H, D] bf16 or f32; k_cache, v_cache [num_blocks, kAttentionKvTile, Hkv, D] bf16 or f32;
// block_tables [B, max_blocks] i32; seq_lens [B] i32 (1 ≤ seq_lens[b] ≤ max_blocks·tile, every
// listed block in range: not checked, they stay on the GPU); o [B, H, D] f32 or bf16. All on the
// GPU. Splits run in parallel blocks; their partials are merged in order by a second kernel.
absl::Status SoftmaxAttentionDecode(const Context& ctx, const SoftmaxAttentionParams& p,
                                    const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                    const Tensor& block_tables, const Tensor& seq_lens, Tensor& o);

// Chunked prefill over a paged cache: piece i is `tokens` consecutive new tokens, rows q_row.. of
// q, at positions start_position.., whose keys [0, position] (their own k, v already written
// there) sit in the blocks of row table_row of block_tables. Each row gets exactly the bits
// SoftmaxAttentionDecode gives it, but a block of 128 query rows reads each key tile once, where
// the decode reads a sequence's keys once per row. bf16 q and caches (16-byte aligned); q, o
// [T, H, D]; caches and block_tables [R, max_blocks] as for the decode, on the GPU; pieces on the
// host, their rows in [0, T) and their blocks within max_blocks (checked; the block ids
// themselves stay on the GPU and are not). Rows of o outside the pieces are left as they are.
struct SoftmaxPrefillPiece {
  int64_t q_row = 0, tokens = 0, start_position = 0, table_row = 0;
};
absl::Status SoftmaxAttentionPrefillPaged(const Context& ctx, const SoftmaxAttentionParams& p,
                                          const Tensor& q, const Tensor& k_cache,
                                          const Tensor& v_cache, const Tensor& block_tables,
                                          const std::vector<SoftmaxPrefillPiece>& pieces,
                                          Tensor& o);

}  // namespace tandem::kernels::cuda

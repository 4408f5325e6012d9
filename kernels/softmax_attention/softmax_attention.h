// Causal GQA softmax attention over packed sequences, its backward, and paged decode.
//
// Numerics (contract rule 2): a query at position t reduces over the keys 0..t of its own sequence
// in KV tiles [a, a + kAttentionKvTile) with online softmax (fp32 running max, sum and output),
// tiles grouped into splits of kAttentionSplitLength positions; the split partials are merged in
// ascending split order. One tile routine and one merge routine serve the forward pass and decode,
// so a decode query at position t produces exactly the bits the forward pass produces for t.
// Head h reads KV head h / (H / Hkv). scale is applied to q·k before the softmax.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/contract.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

struct SoftmaxAttentionParams {
  int64_t num_heads = 0;     // H (query heads)
  int64_t num_kv_heads = 0;  // Hkv, divides H
  int64_t head_dim = 0;      // D
  float scale = 0.0f;        // > 0, usually D^-1/2
};

// Packed causal forward. q [T, H, D], k, v [T, Hkv, D], cu_seqlens [B + 1] i32 (sequence b is rows
// cu_seqlens[b] .. cu_seqlens[b+1]; positions restart at 0 in each). o [T, H, D]; lse [T, H] is the
// natural-log sum of exp(scale·q·k) over the attended keys, saved for backward.
absl::Status SoftmaxAttentionFwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, Tensor& o, Tensor& lse);

// Backward. dq [T, H, D], dk, dv [T, Hkv, D] are overwritten. Deterministic: every gradient
// element is a sum in a fixed order (no atomics), independent of the thread count.
absl::Status SoftmaxAttentionBwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, const Tensor& o, const Tensor& lse,
                                 const Tensor& d_o, Tensor& dq, Tensor& dk, Tensor& dv);

// Decode over a paged KV cache: one query per sequence, at position seq_lens[b] − 1.
// q [B, H, D]; k_cache, v_cache [num_blocks, kAttentionKvTile, Hkv, D] (block j of sequence b
// holds positions j·tile .. j·tile + tile − 1 and is cache block block_tables[b, j]);
// block_tables [B, max_blocks] i32; seq_lens [B] i32 counts the keys including the query's own,
// whose k and v must already be in the cache. o [B, H, D].
absl::Status SoftmaxAttentionDecode(const Context& ctx, const SoftmaxAttentionParams& p,
                                    const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                    const Tensor& block_tables, const Tensor& seq_lens, Tensor& o);

}  // namespace tandem::kernels

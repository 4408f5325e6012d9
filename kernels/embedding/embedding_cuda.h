// Token embedding on the GPU: the semantics of kernels::EmbeddingFwd / EmbeddingBwd
// (embedding.h). table, out, dout f32 or bf16 (independently); dtable f32; all on the GPU.
// The backward is deterministic without atomics: the ids are read on the host, tokens are
// grouped by id (a stable sort, so ascending t within an id) and one thread per (id, column)
// adds its tokens in ascending t onto dtable's old value, the CPU's order: with f32 dout the
// result is the CPU's bits.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// out[t, :] = table[ids[t], :]. ids [T] i32 on the host (checked: InvalidArgument naming the
// position, as on the CPU) or on the GPU (not checked: an id outside [0, V) gives a NaN row).
absl::Status EmbeddingFwd(const Context& ctx, const Tensor& table, const Tensor& ids, Tensor& out);

// dtable[ids[t], :] += dout[t, :], t ascending per id. ids [T] i32 on either device (read on the
// host and checked).
absl::Status EmbeddingBwd(const Context& ctx, const Tensor& ids, const Tensor& dout,
                          Tensor& dtable);

}  // namespace tandem::kernels::cuda

// Token embedding lookup and its gradient.
#pragma once

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

// out[t, :] = table[ids[t], :].  table [V, D] f32, ids [T] i32, out [T, D] f32.
// An id outside [0, V) returns InvalidArgument naming the position and the id.
absl::Status EmbeddingFwd(const Context& ctx, const Tensor& table, const Tensor& ids, Tensor& out);

// dtable[ids[t], :] += dout[t, :] for t ascending (a fixed order, so repeated ids sum
// deterministically; threads split the D columns). dtable [V, D], dout [T, D].
absl::Status EmbeddingBwd(const Context& ctx, const Tensor& ids, const Tensor& dout,
                          Tensor& dtable);

}  // namespace tandem::kernels

// Internal to kernels/linear_attention (host code of linear_attention.cu and
// linear_attention_bwd.cu): cu_seqlens checked on the host and cut into the chunk list both CUDA
// passes walk, so the forward and the backward see the same chunks in the same order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/context.h"
#include "kernels/core/contract.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels::cuda {

// Item: a {row0, n, chunk} aggregate (each pass's ChunkItem). items gets one per chunk of
// kLinearAttentionChunk tokens (a sequence's last one shorter), sequence by sequence; seq_chunk
// [B + 1]: sequence b owns chunks [seq_chunk[b], seq_chunk[b + 1]).
template <typename Item>
absl::Status MakeChunks(const Context& ctx, const Tensor& cu_seqlens, int64_t t,
                        std::vector<Item>* items, std::vector<int>* seq_chunk) {
  constexpr int kC = static_cast<int>(kLinearAttentionChunk);
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(cu_seqlens, "cu_seqlens", DType::kI32, {-1}, cu_seqlens.device()));
  Tensor host = cu_seqlens;
  if (cu_seqlens.device() == Device::kCUDA) {
    TANDEM_ASSIGN_OR_RETURN(host, CopyToHost(ctx, cu_seqlens));
  }
  const int32_t* cu = host.data<int32_t>();
  const int64_t n = host.numel();
  TANDEM_CHECK_ARG(n >= 2, "cu_seqlens: needs B + 1 >= 2 entries, got ", n);
  TANDEM_CHECK_ARG(cu[0] == 0, "cu_seqlens[0]: must be 0, got ", cu[0]);
  TANDEM_CHECK_ARG(cu[n - 1] == t, "cu_seqlens[", n - 1, "]: must equal T = ", t, ", got ",
                   cu[n - 1]);
  seq_chunk->assign(1, 0);
  for (int64_t b = 0; b + 1 < n; ++b) {
    TANDEM_CHECK_ARG(cu[b + 1] >= cu[b], "cu_seqlens: must be non-decreasing, but cu_seqlens[",
                     b + 1, "] = ", cu[b + 1], " < ", cu[b]);
    for (int c0 = cu[b]; c0 < cu[b + 1]; c0 += kC) {
      items->push_back({c0, std::min(kC, cu[b + 1] - c0), static_cast<int>(items->size())});
    }
    seq_chunk->push_back(static_cast<int>(items->size()));
  }
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

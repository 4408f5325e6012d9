// Internal to kernels/softmax_attention: argument checks shared by forward, backward and decode,
// and the work items and thread distribution they use.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/softmax_attention/softmax_attention.h"

namespace tandem::kernels::internal {

// H, Hkv, D positive and Hkv divides H.
absl::Status CheckParams(const SoftmaxAttentionParams& p);
// q [T, H, D], k and v [T, Hkv, D] f32; cu_seqlens [B + 1] i32 starting at 0, non-decreasing,
// ending at T.
absl::Status CheckPackedInputs(const SoftmaxAttentionParams& p, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& cu_seqlens);
// cu_seqlens [B + 1] i32 on the host: starts at 0, non-decreasing, ends at t.
absl::Status CheckSeqlens(const Tensor& cu_seqlens, int64_t t);
// cu_seqlens on either device as a checked host vector (the GPU passes copy it through ctx).
absl::StatusOr<std::vector<int32_t>> HostSeqlens(const Context& ctx, const Tensor& cu_seqlens,
                                                 int64_t t);

// A block of consecutive positions of one sequence, for one kv head (and its group of query
// heads): the unit of work of the forward (query rows) and backward (query or key rows) passes.
struct RowBlock {
  int64_t seq_start;  // first packed row of the sequence
  int64_t seq_len;    // its length
  int64_t pos0;       // first position (within the sequence) of the block
  int64_t pos1;       // one past the last
  int64_t kv_head;
};
// Positions per block: small enough to balance two threads on one short sequence.
inline constexpr int64_t kRowBlock = 16;
// Blocks of at most kRowBlock positions, ordered by (sequence, block, kv head).
std::vector<RowBlock> MakeRowBlocks(const Tensor& cu_seqlens, int64_t num_kv_heads);

// Runs fn(item, work) for item in [0, n), handing items to threads round-robin so that cheap and
// expensive (late causal) items mix. Each item writes its own outputs, so the results do not
// depend on which thread ran it. `work` is a per-thread scratch buffer of work_floats floats.
template <typename Fn>
void RoundRobin(const Context& ctx, int64_t n, int64_t work_floats, const Fn& fn) {
  const int64_t lanes = std::max<int64_t>(1, std::min<int64_t>(ctx.num_threads(), n));
  ctx.ParallelFor(lanes, [&](int64_t lane0, int64_t lane1) {
    std::vector<float> work(work_floats);
    for (int64_t lane = lane0; lane < lane1; ++lane) {
      for (int64_t i = lane; i < n; i += lanes) fn(i, work.data());
    }
  });
}

}  // namespace tandem::kernels::internal

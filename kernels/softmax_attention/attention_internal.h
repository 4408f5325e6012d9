// Internal to kernels/softmax_attention: argument checks shared by forward, backward and decode,
// and the work items and thread distribution they use.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
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

// The items ordered by cost, highest first, ties in their given order. Costs count tiles, so they
// stay within a small multiple of the item count and a counting sort is linear; a comparison sort
// of a long sequence's thousands of items took longer on the host than a 4K forward on the GPU.
// `trailing` value-initialised items follow the sorted ones (room a caller uploads with them, such
// as a kernel's work counter, without growing the vector). REQUIRES: every cost >= 0.
template <typename Item>
std::vector<Item> CostliestFirst(std::vector<std::pair<int64_t, Item>> costed,
                                 size_t trailing = 0) {
  int64_t max_cost = 0;
  for (const auto& c : costed) max_cost = std::max(max_cost, c.first);
  std::vector<Item> items(costed.size() + trailing);
  if (max_cost > 16 * static_cast<int64_t>(costed.size()) + 4096) {  // sparse costs: sort
    std::stable_sort(costed.begin(), costed.end(),
                     [](const auto& x, const auto& y) { return x.first > y.first; });
    for (size_t i = 0; i < costed.size(); ++i) items[i] = costed[i].second;
    return items;
  }
  std::vector<int64_t> next(max_cost + 2, 0);  // next[max_cost - c]: slot of the next cost-c item
  for (const auto& c : costed) ++next[max_cost - c.first + 1];
  for (size_t i = 1; i < next.size(); ++i) next[i] += next[i - 1];
  for (const auto& c : costed) items[next[max_cost - c.first]++] = c.second;
  return items;
}

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

// The row routine of causal softmax attention (contract rule 2) and the per-machine choice of
// vector kernels. AttendRows is the only code path from a query row to its output: the forward
// pass calls it on contiguous tensors, decode on the paged cache, with the same tiles and splits.
#include "kernels/softmax_attention/attention_row.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/core/contract.h"
#include "kernels/core/cpu_features.h"

namespace tandem::kernels::cpu {
namespace generic {
#include "kernels/softmax_attention/attention_row_impl.inc"
}  // namespace generic

const VectorKernels& GenericKernels() { return generic::kVectorKernels; }

const VectorKernels& Kernels() {
  static const VectorKernels& kernels = CpuHasAvx2Fma() ? Avx2Kernels() : GenericKernels();
  return kernels;
}

namespace {

// Folds one split's partial (m_p, l_p, acc_p) into the running total (m, l, acc):
//   m' = max(m, m_p),  acc' = acc·e^(m − m') + acc_p·e^(m_p − m'),  l' likewise.
// The total starts empty (m = −inf), so merging the first split copies it exactly.
void MergeSplit(float m_p, float l_p, const float* acc_p, int64_t d, float* m, float* l,
                float* acc) {
  float m_new = std::max(*m, m_p);
  float a = std::isinf(*m) && *m < 0 ? 0.0f : std::exp(*m - m_new);
  float b = std::isinf(m_p) && m_p < 0 ? 0.0f : std::exp(m_p - m_new);
  for (int64_t i = 0; i < d; ++i) acc[i] = acc[i] * a + acc_p[i] * b;
  *l = *l * a + l_p * b;
  *m = m_new;
}

}  // namespace

void AttendRows(const VectorKernels& kern, const KvSource& kv, const QueryRow* rows, int64_t n,
                int64_t d, float scale, float* work) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float* acc = work;                // [n, D] running totals over merged splits
  float* split_acc = work + n * d;  // [n, D] the split being reduced
  float* state = work + 2 * n * d;  // [n, 4] m, l of the total; m, l of the split
  int64_t num_keys = 0;
  for (int64_t r = 0; r < n; ++r) {
    state[4 * r] = kNegInf;
    state[4 * r + 1] = 0.0f;
    std::fill(acc + r * d, acc + (r + 1) * d, 0.0f);
    num_keys = std::max(num_keys, rows[r].t + 1);
  }
  for (int64_t s0 = 0; s0 < num_keys; s0 += kAttentionSplitLength) {
    for (int64_t r = 0; r < n; ++r) {
      if (rows[r].t < s0) continue;
      state[4 * r + 2] = kNegInf;
      state[4 * r + 3] = 0.0f;
      std::fill(split_acc + r * d, split_acc + (r + 1) * d, 0.0f);
    }
    const int64_t s1 = std::min(num_keys, s0 + kAttentionSplitLength);
    for (int64_t a = s0; a < s1; a += kAttentionKvTile) {
      const int64_t tile = a / kAttentionKvTile;
      const int64_t offset = (kv.block_table ? kv.block_table[tile] : tile) * kv.tile_stride;
      for (int64_t r = 0; r < n; ++r) {
        if (rows[r].t < a) continue;
        // Keys a .. min(a + tile, t + 1): a split ends on a tile boundary, so only t cuts a tile.
        kern.attend_tile(rows[r].q, kv.k + offset, kv.v + offset, kv.row_stride,
                         std::min(kAttentionKvTile, rows[r].t + 1 - a), d, scale, &state[4 * r + 2],
                         &state[4 * r + 3], split_acc + r * d);
      }
    }
    for (int64_t r = 0; r < n; ++r) {
      if (rows[r].t < s0) continue;
      MergeSplit(state[4 * r + 2], state[4 * r + 3], split_acc + r * d, d, &state[4 * r],
                 &state[4 * r + 1], acc + r * d);
    }
  }
  for (int64_t r = 0; r < n; ++r) {
    const float l = state[4 * r + 1];
    for (int64_t i = 0; i < d; ++i) rows[r].o[i] = acc[r * d + i] / l;
    *rows[r].lse = state[4 * r] + std::log(l);
  }
}

}  // namespace tandem::kernels::cpu

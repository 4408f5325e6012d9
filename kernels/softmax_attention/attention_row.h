// Internal to kernels/softmax_attention: the one routine that reduces query rows over their keys
// (tile by tile with online softmax, splits merged in ascending order), shared by the packed
// forward pass and paged decode, plus the vector primitives the backward pass uses. Keeping one
// definition here is what makes `decode at position t` equal `forward row t` bitwise.
#pragma once

#include <cstdint>

namespace tandem::kernels::cpu {

// Where the keys and values of one (sequence, kv head) live. Key tile j (positions
// j·kAttentionKvTile ..) starts at k + block(j)·tile_stride with rows row_stride floats apart;
// block(j) = j for a contiguous [T, Hkv, D] tensor and block_table[j] for the paged cache.
struct KvSource {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t row_stride = 0;                // floats between consecutive key positions (Hkv·D)
  int64_t tile_stride = 0;               // floats between tile/block starts (tile·Hkv·D)
  const int32_t* block_table = nullptr;  // null: contiguous
};

// Vector primitives with a fixed summation order (8 interleaved lanes, then a fixed tree), the
// same bits whether compiled for SSE2 or AVX2 (no FMA contraction: the build uses
// -ffp-contract=off). Chosen once per machine.
struct VectorKernels {
  // Returns Σ_i a[i]·b[i].
  float (*dot)(const float* a, const float* b, int64_t d);
  // y[i] += alpha·x[i].
  void (*axpy)(float alpha, const float* x, float* y, int64_t d);
  // Online-softmax update of (m, l, acc[d]) with the n ≤ kAttentionKvTile keys of one tile:
  // scores s_j = scale·q·k_j, keys in ascending order.
  void (*attend_tile)(const float* q, const float* k, const float* v, int64_t row_stride, int64_t n,
                      int64_t d, float scale, float* m, float* l, float* acc);
};

// The kernels for this machine (AVX2 build when the CPU has AVX2+FMA, else baseline x86-64).
const VectorKernels& Kernels();
const VectorKernels& GenericKernels();
const VectorKernels& Avx2Kernels();

// One query row: q[D] at position t (keys 0..t), and where its results go.
struct QueryRow {
  const float* q;
  int64_t t;
  float* o;    // [D] softmax(scale·q·Kᵀ)·V
  float* lse;  // log Σ exp(scale·q·k)
};

// Floats of `work` AttendRows needs for n rows of head dimension d.
inline int64_t AttendRowsWorkFloats(int64_t n, int64_t d) { return n * (2 * d + 4); }

// Causal attention of n query rows that share the keys and values `kv`. Each row is reduced over
// its keys 0..t exactly as if it were alone: tile by tile (attend_tile) within a split, splits
// merged in ascending order. Interleaving the rows tile by tile only lets them share the tile
// while it is in cache; no row's arithmetic depends on the others.
void AttendRows(const VectorKernels& kern, const KvSource& kv, const QueryRow* rows, int64_t n,
                int64_t d, float scale, float* work);

}  // namespace tandem::kernels::cpu

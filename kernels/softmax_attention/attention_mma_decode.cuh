// Internal to kernels/softmax_attention (included by softmax_attention.cu only): the tensor-core
// paged decode for a bf16 cache. One warp per (split, 16 heads of a kv head's group, sequence),
// four independent warps per block, each streaming its split's tiles through its own cp.async ring
// of half tiles; the splits' partials are merged in order by a second kernel. A row's arithmetic is
// the forward's: AttendTileMma's steps per tile (attention_mma.cuh), MergeWeightsOf/MergeValue.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/softmax_attention/attention_mma.cuh"
#include "kernels/softmax_attention/attention_mma_kernels.cuh"

namespace tandem::kernels::cuda::attention_mma {

struct DecodeArgs {
  Dims dm;
  const bf16 *q, *k_cache, *v_cache;
  FloatPtr o;
  const int32_t* block_tables;
  const int32_t* seq_lens;
  int max_blocks, max_splits, row_blocks;  // row_blocks: m16 tiles per kv head's group
  float* partial;                          // [B, H, max_splits, kD + 2]: acc, then m, l
};

// Decode: every warp is on its own (split, m16 row block of a kv head's group, sequence) and
// streams the split's tiles through its own ring of half-tile pieces (32 keys of K or V; per tile
// K0, K1, V0, V1), so it keeps two pieces in flight while it computes on the third without any
// block-wide barrier. 4 warps x 3 pieces = 102 KB at D = 128: two blocks, eight independent streams
// per SM.
inline constexpr int kDecodeWarps = 4;
inline constexpr int kDecodeRing = 3;
inline constexpr int kPieceKeys = kTile / 2;
static_assert(kSplit / kTile <= 32, "one lane holds one tile's cache block of the split");

template <int kD>
struct DecodeSmem {
  static constexpr int kPieceElems = kPieceKeys * kLd<kD>;
  static constexpr size_t kBytes = size_t{kDecodeWarps} * kDecodeRing * kPieceElems * sizeof(bf16);
};

// The warp's Q rows (heads head0 .. head0 + 15 of the group, zeros past it) as the m16n8k16 A
// fragments LoadQFragments would give: the same bf16 pairs, read straight from global memory.
template <int kD>
__device__ __forceinline__ void LoadQDirect(const bf16* q_rows, int live_rows,
                                            uint32_t (&qf)[kD / 16][4]) {
  const int lane = threadIdx.x % 32, r = lane / 4, c = 2 * (lane % 4);
  const auto word = [&](int row, int col) {
    return row < live_rows ? __ldg(reinterpret_cast<const unsigned int*>(q_rows + row * kD + col))
                           : 0u;
  };
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    qf[ks][0] = word(r, ks * 16 + c);
    qf[ks][1] = word(r + 8, ks * 16 + c);
    qf[ks][2] = word(r, ks * 16 + 8 + c);
    qf[ks][3] = word(r + 8, ks * 16 + 8 + c);
  }
}

// Issues piece p of the split (tile p / 4; K for p % 4 < 2, else V; keys 32·(p % 2) ..) into its
// ring slot, zeros past the sequence; commits a group either way (empty past the last piece) so
// that CpAsyncWait<kDecodeRing − 1> always means "piece p has landed".
template <int kD>
struct PieceLoader {
  const bf16 *kb, *vb;
  int64_t slot_ld;
  int keys;      // keys of the split the row sees (pos + 1 − s0)
  int my_block;  // lane i: the cache block of the split's tile i
  int num_pieces;
  bf16* ring;
  __device__ __forceinline__ void Issue(int p) const {
    if (p < num_pieces) {
      const int lane = threadIdx.x % 32, tile = p >> 2, half = p & 1;
      const int64_t block = __shfl_sync(0xffffffffu, my_block, tile);
      const int valid = keys - tile * kTile - half * kPieceKeys;  // may be <= 0
      const bf16* src = ((p & 2) ? vb : kb) + (block * kTile + half * kPieceKeys) * slot_ld;
      bf16* dst = ring + (p % kDecodeRing) * DecodeSmem<kD>::kPieceElems;
      constexpr int kChunks = kD / 8;
#pragma unroll
      for (int i = 0; i < kPieceKeys * kChunks / 32; ++i) {
        const int idx = lane + 32 * i, j = idx / kChunks, c = (idx % kChunks) * 8;
        const bool ok = j < valid;
        CpAsync16(dst + j * kLd<kD> + c, ok ? src + j * slot_ld + c : kb, ok);
      }
    }
    CpAsyncCommit();
  }
  __device__ __forceinline__ const bf16* Ready(int p) const {  // piece p landed for the warp
    CpAsyncWait<kDecodeRing - 1>();
    __syncwarp();
    return ring + (p % kDecodeRing) * DecodeSmem<kD>::kPieceElems;
  }
  __device__ __forceinline__ void Done(int p) const {  // the warp has read piece p: refill its slot
    __syncwarp();
    Issue(p + kDecodeRing);
  }
};

// The split's tiles in ascending order through AttendTileMma's steps (attention_mma.cuh's half-tile
// routines), one running state. The first kDecodeRing pieces have been issued.
template <int kD>
__device__ __forceinline__ void DecodeSplitTiles(const PieceLoader<kD>& ld,
                                                 const uint32_t (&qf)[kD / 16][4], float scale_log2,
                                                 WarpState<kD>& st) {
  float s[8][4];
  uint32_t pa[4][4];
  for (int p = 0; p < ld.num_pieces; p += 4) {
    ScoreHalf<kD, 0>(qf, ld.Ready(p), s);
    ld.Done(p);
    ScoreHalf<kD, 1>(qf, ld.Ready(p + 1), s);
    ld.Done(p + 1);
    const int n = min(kTile, ld.keys - (p >> 2) * kTile);
    const int lim[2] = {n, n};
    if (n == kTile) {
      SoftmaxTile<kD, false>(s, lim, scale_log2, st, pa);
    } else {
      SoftmaxTile<kD, true>(s, lim, scale_log2, st, pa);
    }
    AccumulatePvHalf<kD, 0>(pa, ld.Ready(p + 2), st.acc);
    ld.Done(p + 2);
    AccumulatePvHalf<kD, 1>(pa, ld.Ready(p + 3), st.acc);
    ld.Done(p + 3);
  }
}

// Warp w of block x: item 4x + w = (sequence, split, kv head · row_blocks + row block), the last
// fastest. The query at position seq_len − 1 for up to 16 heads of the group (zero rows pad the
// m16 tile), over the split's tiles; the partial (acc, m, l) per head goes to a.partial.
template <int kD>
__global__ void __launch_bounds__(kDecodeWarps * 32, 2)
    DecodeSplitKernel(DecodeArgs a, int num_items) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int item = blockIdx.x * kDecodeWarps + warp, rows = a.dm.hkv * a.row_blocks;
  if (item >= num_items) return;  // warp-uniform; no block-wide barrier follows
  const int split = item / rows % a.max_splits, b = item / rows / a.max_splits;
  const int g = item % rows / a.row_blocks, head0 = item % rows % a.row_blocks * kWarpRows;
  const int pos = a.seq_lens[b] - 1, s0 = split * kSplit;
  if (s0 > pos) return;
  const Dims& dm = a.dm;
  const int num_tiles = (min(pos, s0 + kSplit - 1) - s0) / kTile + 1;
  const int32_t* table = a.block_tables + int64_t{b} * a.max_blocks + s0 / kTile;
  PieceLoader<kD> ld{
      a.k_cache + int64_t{g} * kD,
      a.v_cache + int64_t{g} * kD,
      int64_t{dm.hkv} * kD,
      pos + 1 - s0,
      lane < num_tiles ? table[lane] : 0,
      4 * num_tiles,
      reinterpret_cast<bf16*>(smem) + warp * kDecodeRing * DecodeSmem<kD>::kPieceElems};
  for (int p = 0; p < kDecodeRing; ++p) ld.Issue(p);  // the ring fills while Q is read
  uint32_t qf[kD / 16][4];
  LoadQDirect<kD>(a.q + (int64_t{b} * dm.h + g * dm.group + head0) * kD, dm.group - head0, qf);
  WarpState<kD> st;
  st.Reset();
  DecodeSplitTiles<kD>(ld, qf, dm.scale_log2, st);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = head0 + lane / 4 + 8 * i;
    if (r >= dm.group) continue;
    float* out =
        a.partial + ((int64_t{b} * dm.h + g * dm.group + r) * a.max_splits + split) * (kD + 2);
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      *reinterpret_cast<float2*>(out + n * 8 + 2 * (lane % 4)) =
          make_float2(st.acc[n][2 * i], st.acc[n][2 * i + 1]);
    }
    if (lane % 4 == 0) out[kD] = st.m[i], out[kD + 1] = st.l[i];
  }
}

// One warp per (sequence, head): the splits' partials merged in ascending order, then
// o = acc · (1 / l). The next split's partial is loaded while the current one is merged.
template <int kD>
__global__ void DecodeMergeKernel(DecodeArgs a, int num_rows) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= num_rows) return;
  const int num_splits = (a.seq_lens[row / a.dm.h] - 1) / kSplit + 1;
  constexpr int kPer = kD / 32;
  const float* in = a.partial + int64_t{row} * a.max_splits * (kD + 2);
  float m = -INFINITY, l = 0.0f, acc[kPer], next[kPer + 2];
  const auto fetch = [&](const float* p) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) next[i] = p[lane + 32 * i];
    next[kPer] = p[kD], next[kPer + 1] = p[kD + 1];
  };
#pragma unroll
  for (int i = 0; i < kPer; ++i) acc[i] = 0.0f;
  fetch(in);
  for (int s = 0; s < num_splits; ++s) {
    float part[kPer + 2];
#pragma unroll
    for (int i = 0; i < kPer + 2; ++i) part[i] = next[i];
    if (s + 1 < num_splits) fetch(in + (s + 1) * (kD + 2));
    const MergeWeights w = MergeWeightsOf(m, part[kPer]);
#pragma unroll
    for (int i = 0; i < kPer; ++i) acc[i] = MergeValue(acc[i], part[i], w);
    l = MergeValue(l, part[kPer + 1], w);
    m = w.m;
  }
  const float inv_l = InverseSum(l);
#pragma unroll
  for (int i = 0; i < kPer; ++i)
    a.o.Store(int64_t{row} * kD + lane + 32 * i, FinalOutput(acc[i], inv_l));
}

template <int kD>
cudaError_t LaunchDecode(cudaStream_t stream, const DecodeArgs& a, int batch) {
  constexpr size_t kBytes = DecodeSmem<kD>::kBytes;
  // Two blocks per SM need the largest shared-memory carveout.
  cudaError_t e =
      AllowSmem<&DecodeSplitKernel<kD>>(static_cast<int>(kBytes), cudaSharedmemCarveoutMaxShared);
  if (e != cudaSuccess) return e;
  const int64_t items = int64_t{batch} * a.max_splits * a.dm.hkv * a.row_blocks;
  if (items > int64_t{1} << 30) return cudaErrorInvalidValue;
  DecodeSplitKernel<kD><<<static_cast<unsigned>((items + kDecodeWarps - 1) / kDecodeWarps),
                          kDecodeWarps * 32, kBytes, stream>>>(a, static_cast<int>(items));
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  constexpr int kMergeThreads = 128;
  const int rows = batch * a.dm.h, per_block = kMergeThreads / 32;
  DecodeMergeKernel<kD><<<(rows + per_block - 1) / per_block, kMergeThreads, 0, stream>>>(a, rows);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::attention_mma

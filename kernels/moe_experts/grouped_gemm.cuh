// The tile engine of the grouped expert GEMMs: cuda::GemmNT's arithmetic (mma.sync m16n8k16 bf16
// with fp32 accumulators, 32-deep k slices in a 4-stage cp.async ring, two k16 steps per slice,
// k ascending, zeros past the edges) with operands that may arrive k-contiguous ([rows, k], as in
// GemmNT) or transposed ([k, rows], read with ldmatrix.trans). An output element is one fp32
// accumulator fed by the same mma sequence whatever the tile height or the element's place in
// the tile, so every variant here gives GemmNT's bits for the same operands.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/mma_sync.cuh"

namespace tandem::kernels::cuda::moe {

inline constexpr int kGemmThreads = 256;  // 8 warps
inline constexpr int kGemmBN = 128;       // output columns per CTA
inline constexpr int kGemmBK = 32;        // k per pipeline stage
inline constexpr int kGemmStages = 4;

using mma::CpAsync16;
using mma::CpAsyncCommit;
using mma::CpAsyncWait;
using mma::LdMatrixX4;
using mma::Mma;
using mma::SmemAddr;

// One operand's tile of kRows rows (M or N) by kGemmBK k in shared memory. k-contiguous:
// [kRows][kBK + 8]; transposed: [kBK][kRows + 8]. Both paddings keep ldmatrix conflict-free.
template <int kRows, bool kTrans>
struct TileShape {
  static constexpr int kLd = kTrans ? kRows + 8 : kGemmBK + 8;
  static constexpr int kElems = kTrans ? kGemmBK * kLd : kRows * kLd;
  static constexpr int kChunks = kRows * kGemmBK / 8;  // 16-byte chunks per stage
  static constexpr int kPerThread = (kChunks + kGemmThreads - 1) / kGemmThreads;
};

// Loads a k-contiguous operand whose tile rows come from fixed global rows (null: zeros).
// REQUIRES: k % 8 == 0 and 16-byte aligned rows.
template <int kRows>
struct RowsLoader {
  using Shape = TileShape<kRows, false>;
  const uint16_t* src[Shape::kPerThread];  // row start of each chunk this thread copies
  const uint16_t* fallback;                // any valid address (never read)
  int64_t k;

  template <typename RowFn>  // RowFn(r) -> row r's global start, or nullptr past the edge
  __device__ void Init(RowFn row_fn, int64_t k_len, const void* any) {
    k = k_len, fallback = static_cast<const uint16_t*>(any);
#pragma unroll
    for (int i = 0; i < Shape::kPerThread; ++i) {
      const int c = threadIdx.x + i * kGemmThreads;
      src[i] = c < Shape::kChunks ? row_fn(c / (kGemmBK / 8)) : nullptr;
    }
  }
  __device__ void Issue(uint16_t* tile, int64_t k0) const {
#pragma unroll
    for (int i = 0; i < Shape::kPerThread; ++i) {
      const int c = threadIdx.x + i * kGemmThreads;
      if (c >= Shape::kChunks) break;
      const int r = c / (kGemmBK / 8), kc = (c % (kGemmBK / 8)) * 8;
      const bool valid = src[i] != nullptr && k0 + kc < k;
      CpAsync16(tile + r * Shape::kLd + kc, valid ? src[i] + k0 + kc : fallback, valid);
    }
  }
};

// Loads a transposed operand: global [k, cols] row-major, k row kk at base + kk·ld (kk < k_len),
// tile columns [0, kRows) valid below `cols`. REQUIRES: cols % 8 == 0, 16-byte aligned rows.
template <int kRows>
struct TransLoader {
  using Shape = TileShape<kRows, true>;
  const uint16_t* base;
  int64_t ld, k_len, cols;

  __device__ void Issue(uint16_t* tile, int64_t k0) const {
    constexpr int kPerRow = kRows / 8;
#pragma unroll
    for (int i = 0; i < Shape::kPerThread; ++i) {
      const int c = threadIdx.x + i * kGemmThreads;
      if (c >= Shape::kChunks) break;
      const int kr = c / kPerRow, cc = (c % kPerRow) * 8;
      const bool valid = k0 + kr < k_len && cc < cols;
      CpAsync16(tile + kr * Shape::kLd + cc, valid ? base + (k0 + kr) * ld + cc : base, valid);
    }
  }
};

// A CTA tile of kBM x kGemmBN outputs computed by 8 warps, kWM along M and 8 / kWM along N.
template <int kBM, int kWM, bool kATrans, bool kBTrans>
struct TileConfig {
  static constexpr int kWN = 8 / kWM;
  static constexpr int kWarpRows = kBM / kWM, kWarpCols = kGemmBN / kWN;
  static constexpr int kMI = kWarpRows / 16, kNI = kWarpCols / 8;
  using A = TileShape<kBM, kATrans>;
  using B = TileShape<kGemmBN, kBTrans>;
  static constexpr int kStageElems = A::kElems + B::kElems;
  static constexpr size_t kSmemBytes = size_t{kGemmStages} * kStageElems * sizeof(uint16_t);
  static_assert(kMI >= 1 && kNI % 2 == 0 && kWarpRows % 16 == 0, "whole mma tiles per warp");
};

// One 32-deep slice of the warp's outputs: two k16 steps, k ascending (GemmNT's order).
template <class Cfg, bool kATrans, bool kBTrans>
__device__ __forceinline__ void ComputeSlice(const uint16_t* as, const uint16_t* bs, int warp_m,
                                             int warp_n, float (&acc)[Cfg::kMI][Cfg::kNI][4]) {
  const int lane = threadIdx.x % 32, q = lane >> 3;
#pragma unroll
  for (int ks = 0; ks < kGemmBK; ks += 16) {
    uint32_t a[Cfg::kMI][4], b[Cfg::kNI][2];
#pragma unroll
    for (int mi = 0; mi < Cfg::kMI; ++mi) {
      const int m = warp_m * Cfg::kWarpRows + mi * 16;
      if constexpr (kATrans) {  // matrices: (m0-7,k0-7) (m8-15,k0-7) (m0-7,k8-15) (m8-15,k8-15)
        const int kr = ks + (lane & 7) + (q >> 1) * 8;
        LdMatrixX4<true>(a[mi], as + kr * Cfg::A::kLd + m + (q & 1) * 8);
      } else {
        LdMatrixX4<false>(a[mi], as + (m + (lane & 15)) * Cfg::A::kLd + ks + (lane >> 4) * 8);
      }
    }
#pragma unroll
    for (int nj = 0; nj < Cfg::kNI / 2; ++nj) {
      const int n = warp_n * Cfg::kWarpCols + nj * 16;
      uint32_t r[4];  // (n0-7,k0-7) (n0-7,k8-15) (n8-15,k0-7) (n8-15,k8-15)
      if constexpr (kBTrans) {
        const int kr = ks + (lane & 7) + (q & 1) * 8;
        LdMatrixX4<true>(r, bs + kr * Cfg::B::kLd + n + (q >> 1) * 8);
      } else {
        const int row = n + (lane & 7) + ((lane >> 4) << 3);
        LdMatrixX4<false>(r, bs + row * Cfg::B::kLd + ks + (q & 1) * 8);
      }
      b[2 * nj][0] = r[0], b[2 * nj][1] = r[1], b[2 * nj + 1][0] = r[2], b[2 * nj + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < Cfg::kMI; ++mi) {
#pragma unroll
      for (int ni = 0; ni < Cfg::kNI; ++ni) Mma(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
    }
  }
}

// The k loop over [0, k_len): GemmNT's pipeline (prefetch kStages - 1 slices, wait for slice kt,
// one barrier, issue slice kt + kStages - 1, compute kt).
template <class Cfg, bool kATrans, bool kBTrans, class LoadA, class LoadB>
__device__ __forceinline__ void MainLoop(uint16_t* smem, const LoadA& load_a, const LoadB& load_b,
                                         int64_t k_len, float (&acc)[Cfg::kMI][Cfg::kNI][4]) {
  const int warp = threadIdx.x / 32, warp_m = warp / Cfg::kWN, warp_n = warp % Cfg::kWN;
  auto a_tile = [&](int s) { return smem + s * Cfg::kStageElems; };
  auto b_tile = [&](int s) { return smem + s * Cfg::kStageElems + Cfg::A::kElems; };
  const int64_t num_slices = (k_len + kGemmBK - 1) / kGemmBK;
  for (int s = 0; s < kGemmStages - 1; ++s) {
    if (s < num_slices) {
      load_a.Issue(a_tile(s), s * kGemmBK);
      load_b.Issue(b_tile(s), s * kGemmBK);
    }
    CpAsyncCommit();
  }
  for (int64_t kt = 0; kt < num_slices; ++kt) {
    CpAsyncWait<kGemmStages - 2>();
    __syncthreads();
    const int64_t next = kt + kGemmStages - 1;
    if (next < num_slices) {
      const int ns = static_cast<int>(next % kGemmStages);
      load_a.Issue(a_tile(ns), next * kGemmBK);
      load_b.Issue(b_tile(ns), next * kGemmBK);
    }
    CpAsyncCommit();
    const int stage = static_cast<int>(kt % kGemmStages);
    ComputeSlice<Cfg, kATrans, kBTrans>(a_tile(stage), b_tile(stage), warp_m, warp_n, acc);
  }
  CpAsyncWait<0>();
}

// Output coordinates of accumulator element e of fragment (mi, ni) within the CTA tile.
template <class Cfg>
__device__ __forceinline__ int FragRow(int mi, int e) {
  const int warp_m = (threadIdx.x / 32) / Cfg::kWN, lane = threadIdx.x % 32;
  return warp_m * Cfg::kWarpRows + mi * 16 + lane / 4 + (e / 2) * 8;
}
template <class Cfg>
__device__ __forceinline__ int FragCol(int ni, int e) {
  const int warp_n = (threadIdx.x / 32) % Cfg::kWN, lane = threadIdx.x % 32;
  return warp_n * Cfg::kWarpCols + ni * 8 + (lane % 4) * 2 + e % 2;
}

// Maps a CTA's M-tile slot to (expert, first row within the expert) through the tile offsets
// (tile_off[e] = M-tiles of experts before e, E + 1 entries). False: the slot is past the last
// tile (the grid is sized from an upper bound).
__device__ __forceinline__ bool FindTile(const int32_t* tile_off, int num_experts, int64_t slot,
                                         int tile_rows, int& expert, int64_t& row0) {
  if (slot >= tile_off[num_experts]) return false;
  int lo = 0, hi = num_experts - 1;  // the last e with tile_off[e] <= slot
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tile_off[mid] <= slot) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  expert = lo;  // experts with no tiles share tile_off with the next one: the last is taken
  row0 = (slot - tile_off[lo]) * tile_rows;
  return true;
}

}  // namespace tandem::kernels::cuda::moe

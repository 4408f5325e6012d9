// Host-side launches of the grouped expert GEMMs (included by moe_experts.cu only): the M-tile
// height is picked at run time from 16 / 64 / 128 (the bits do not depend on it), the grid is
// sized from the upper bound ceil(N / tile) + E on the M-tile slots, and the kernels' dynamic
// shared memory is opted in once per instantiation.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/kernel_smem.h"
#include "kernels/moe_experts/grouped_kernels.cuh"

namespace tandem::kernels::cuda::moe {

// M-tile height of the row-grouped GEMMs, from the mean rows per expert: short tiles for decode
// batches (a 128-row tile would be mostly zeros), GemmNT's 128 for long prefills.
inline int TileRows(int64_t rows, int64_t experts) {
  const int64_t mean = rows / experts;
  return mean < 32 ? 16 : mean < 256 ? 64 : 128;
}
// At most ceil(rows / tile) + E tiles: each expert wastes less than one tile.
inline unsigned RowSlots(int64_t rows, int64_t experts, int tile_rows) {
  return static_cast<unsigned>((rows + tile_rows - 1) / tile_rows + experts);
}

template <auto kKernel, size_t kSmem, typename Args>
absl::Status LaunchTiles(const Context& ctx, dim3 grid, const Args& args) {
  TANDEM_CUDA_RETURN_IF_ERROR(AllowSmem<kKernel>(static_cast<int>(kSmem)));
  kKernel<<<grid, kGemmThreads, kSmem, StreamOf(ctx)>>>(args);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <int kBM, int kWM>
absl::Status GateUpAt(const Context& ctx, int64_t rows, const GateUpArgs& args) {
  using Cfg = TileConfig<kBM, kWM, false, false>;
  const dim3 grid(static_cast<unsigned>((args.i + kGemmBN / 2 - 1) / (kGemmBN / 2)),
                  RowSlots(rows, args.g.num_experts, kBM));
  return LaunchTiles<GateUpSwigluKernel<kBM, kWM>, Cfg::kSmemBytes>(ctx, grid, args);
}

// Forward gate/up + SwiGLU over all experts (rows = T·K).
inline absl::Status GateUp(const Context& ctx, int64_t rows, const GateUpArgs& args) {
  switch (args.g.tile_rows) {
    case 16:
      return GateUpAt<16, 1>(ctx, rows, args);
    case 64:
      return GateUpAt<64, 2>(ctx, rows, args);
    default:
      return GateUpAt<128, 2>(ctx, rows, args);
  }
}

template <int kBM, int kWM, bool kBTrans>
absl::Status RowsAt(const Context& ctx, int64_t rows, const RowsArgs& args) {
  using Cfg = TileConfig<kBM, kWM, false, kBTrans>;
  const dim3 grid(static_cast<unsigned>((args.n + kGemmBN - 1) / kGemmBN),
                  RowSlots(rows, args.g.num_experts, kBM));
  return LaunchTiles<RowsGemmKernel<kBM, kWM, kBTrans>, Cfg::kSmemBytes>(ctx, grid, args);
}

// One row-grouped GEMM over all experts; b_trans: B_e is [K, N] (dY·W) instead of [N, K].
template <bool kBTrans>
absl::Status Rows(const Context& ctx, int64_t rows, const RowsArgs& args) {
  switch (args.g.tile_rows) {
    case 16:
      return RowsAt<16, 1, kBTrans>(ctx, rows, args);
    case 64:
      return RowsAt<64, 2, kBTrans>(ctx, rows, args);
    default:
      return RowsAt<128, 2, kBTrans>(ctx, rows, args);
  }
}

// dW_e += (expert e's rows of a)ᵀ · (its rows of b) for every expert, one launch.
inline absl::Status WeightGrad(const Context& ctx, int64_t experts, const WeightGradArgs& args) {
  using Cfg = TileConfig<kWeightGradBM, 2, true, true>;
  const dim3 grid(static_cast<unsigned>((args.n + kGemmBN - 1) / kGemmBN),
                  static_cast<unsigned>((args.m + kWeightGradBM - 1) / kWeightGradBM),
                  static_cast<unsigned>(experts));
  return LaunchTiles<WeightGradKernel, Cfg::kSmemBytes>(ctx, grid, args);
}

}  // namespace tandem::kernels::cuda::moe

// The grouped expert GEMM kernels: every expert's product in one launch, with the expert offsets
// read on the device. Row-grouped kernels (forward gate/up + SwiGLU, forward down, backward dX)
// walk a grid of (N-tile, M-tile slot); the slots map to (expert, rows) through tile offsets made
// by the counting sort, and slots past the last tile exit. The weight-gradient kernel walks
// (N-tile, M-tile, expert) with k = the expert's rows in ascending (t, k) order.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/moe_experts/grouped_gemm.cuh"

namespace tandem::kernels::cuda::moe {

// Rows grouped by expert on the device: expert e owns grouped rows [offsets[e], offsets[e + 1]),
// cut into tile_rows-row tiles numbered from tile_off[e].
struct Groups {
  const int32_t* offsets;
  const int32_t* tile_off;
  int num_experts;
  int tile_rows;
};

// A operand rows of the row-grouped kernels: grouped row p reads row (rows ? rows[p] / div : p).
struct RowSource {
  const uint16_t* base;
  int64_t ld;
  const int32_t* rows;
  int div;
  __device__ const uint16_t* Row(int64_t p) const {
    return base + (rows != nullptr ? rows[p] / div : p) * ld;
  }
};

// Forward gate/up: one GEMM over both weights (a CTA takes 64 columns of each, arranged so that a
// thread holds gate[j] and up[j] of the same j), SwiGLU in the epilogue with kernels/swiglu's
// formula, h rounded to bf16 into grouped rows; gate and up (fp32) go to (t, k) rows when
// requested.
struct GateUpArgs {
  Groups g;
  RowSource x;                    // [*, Dm] bf16
  const uint16_t *w_gate, *w_up;  // [E, I, Dm] bf16
  int64_t i, dm;
  const int32_t* row_of;     // grouped row -> (t, k) row
  float *gate_out, *up_out;  // [N, I] in (t, k) order, or null
  __nv_bfloat16* h;          // [N, I] grouped
};

template <int kBM, int kWM>
__global__ void __launch_bounds__(kGemmThreads) GateUpSwigluKernel(const GateUpArgs args) {
  using Cfg = TileConfig<kBM, kWM, false, false>;
  constexpr int kHalf = Cfg::kWarpCols / 2;
  extern __shared__ __align__(16) uint16_t smem[];
  int e;
  int64_t m0;
  if (!FindTile(args.g.tile_off, args.g.num_experts, blockIdx.y, kBM, e, m0)) return;
  const int64_t off = args.g.offsets[e], rows = args.g.offsets[e + 1] - off;
  const int64_t j0 = int64_t{blockIdx.x} * (kGemmBN / 2);
  RowsLoader<kBM> load_a;
  load_a.Init([&](int r) { return m0 + r < rows ? args.x.Row(off + m0 + r) : nullptr; }, args.dm,
              args.x.base);
  RowsLoader<kGemmBN> load_b;
  load_b.Init(
      [&](int r) -> const uint16_t* {
        const int within = r % Cfg::kWarpCols;
        const int64_t j = j0 + (r / Cfg::kWarpCols) * kHalf + within % kHalf;
        if (j >= args.i) return nullptr;
        return (within < kHalf ? args.w_gate : args.w_up) + (e * args.i + j) * args.dm;
      },
      args.dm, args.w_gate);
  float acc[Cfg::kMI][Cfg::kNI][4] = {};
  MainLoop<Cfg, false, false>(smem, load_a, load_b, args.dm, acc);
  const int warp_n = (threadIdx.x / 32) % Cfg::kWN;
#pragma unroll
  for (int mi = 0; mi < Cfg::kMI; ++mi) {
#pragma unroll
    for (int ni = 0; ni < Cfg::kNI / 2; ++ni) {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t r = m0 + FragRow<Cfg>(mi, q);
        const int64_t j = j0 + warp_n * kHalf + ni * 8 + (threadIdx.x % 4) * 2 + q % 2;
        if (r >= rows || j >= args.i) continue;
        const float g = acc[mi][ni][q], u = acc[mi][ni + Cfg::kNI / 2][q];
        const int64_t p = off + r;
        const float silu = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
        args.h[p * args.i + j] = __float2bfloat16_rn(__fmul_rn(silu, u));
        if (args.gate_out != nullptr) {
          const int64_t o = int64_t{args.row_of[p]} * args.i + j;
          args.gate_out[o] = g;
          args.up_out[o] = u;
        }
      }
    }
  }
}

// c[out_row(p), n] (+)= Σ_k a[p, k] · B_e[n, k] (kBTrans = false: B_e [N, K], the NT forward
// down projection) or Σ_k a[p, k] · B_e[k, n] (kBTrans: B_e [K, N], the backward's dY·W).
struct RowsArgs {
  Groups g;
  RowSource a;        // [*, K] bf16
  const uint16_t* b;  // expert e's matrix at b + e · b_stride, bf16
  int64_t ldb, b_stride, n, k;
  float* c;  // f32, row stride ldc
  int64_t ldc;
  const int32_t* c_rows;  // grouped row -> output row, or null (identity)
  bool accumulate;
};

template <int kBM, int kWM, bool kBTrans>
__global__ void __launch_bounds__(kGemmThreads) RowsGemmKernel(const RowsArgs args) {
  using Cfg = TileConfig<kBM, kWM, false, kBTrans>;
  extern __shared__ __align__(16) uint16_t smem[];
  int e;
  int64_t m0;
  if (!FindTile(args.g.tile_off, args.g.num_experts, blockIdx.y, kBM, e, m0)) return;
  const int64_t off = args.g.offsets[e], rows = args.g.offsets[e + 1] - off;
  const int64_t n0 = int64_t{blockIdx.x} * kGemmBN;
  const uint16_t* be = args.b + e * args.b_stride;
  RowsLoader<kBM> load_a;
  load_a.Init([&](int r) { return m0 + r < rows ? args.a.Row(off + m0 + r) : nullptr; }, args.k,
              args.a.base);
  float acc[Cfg::kMI][Cfg::kNI][4] = {};
  if constexpr (kBTrans) {
    const TransLoader<kGemmBN> load_b{be + n0, args.ldb, args.k, args.n - n0};
    MainLoop<Cfg, false, true>(smem, load_a, load_b, args.k, acc);
  } else {
    RowsLoader<kGemmBN> load_b;
    load_b.Init([&](int r) { return n0 + r < args.n ? be + (n0 + r) * args.ldb : nullptr; }, args.k,
                be);
    MainLoop<Cfg, false, false>(smem, load_a, load_b, args.k, acc);
  }
#pragma unroll
  for (int mi = 0; mi < Cfg::kMI; ++mi) {
#pragma unroll
    for (int ni = 0; ni < Cfg::kNI; ++ni) {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t r = m0 + FragRow<Cfg>(mi, q), col = n0 + FragCol<Cfg>(ni, q);
        if (r >= rows || col >= args.n) continue;
        const int64_t p = off + r;
        float* c = args.c + (args.c_rows != nullptr ? args.c_rows[p] : p) * args.ldc + col;
        *c = args.accumulate ? *c + acc[mi][ni][q] : acc[mi][ni][q];
      }
    }
  }
}

// dW_e[m, n] += Σ_{p in expert e, ascending} a[p, m] · b[p, n]: one fp32 accumulator per element
// over the expert's rows, added to dW once (experts without rows are left untouched).
struct WeightGradArgs {
  const int32_t* offsets;
  const uint16_t* a;  // [N, M] grouped rows, bf16
  int64_t lda;
  const uint16_t* b;  // [N, Ncols] grouped rows, bf16
  int64_t ldb, m, n;
  float* dw;  // [E, M, Ncols] f32
};

inline constexpr int kWeightGradBM = 128;

__global__ void __launch_bounds__(kGemmThreads) WeightGradKernel(const WeightGradArgs args) {
  using Cfg = TileConfig<kWeightGradBM, 2, true, true>;
  extern __shared__ __align__(16) uint16_t smem[];
  const int e = blockIdx.z;
  const int64_t off = args.offsets[e], rows = args.offsets[e + 1] - off;
  if (rows == 0) return;
  const int64_t m0 = int64_t{blockIdx.y} * kWeightGradBM, n0 = int64_t{blockIdx.x} * kGemmBN;
  const TransLoader<kWeightGradBM> load_a{args.a + off * args.lda + m0, args.lda, rows,
                                          args.m - m0};
  const TransLoader<kGemmBN> load_b{args.b + off * args.ldb + n0, args.ldb, rows, args.n - n0};
  float acc[Cfg::kMI][Cfg::kNI][4] = {};
  MainLoop<Cfg, true, true>(smem, load_a, load_b, rows, acc);
  float* dw = args.dw + int64_t{e} * args.m * args.n;
#pragma unroll
  for (int mi = 0; mi < Cfg::kMI; ++mi) {
#pragma unroll
    for (int ni = 0; ni < Cfg::kNI; ++ni) {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t r = m0 + FragRow<Cfg>(mi, q), col = n0 + FragCol<Cfg>(ni, q);
        if (r < args.m && col < args.n) dw[r * args.n + col] += acc[mi][ni][q];
      }
    }
  }
}

}  // namespace tandem::kernels::cuda::moe

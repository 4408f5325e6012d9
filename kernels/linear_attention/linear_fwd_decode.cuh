// Internal to kernels/linear_attention (include from .cu files only): one decode step for bf16 q,
// k, v. Each (sequence, head) is split over kSplit blocks by state / output column slices of kW
// columns (its four blocks adjacent in the grid at D = 128, so the open chunk's keys they all
// stage come from L2 after the first); a block holds 16 KB of fp32 state, ~40 KB of shared memory,
// and issues all its state loads before anything waits on them. It stages bf16 of its state
// slice, the open chunk's keys (all columns: the scores need them) and its slice of the values —
// rows before open_len read, the new row i = open_len where the forward stages it, zeros for what
// the forward masks — and runs the forward's routines on the row tile of i: ChunkP, then
// OutputTile for its columns. When the chunk fills, it advances its state columns with
// BoundaryTile and NextState, element for element the scan's arithmetic.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/core/cuda_device.cuh"
#include "kernels/linear_attention/linear_attention_mma.cuh"
#include "kernels/linear_attention/linear_fwd_output.cuh"

namespace tandem::kernels::cuda::linear {

struct TcDecodeArgs {
  int h;
  float scale;
  const bf16 *q, *k, *v;
  FloatPtr o;
  const float* pow;
  float *state, *open_k, *open_v;  // [B, H, D, D], [B, C, H, D] x2
  const int32_t* open_len;
};

__device__ __forceinline__ void StoreBf16x4(bf16* dst, float4 x) {
  *reinterpret_cast<uint2*>(dst) = make_uint2(Pack(x.x, x.y), Pack(x.z, x.w));
}

inline constexpr int kDecWarps = 4, kDecThreads = 32 * kDecWarps;

template <int kD>
struct DecodeShape {
  using L = TcLayout<kD>;
  static constexpr int kW = kD < 32 ? kD : 32;           // state / output columns per block
  static constexpr int kSplit = kD / kW;                 // blocks per (sequence, head)
  static constexpr int kLdw = kW + 8;                    // v and S slice stride
  static constexpr int kS4 = kD * kW / 4 / kDecThreads;  // float4 state pieces per thread
  static_assert(kW == 8 * kDecWarps && kS4 * 4 * kDecThreads == kD * kW, "one n-tile per warp");
  // k [kC][kLdr], q [16][kLdr] (the row tile only), v [kC][kLdw], s [kD][kLdw], p [16][kLdp].
  static constexpr size_t kBf16 = (kC + 16) * L::kLdr + kC * kLdw + kD * kLdw + 16 * L::kLdp;
  static constexpr size_t kBytes = sizeof(bf16) * kBf16 + sizeof(float) * (kC + 4);

  // The routines address q and p by chunk row (16m..16m+15); only that tile is stored, so their
  // pointers are set 16m rows back, which stays inside the buffers before them (k before q, q, v
  // and s before p: at least 48 rows of either stride).
  __device__ static TcSmem<kD> Carve(void* base, int m) {
    TcSmem<kD> s;
    s.ldv = s.lds = kLdw;
    s.k = static_cast<bf16*>(base);
    bf16* q = s.k + kC * L::kLdr;
    s.v = q + 16 * L::kLdr;
    s.s = s.v + kC * kLdw;
    bf16* p = s.s + kD * kLdw;
    s.pw = reinterpret_cast<float*>(p + 16 * L::kLdp);
    s.q = q - 16 * m * L::kLdr;
    s.p = p - 16 * m * L::kLdp;
    return s;
  }
};

// Rows 0 .. 16(m+1)−1 of the open chunk: k all columns, v columns c0 .. c0 + kW − 1 (row i the
// new token's, whose columns c0.. are also appended to open_k, open_v by this block; rows past i
// zeros), and the q row tile of rows 16m.. (only row i non-zero).
template <int kD>
__device__ __forceinline__ void StageDecodeSlice(const TcDecodeArgs& a, const TcSmem<kD>& s,
                                                 int seq, int head, int i, int c0) {
  using L = TcLayout<kD>;
  using Sh = DecodeShape<kD>;
  constexpr int kQ = kD / 4, kQw = Sh::kW / 4;  // 4-element pieces per row, per slice row
  const int m = i / 16, ld = a.h * kD;
  const int64_t row = (int64_t{seq} * a.h + head) * kD;
  const int64_t open0 = int64_t{seq} * kC * ld + head * kD;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  auto widen = [](const bf16* p) {
    return make_float4(__bfloat162float(p[0]), __bfloat162float(p[1]), __bfloat162float(p[2]),
                       __bfloat162float(p[3]));
  };
#pragma unroll 4
  for (int idx = threadIdx.x; idx < 16 * (m + 1) * kQ; idx += kDecThreads) {
    const int j = idx / kQ, c = 4 * (idx % kQ);
    float4 x = zero;
    if (j < i) {
      x = *reinterpret_cast<const float4*>(a.open_k + open0 + j * ld + c);  // bf16 values, exact
    } else if (j == i) {
      x = widen(a.k + row + c);
      if (c >= c0 && c < c0 + Sh::kW) {
        *reinterpret_cast<float4*>(a.open_k + open0 + j * ld + c) = x;
      }
    }
    StoreBf16x4(s.k + j * L::kLdr + c, x);
  }
#pragma unroll 4
  for (int idx = threadIdx.x; idx < 16 * (m + 1) * kQw; idx += kDecThreads) {
    const int j = idx / kQw, c = 4 * (idx % kQw);
    float4 x = zero;
    if (j < i) {
      x = *reinterpret_cast<const float4*>(a.open_v + open0 + j * ld + c0 + c);
    } else if (j == i) {
      x = widen(a.v + row + c0 + c);
      *reinterpret_cast<float4*>(a.open_v + open0 + j * ld + c0 + c) = x;
    }
    StoreBf16x4(s.v + j * Sh::kLdw + c, x);
  }
  for (int idx = threadIdx.x; idx < 16 * kQ; idx += kDecThreads) {
    const int j = 16 * m + idx / kQ, c = 4 * (idx % kQ);
    uint2 x = make_uint2(0u, 0u);
    if (j == i) x = *reinterpret_cast<const uint2*>(a.q + row + c);
    *reinterpret_cast<uint2*>(s.q + j * L::kLdr + c) = x;
  }
}

// S ← λ^C·S + (the chunk's boundary sum) for the block's columns c0.., 16 × 8 tiles over the warps.
template <int kD>
__device__ __forceinline__ void DecodeAdvance(const TcSmem<kD>& s, float pow_c, float* state,
                                              int c0) {
  using L = TcLayout<kD>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  float ps[kC / 16][4];
  KeyScales(s.pw, ps);
  constexpr int kNt = DecodeShape<kD>::kW / 8;
  for (int tile = warp; tile < (kD / 16) * kNt; tile += kDecWarps) {
    const int mi = tile / kNt, nt = tile % kNt;
    float sum[1][4];
    BoundaryTile<1>(s.k + 16 * mi, L::kLdr, s.v + 8 * nt, s.ldv, ps, sum);
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      float2* p =
          reinterpret_cast<float2*>(state + (16 * mi + g + 8 * (e / 2)) * kD + c0 + 8 * nt + 2 * t);
      const float2 x = *p;
      *p = make_float2(NextState(pow_c, x.x, sum[0][e]), NextState(pow_c, x.y, sum[0][e + 1]));
    }
  }
}

// Grid B·H·kSplit: columns c0 = kW·(blockIdx.x % kSplit) of one decode step of one (sequence,
// head).
template <int kD>
__global__ void __launch_bounds__(kDecThreads, 4) DecodeKernelTc(TcDecodeArgs a) {
  using Sh = DecodeShape<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int sh = blockIdx.x / Sh::kSplit, c0 = blockIdx.x % Sh::kSplit * Sh::kW;
  const int seq = sh / a.h, head = sh % a.h, i = a.open_len[seq], m = i / 16;
  const TcSmem<kD> s = Sh::Carve(smem_raw, m);
  const int warp = threadIdx.x / 32;
  const int64_t row = int64_t{sh} * kD;  // in q, k, v, o
  float* state = a.state + row * kD;
  constexpr int kQw = Sh::kW / 4;
  float4 sv[Sh::kS4];
#pragma unroll
  for (int u = 0; u < Sh::kS4; ++u) {
    const int piece = threadIdx.x + u * kDecThreads;
    sv[u] = *reinterpret_cast<const float4*>(state + piece / kQw * kD + c0 + 4 * (piece % kQw));
  }
  StageDecodeSlice<kD>(a, s, seq, head, i, c0);
  LoadPowers(a.pow, head, s.pw);
#pragma unroll
  for (int u = 0; u < Sh::kS4; ++u) {
    const int piece = threadIdx.x + u * kDecThreads;
    StoreBf16x4(s.s + piece / kQw * Sh::kLdw + 4 * (piece % kQw), sv[u]);
  }
  __syncthreads();
  ChunkP<kD>(s, m, warp, kDecWarps);
  __syncthreads();
  OutputTile<kD, 1>(s, a.scale, m, 8 * warp, [&](int r, int b, float x0, float x1) {
    if (r == i) Store2(a.o, row + c0 + b, x0, x1);
  });
  if (i + 1 < kC) return;  // uniform: the chunk is still open
  DecodeAdvance<kD>(s, a.pow[head * (kC + 1) + kC], state, c0);
}

template <int kD>
cudaError_t LaunchDecodeTc(cudaStream_t stream, const TcDecodeArgs& a, int batch) {
  using Sh = DecodeShape<kD>;
  constexpr int smem = static_cast<int>(Sh::kBytes);
  const cudaError_t e = AllowSmem<&DecodeKernelTc<kD>>(smem);
  if (e != cudaSuccess) return e;
  const unsigned blocks = static_cast<unsigned>(batch * a.h * Sh::kSplit);
  DecodeKernelTc<kD><<<blocks, kDecThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::linear

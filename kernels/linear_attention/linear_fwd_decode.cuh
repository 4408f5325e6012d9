// Internal to kernels/linear_attention (include from .cu files only): one decode step for bf16 q,
// k, v. One block per (sequence, head) streams the fp32 state once (all of its loads issued before
// anything waits on them), stages it as bf16(S) with the open chunk's k, v and the new row where
// the forward stages them (row i = open_len of the chunk, zeros for what the forward masks), and
// runs the forward's routines: ChunkP for the row tile, OutputTile with the columns spread over
// all warps. When the chunk fills, the same block advances the state with BoundaryTile and
// NextState, element for element the scan's arithmetic.
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

// Rows 0 .. 16(m+1)−1 of the open chunk's k, v (row i the new token's, which is also appended to
// open_k, open_v; rows past i zeros) and the q tile of rows 16m.. (only row i non-zero).
template <int kD>
__device__ __forceinline__ void StageDecodeRows(const TcDecodeArgs& a, const TcSmem<kD>& s, int seq,
                                                int head, int i) {
  using L = TcLayout<kD>;
  constexpr int kQ = kD / 4;  // 4-element pieces per row
  const int m = i / 16, ld = a.h * kD;
  const int64_t row = (int64_t{seq} * a.h + head) * kD;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int idx = threadIdx.x; idx < 16 * (m + 1) * kQ; idx += kOutThreads) {
    const int j = idx / kQ, c = 4 * (idx % kQ);
    const int64_t open = (int64_t{seq} * kC + j) * ld + head * kD + c;
    float4 kx = zero, vx = zero;
    if (j < i) {
      kx = *reinterpret_cast<const float4*>(a.open_k + open);  // bf16 values, exact
      vx = *reinterpret_cast<const float4*>(a.open_v + open);
    } else if (j == i) {
      const bf16 *kp = a.k + row + c, *vp = a.v + row + c;
      kx = make_float4(__bfloat162float(kp[0]), __bfloat162float(kp[1]), __bfloat162float(kp[2]),
                       __bfloat162float(kp[3]));
      vx = make_float4(__bfloat162float(vp[0]), __bfloat162float(vp[1]), __bfloat162float(vp[2]),
                       __bfloat162float(vp[3]));
      *reinterpret_cast<float4*>(a.open_k + open) = kx;
      *reinterpret_cast<float4*>(a.open_v + open) = vx;
    }
    StoreBf16x4(s.k + j * L::kLdr + c, kx);
    StoreBf16x4(s.v + j * L::kLdr + c, vx);
  }
  for (int idx = threadIdx.x; idx < 16 * kQ; idx += kOutThreads) {
    const int j = 16 * m + idx / kQ, c = 4 * (idx % kQ);
    uint2 x = make_uint2(0u, 0u);
    if (j == i) x = *reinterpret_cast<const uint2*>(a.q + row + c);
    *reinterpret_cast<uint2*>(s.q + j * L::kLdr + c) = x;
  }
}

// S ← λ^C·S + (the chunk's boundary sum), 16 × 8 tiles spread over the warps.
template <int kD>
__device__ __forceinline__ void DecodeAdvance(const TcSmem<kD>& s, float pow_c, float* state) {
  using L = TcLayout<kD>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  float ps[kC / 16][4];
  KeyScales(s.pw, ps);
  constexpr int kNt = kD / 8;
  for (int tile = warp; tile < (kD / 16) * kNt; tile += kOutWarps) {
    const int mi = tile / kNt, nt = tile % kNt;
    float sum[1][4];
    BoundaryTile<1>(s.k + 16 * mi, L::kLdr, s.v + 8 * nt, L::kLdr, ps, sum);
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      float2* p =
          reinterpret_cast<float2*>(state + (16 * mi + g + 8 * (e / 2)) * kD + 8 * nt + 2 * t);
      const float2 x = *p;
      *p = make_float2(NextState(pow_c, x.x, sum[0][e]), NextState(pow_c, x.y, sum[0][e + 1]));
    }
  }
}

// Grid B·H: one decode step of one (sequence, head).
template <int kD>
__global__ void __launch_bounds__(kOutThreads, 2) DecodeKernelTc(TcDecodeArgs a) {
  using L = TcLayout<kD>;
  constexpr int kS4 = kD * kD / 4 / kOutThreads;  // float4 pieces of the state per thread
  constexpr int kDecN = kD >= 128 ? kD / 64 : 1;  // n-tiles per warp
  constexpr int kActive = kD / (8 * kDecN);       // warps with columns
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const TcSmem<kD> s = TcSmem<kD>::Carve(smem_raw);
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h, i = a.open_len[seq], m = i / 16;
  const int warp = threadIdx.x / 32;
  const int64_t row = (int64_t{seq} * a.h + head) * kD;  // in q, k, v, o
  float* state = a.state + row * kD;
  float4 sv[kS4];
#pragma unroll
  for (int u = 0; u < kS4; ++u) {
    sv[u] = reinterpret_cast<const float4*>(state)[threadIdx.x + u * kOutThreads];
  }
  StageDecodeRows<kD>(a, s, seq, head, i);
  LoadPowers(a.pow, head, s.pw);
#pragma unroll
  for (int u = 0; u < kS4; ++u) {
    const int e = 4 * (threadIdx.x + u * kOutThreads);
    StoreBf16x4(s.s + e / kD * L::kLdr + e % kD, sv[u]);
  }
  __syncthreads();
  ChunkP<kD>(s, m, warp, kOutWarps);
  __syncthreads();
  if (warp < kActive) {
    OutputTile<kD, kDecN>(s, a.scale, m, warp * 8 * kDecN, [&](int r, int b, float x0, float x1) {
      if (r == i) Store2(a.o, row + b, x0, x1);
    });
  }
  if (i + 1 < kC) return;  // uniform: the chunk is still open
  DecodeAdvance<kD>(s, a.pow[head * (kC + 1) + kC], state);
}

template <int kD>
cudaError_t LaunchDecodeTc(cudaStream_t stream, const TcDecodeArgs& a, int batch) {
  constexpr int smem = static_cast<int>(TcSmem<kD>::kBytes);
  const cudaError_t e = AllowSmem<&DecodeKernelTc<kD>>(smem);
  if (e != cudaSuccess) return e;
  DecodeKernelTc<kD><<<static_cast<unsigned>(batch * a.h), kOutThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::linear

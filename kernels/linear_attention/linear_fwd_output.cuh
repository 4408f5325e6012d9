// Internal to kernels/linear_attention (include from .cu files only): the output kernel of the
// tensor-core forward and the forward's launch. One block per (chunk, head) stages q, k, v and the
// chunk-start bf16(S) written by the scan (cp.async), computes the decayed causal weights P
// (ChunkP, split over the two warps of a row tile) and then o = s·(λ^{i+1}·q·bf16(S) + P·V)
// (OutputTile, 16 rows × D/2 columns per warp). The decode runs the same two routines.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/core/cuda_device.cuh"
#include "kernels/linear_attention/linear_attention_mma.cuh"
#include "kernels/linear_attention/linear_fwd_scan.cuh"
#include "kernels/linear_attention/linear_fwd_timing.cuh"

namespace tandem::kernels::cuda::linear {

inline constexpr int kOutWarps = 8, kOutThreads = 32 * kOutWarps;

__device__ __forceinline__ void Store2(FloatPtr o, int64_t i, float x0, float x1) {
  if (o.bf16) {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(o.p) + i) = __floats2bfloat162_rn(x0, x1);
  } else {
    *reinterpret_cast<float2*>(static_cast<float*>(o.p) + i) = make_float2(x0, x1);
  }
}

__device__ __forceinline__ void LoadPowers(const float* pow, int head, float* pw) {
  for (int i = threadIdx.x; i <= kC; i += blockDim.x) pw[i] = pow[head * (kC + 1) + i];
}

// q, k, v rows of the chunk (zeros from row n on) and its bf16 start state into s.
template <int kD>
__device__ __forceinline__ void StageOutputChunk(const TcFwdArgs& a, const TcSmem<kD>& s,
                                                 const ChunkItem& it, int head) {
  using L = TcLayout<kD>;
  constexpr int kV = kD / 8;  // 16-byte pieces per row
  for (int idx = threadIdx.x; idx < kC * kV; idx += kOutThreads) {
    const int j = idx / kV, c = 8 * (idx % kV);
    bf16 *q = s.q + j * L::kLdr + c, *k = s.k + j * L::kLdr + c, *v = s.v + j * L::kLdr + c;
    if (j < it.n) {
      const int64_t off = (int64_t{it.row0} + j) * a.h * kD + head * kD + c;
      CpAsync16(q, a.q + off);
      CpAsync16(k, a.k + off);
      CpAsync16(v, a.v + off);
    } else {
      const uint4 zero{0, 0, 0, 0};
      *reinterpret_cast<uint4*>(q) = zero;
      *reinterpret_cast<uint4*>(k) = zero;
      *reinterpret_cast<uint4*>(v) = zero;
    }
  }
  const bf16* sb = a.sb + (int64_t{it.chunk} * a.h + head) * kD * kD;
  for (int idx = threadIdx.x; idx < kD * kV; idx += kOutThreads) {
    const int r = idx / kV, c = 8 * (idx % kV);
    CpAsync16(s.s + r * L::kLdr + c, sb + r * kD + c);
  }
  CpAsyncCommit();
}

// Grid (NC, H): the outputs of one chunk and head.
template <int kD>
__global__ void __launch_bounds__(kOutThreads, 2) OutputKernelTc(TcFwdArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const TcSmem<kD> s = TcSmem<kD>::Carve(smem_raw);
  const ChunkItem it = a.items[blockIdx.x];
  const int head = blockIdx.y, warp = threadIdx.x / 32, m = warp % 4, half = warp / 4;
  StageOutputChunk<kD>(a, s, it, head);
  LoadPowers(a.pow, head, s.pw);
  CpAsyncWait<0>();
  __syncthreads();
  ChunkP<kD>(s, m, half, 2);
  __syncthreads();
  const int64_t ld = int64_t{a.h} * kD;
  OutputTile<kD, kD / 16>(s, a.scale, m, half * (kD / 2), [&](int i, int b, float x0, float x1) {
    if (i < it.n) Store2(a.o, (it.row0 + i) * ld + head * kD + b, x0, x1);
  });
}

template <int kD>
cudaError_t LaunchForwardTc(cudaStream_t stream, const TcFwdArgs& a, int batch, int num_chunks) {
  using S = ScanShape<kD>;
  constexpr int scan_smem = static_cast<int>(S::kBytes);
  constexpr int out_smem = static_cast<int>(TcSmem<kD>::kBytes);
  cudaError_t e = AllowSmem<&ScanKernelTc<kD>>(scan_smem);
  if (e != cudaSuccess) return e;
  e = AllowSmem<&OutputKernelTc<kD>>(out_smem);
  if (e != cudaSuccess) return e;
  FwdPhaseEvents* ev = ForwardPhaseEvents();
  if (ev != nullptr) cudaEventRecord(ev->start, stream);
  ScanKernelTc<kD><<<dim3(batch * a.h, S::kTiles), kScanThreads, scan_smem, stream>>>(a);
  if (ev != nullptr) cudaEventRecord(ev->scanned, stream);
  OutputKernelTc<kD><<<dim3(num_chunks, a.h), kOutThreads, out_smem, stream>>>(a);
  if (ev != nullptr) cudaEventRecord(ev->done, stream);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::linear

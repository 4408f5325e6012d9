// Internal to kernels/linear_attention (include from .cu files only): the CUDA-core kernels for
// f32 q, k, v (bf16 inputs take the tensor-core kernels of linear_fwd_*.cuh): boundary sums
// of full chunks, the in-order state scan, chunk outputs, and decode, all built from the fp32
// pieces of linear_attention_chunk.cuh. Blocks are (chunk, head) for the forward and (sequence,
// head) for decode; no reduction is split across threads.
#pragma once

#include <cuda_runtime.h>

#include "kernels/core/cuda_device.cuh"
#include "kernels/core/kernel_smem.h"
#include "kernels/linear_attention/linear_attention_chunk.cuh"

namespace tandem::kernels::cuda::linear {
struct FwdArgs {
  int h;
  float scale;
  FloatPtr q, k, v, o;
  const float* pow;        // [H, C + 1]
  const ChunkItem* items;  // [NC]
  const int* seq_chunk;    // [B + 1]: chunks of sequence b are seq_chunk[b] .. seq_chunk[b+1]
  const float* init;       // [B, H, D, D] or null
  float* states;           // [NC, H, D, D] chunk-start states
  float* sums;             // [NC, H, D, D] boundary sums of full chunks
  float* boundary;         // [B, H, D, D] or null
};

// dst[r][e] (row stride ldd, or transposed: dst[e][r] with stride kC) = src row r of head `head`,
// for r < n; zeros for n ≤ r < kC.
template <int kD, bool kTranspose>
__device__ void LoadRows(FloatPtr src, int64_t row0, int ld, int head, int n, float* dst, int ldd) {
  for (int idx = threadIdx.x; idx < kC * kD; idx += blockDim.x) {
    const int r = idx / kD, e = idx % kD;
    const float x = r < n ? src.Load((row0 + r) * ld + int64_t{head} * kD + e) : 0.0f;
    if constexpr (kTranspose) {
      dst[e * kC + r] = x;
    } else {
      dst[r * ldd + e] = x;
    }
  }
}

// Phase 1: boundary sums of full chunks.
template <int kD>
__global__ void __launch_bounds__(kThreads) BoundaryKernel(FwdArgs a) {
  extern __shared__ __align__(16) float smem[];
  const ChunkSmem<kD> s = ChunkSmem<kD>::Carve(smem);
  const ChunkItem it = a.items[blockIdx.x];
  const int head = blockIdx.y;
  if (it.n < kC) return;
  const float* pow = a.pow + head * (kC + 1);
  LoadRows<kD, false>(a.k, it.row0, a.h * kD, head, kC, s.k, ChunkSmem<kD>::kLdk);
  LoadRows<kD, false>(a.v, it.row0, a.h * kD, head, kC, s.v, kD);
  __syncthreads();
  for (int idx = threadIdx.x; idx < kC * kD; idx += blockDim.x) {
    const int j = idx / kD, e = idx % kD;
    float& x = s.k[j * ChunkSmem<kD>::kLdk + e];
    x = __fmul_rn(pow[kC - 1 - j], x);
  }
  __syncthreads();
  float* out = a.sums + (int64_t{it.chunk} * a.h + head) * kD * kD;
  linear::BoundarySum<kD>(s, [&](int r, int c, float x) { out[r * kD + c] = x; });
}

// Phase 2: per (sequence, head), state elements walk the chunks in order.
template <int kD>
__global__ void ScanKernel(FwdArgs a) {
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h;
  const int e = blockIdx.y * blockDim.x + threadIdx.x;
  if (e >= kD * kD) return;
  const float pow_c = a.pow[head * (kC + 1) + kC];
  const int64_t dd = kD * kD;
  float st = a.init != nullptr ? a.init[(int64_t{seq} * a.h + head) * dd + e] : 0.0f;
  for (int c = a.seq_chunk[seq]; c < a.seq_chunk[seq + 1]; ++c) {
    const int64_t off = (int64_t{c} * a.h + head) * dd + e;
    a.states[off] = st;
    if (a.items[c].n == kC) st = linear::NextState(pow_c, st, a.sums[off]);
  }
  if (a.boundary != nullptr) a.boundary[(int64_t{seq} * a.h + head) * dd + e] = st;
}

// Phase 3: the outputs of one chunk from its start state.
template <int kD>
__global__ void __launch_bounds__(kThreads) OutputKernel(FwdArgs a) {
  constexpr int kGroups = kThreads / kD, kRows = kC / kGroups;
  extern __shared__ __align__(16) float smem[];
  const ChunkSmem<kD> s = ChunkSmem<kD>::Carve(smem);
  const ChunkItem it = a.items[blockIdx.x];
  const int head = blockIdx.y, ld = a.h * kD;
  const float* pow = a.pow + head * (kC + 1);
  LoadRows<kD, true>(a.q, it.row0, ld, head, it.n, s.qt, kC);
  LoadRows<kD, false>(a.k, it.row0, ld, head, it.n, s.k, ChunkSmem<kD>::kLdk);
  LoadRows<kD, false>(a.v, it.row0, ld, head, it.n, s.v, kD);
  __syncthreads();
  for (int idx = threadIdx.x; idx < kC * kC; idx += blockDim.x) {
    const int r = idx / kC, j = idx % kC;
    if (r < it.n && j <= r) linear::WeightedScore<kD>(s, pow, r, j);
  }
  __syncthreads();
  const int b = threadIdx.x % kD, r0 = threadIdx.x / kD * kRows;
  const float* state = a.states + (int64_t{it.chunk} * a.h + head) * kD * kD;
  float inter[kRows];
  linear::InterRows<kD, kRows>(s, r0, state, b, inter);
#pragma unroll
  for (int rr = 0; rr < kRows; ++rr) {
    const int r = r0 + rr;
    if (r < it.n) {
      a.o.Store((it.row0 + int64_t{r}) * ld + head * kD + b,
                linear::OutputElement<kD>(s, pow, a.scale, r, b, inter[rr]));
    }
  }
}

struct DecodeArgs {
  int h;
  float scale;
  FloatPtr q, k, v, o;
  const float* pow;
  float *state, *open_k, *open_v;  // [B, H, D, D], [B, C, H, D] x2
  int32_t* open_len;               // read and advanced (CountInAndAdvance)
};

// One decode step of one (sequence, head): row i = open_len of the open chunk.
template <int kD>
__global__ void __launch_bounds__(kThreads) DecodeKernel(DecodeArgs a) {
  extern __shared__ __align__(16) float smem[];
  const ChunkSmem<kD> s = ChunkSmem<kD>::Carve(smem);
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h, i = OpenLenOf(a.open_len + seq);
  const int ld = a.h * kD;
  const float* pow = a.pow + head * (kC + 1);
  const int64_t row = (int64_t{seq} * a.h + head) * kD;  // in q, k, v, o
  const int64_t open_row0 = int64_t{seq} * kC;           // row 0 of the open chunk
  float* state = a.state + (int64_t{seq} * a.h + head) * kD * kD;
  for (int e = threadIdx.x; e < kD; e += blockDim.x) {
    a.open_k[(open_row0 + i) * ld + head * kD + e] = a.k.Load(row + e);
    a.open_v[(open_row0 + i) * ld + head * kD + e] = a.v.Load(row + e);
    s.qt[e * kC + i] = a.q.Load(row + e);
  }
  __syncthreads();  // global writes of this block are visible to it after the barrier
  const FloatPtr ok{a.open_k, false}, ov{a.open_v, false};
  LoadRows<kD, false>(ok, open_row0, ld, head, i + 1, s.k, ChunkSmem<kD>::kLdk);
  LoadRows<kD, false>(ov, open_row0, ld, head, i + 1, s.v, kD);
  __syncthreads();
  if (threadIdx.x == 0) CountInAndAdvance(a.open_len + seq, a.h, i);
  for (int j = threadIdx.x; j <= i; j += blockDim.x) linear::WeightedScore<kD>(s, pow, i, j);
  __syncthreads();
  if (threadIdx.x < kD) {
    const int b = threadIdx.x;
    float inter[1];
    linear::InterRows<kD, 1>(s, i, state, b, inter);
    a.o.Store(row + b, linear::OutputElement<kD>(s, pow, a.scale, i, b, inter[0]));
  }
  if (i + 1 < kC) return;  // uniform: the chunk is still open
  __syncthreads();         // the state is no longer read
  for (int idx = threadIdx.x; idx < kC * kD; idx += blockDim.x) {
    const int j = idx / kD, e = idx % kD;
    float& x = s.k[j * ChunkSmem<kD>::kLdk + e];
    x = __fmul_rn(pow[kC - 1 - j], x);
  }
  __syncthreads();
  const float pow_c = pow[kC];
  linear::BoundarySum<kD>(s, [&](int r, int c, float x) {
    state[r * kD + c] = linear::NextState(pow_c, state[r * kD + c], x);
  });
}

template <int kD>
cudaError_t LaunchForward(cudaStream_t stream, const FwdArgs& a, int num_chunks, int batch) {
  constexpr int smem = static_cast<int>(ChunkSmem<kD>::kBytes);
  cudaError_t e = AllowSmem<&BoundaryKernel<kD>>(smem);
  if (e == cudaSuccess) e = AllowSmem<&OutputKernel<kD>>(smem);
  if (e != cudaSuccess) return e;
  const dim3 chunks(num_chunks, a.h);
  BoundaryKernel<kD><<<chunks, kThreads, smem, stream>>>(a);
  ScanKernel<kD>
      <<<dim3(batch * a.h, (kD * kD + kThreads - 1) / kThreads), kThreads, 0, stream>>>(a);
  OutputKernel<kD><<<chunks, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

template <int kD>
cudaError_t LaunchDecode(cudaStream_t stream, const DecodeArgs& a, int batch) {
  constexpr int smem = static_cast<int>(ChunkSmem<kD>::kBytes);
  const cudaError_t e = AllowSmem<&DecodeKernel<kD>>(smem);
  if (e != cudaSuccess) return e;
  DecodeKernel<kD><<<static_cast<unsigned>(batch * a.h), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::linear

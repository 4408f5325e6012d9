// Internal to kernels/linear_attention (include from .cu files only): the tensor-core kernels for
// bf16 q, k, v. The forward is two launches: ScanKernelTc walks each (sequence, head, boundary
// tile) through its chunks in order (eight chunks' boundary sums at a time by mma, then the fp32
// recurrence S ← λ^C·S + sum element by element) and writes the chunk-start states, or only every
// G-th one; OutputKernelTc takes G consecutive chunks of one head from that state, computes their
// outputs and re-derives the states in between with the same boundary routine and recurrence
// (same bits, so G only changes speed). DecodeKernelTc runs the same two warp routines for its row.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/core/cuda_device.cuh"
#include "kernels/linear_attention/linear_attention_mma.cuh"

namespace tandem::kernels::cuda::linear {

inline constexpr int kScanSlots = kTcWarps;  // chunks whose boundary sums a scan step computes

struct TcFwdArgs {
  int h;
  float scale;
  int group;  // G: chunks per output block
  const bf16 *q, *k, *v;
  FloatPtr o;
  const float* pow;        // [H, C + 1]
  const ChunkItem* items;  // [NC]
  const int* seq_chunk;    // [B + 1]: chunks of sequence b are seq_chunk[b] .. seq_chunk[b+1]
  const int* seq_group;    // [B + 1]: groups likewise
  const int2* groups;      // [NG]: first chunk, chunk count
  const float* init;       // [B, H, D, D] or null
  float* states;           // [NC, H, D, D] chunk-start states, or null
  float* ckpt;             // [NG, H, D, D] group-start states when states is null
  float* boundary;         // [B, H, D, D] or null
};

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

template <int kD>
struct ScanSmem {
  using L = TcLayout<kD>;
  static constexpr int kSlot = (L::kBr + L::kBc) * L::kLdt;  // scaled kᵀ rows, then vᵀ rows
  static constexpr int kElems = L::kBr * L::kBc;
  static constexpr size_t kBytes =
      sizeof(bf16) * kScanSlots * kSlot + sizeof(float) * (kScanSlots * kElems + kC + 4);
};

// Stages rows a0.. of the scaled kᵀ and rows b0.. of vᵀ of the full chunks base .. base + 7.
template <int kD>
__device__ void StageScanSlots(const TcFwdArgs& a, int head, int base, int end, int a0, int b0,
                               const float* pw, bf16* slots) {
  using L = TcLayout<kD>;
  constexpr int kVa = L::kBr / 8, kVb = L::kBc / 8, kV = kVa + kVb;  // 16-byte vectors per row
  for (int idx = threadIdx.x; idx < kScanSlots * kC * kV; idx += kTcThreads) {
    const int slot = idx / (kC * kV), j = idx / kV % kC, vec = idx % kV;
    if (base + slot >= end) continue;
    const ChunkItem it = a.items[base + slot];
    if (it.n < kC) continue;
    bf16* kt = slots + slot * ScanSmem<kD>::kSlot;
    bf16* vt = kt + L::kBr * L::kLdt;
    const int64_t row = (int64_t{it.row0} + j) * a.h * kD + head * kD;
    const bool is_k = vec < kVa;
    const int col = is_k ? 8 * vec : 8 * (vec - kVa);
    const uint4 raw =
        *reinterpret_cast<const uint4*>(is_k ? a.k + row + a0 + col : a.v + row + b0 + col);
    const bf16* x = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      if (is_k) {
        kt[(col + u) * L::kLdt + j] = ScaledKey(pw[kC - 1 - j], __bfloat162float(x[u]));
      } else {
        vt[(col + u) * L::kLdt + j] = x[u];
      }
    }
  }
}

// Grid (B·H, 8 boundary tiles). Warp w computes the tile's boundary sum of chunk base + w.
template <int kD>
__global__ void __launch_bounds__(kTcThreads) ScanKernelTc(TcFwdArgs a) {
  using L = TcLayout<kD>;
  using S = ScanSmem<kD>;
  constexpr int kPer = (S::kElems + kTcThreads - 1) / kTcThreads;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* slots = reinterpret_cast<bf16*>(smem_raw);
  float* sums = reinterpret_cast<float*>(slots + kScanSlots * S::kSlot);
  float* pw = sums + kScanSlots * S::kElems;
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h, tile = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int a0 = (tile % L::kRowTiles) * L::kBr, b0 = (tile / L::kRowTiles) * L::kBc;
  const int64_t dd = kD * kD, sh = int64_t{seq} * a.h + head;
  LoadPowers(a.pow, head, pw);
  int gidx[kPer];
  float st[kPer];
#pragma unroll
  for (int x = 0; x < kPer; ++x) {
    const int e = threadIdx.x + x * kTcThreads;
    gidx[x] = (a0 + e / L::kBc) * kD + b0 + e % L::kBc;
    st[x] = e < S::kElems && a.init != nullptr ? a.init[sh * dd + gidx[x]] : 0.0f;
  }
  const float pow_c = a.pow[head * (kC + 1) + kC];
  const int begin = a.seq_chunk[seq], end = a.seq_chunk[seq + 1];
  for (int base = begin; base < end; base += kScanSlots) {
    __syncthreads();  // the previous step's slots and sums are consumed; pw is written
    StageScanSlots<kD>(a, head, base, end, a0, b0, pw, slots);
    __syncthreads();
    if (base + warp < end && a.items[base + warp].n == kC) {
      float acc[L::kBm][L::kBn][4];
      const bf16* kt = slots + warp * S::kSlot;
      BoundaryWarp<kD>(kt, kt + L::kBr * L::kLdt, acc);
      float* out = sums + warp * S::kElems;
#pragma unroll
      for (int mi = 0; mi < L::kBm; ++mi) {
#pragma unroll
        for (int nt = 0; nt < L::kBn; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            out[(16 * mi + lane / 4 + 8 * (e / 2)) * L::kBc + 8 * nt + 2 * (lane % 4) + e % 2] =
                acc[mi][nt][e];
          }
        }
      }
    }
    __syncthreads();
    for (int slot = 0; slot < kScanSlots && base + slot < end; ++slot) {
      const int c = base + slot, rel = c - begin;
      float* dst = nullptr;
      if (a.states != nullptr) {
        dst = a.states + (int64_t{c} * a.h + head) * dd;
      } else if (rel % a.group == 0) {
        dst = a.ckpt + (int64_t{a.seq_group[seq] + rel / a.group} * a.h + head) * dd;
      }
      const bool full = a.items[c].n == kC;
#pragma unroll
      for (int x = 0; x < kPer; ++x) {
        const int e = threadIdx.x + x * kTcThreads;
        if (e >= S::kElems) continue;
        if (dst != nullptr) dst[gidx[x]] = st[x];
        if (full) st[x] = NextState(pow_c, st[x], sums[slot * S::kElems + e]);
      }
    }
  }
  if (a.boundary == nullptr) return;
#pragma unroll
  for (int x = 0; x < kPer; ++x) {
    if (threadIdx.x + x * kTcThreads < S::kElems) a.boundary[sh * dd + gidx[x]] = st[x];
  }
}

// q, k row-major, vᵀ (and the scaled kᵀ when `scaled`) of one chunk; rows ≥ n are zeros.
template <int kD>
__device__ void StageChunk(const TcFwdArgs& a, const TcSmem<kD>& s, const ChunkItem& it, int head,
                           bool scaled) {
  using L = TcLayout<kD>;
  constexpr int kV = kD / 8;
  for (int idx = threadIdx.x; idx < kC * kV; idx += kTcThreads) {
    const int j = idx / kV, c = 8 * (idx % kV);
    uint4 qr{0, 0, 0, 0}, kr = qr, vr = qr;
    if (j < it.n) {
      const int64_t off = (int64_t{it.row0} + j) * a.h * kD + head * kD + c;
      qr = *reinterpret_cast<const uint4*>(a.q + off);
      kr = *reinterpret_cast<const uint4*>(a.k + off);
      vr = *reinterpret_cast<const uint4*>(a.v + off);
    }
    *reinterpret_cast<uint4*>(s.q + j * L::kLdr + c) = qr;
    *reinterpret_cast<uint4*>(s.k + j * L::kLdr + c) = kr;
    const bf16* kx = reinterpret_cast<const bf16*>(&kr);
    const bf16* vx = reinterpret_cast<const bf16*>(&vr);
#pragma unroll
    for (int u = 0; u < 8; ++u) s.vt[(c + u) * L::kLdt + j] = vx[u];
    if (scaled) {
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        s.kt[(c + u) * L::kLdt + j] = ScaledKey(s.pw[kC - 1 - j], __bfloat162float(kx[u]));
      }
    }
  }
}

// S ← λ^C·S + (this warp's boundary tile of the chunk staged in s).
template <int kD>
__device__ __forceinline__ void AdvanceState(const TcSmem<kD>& s, float pow_c,
                                             float (&st)[TcLayout<kD>::kBm][TcLayout<kD>::kBn][4]) {
  using L = TcLayout<kD>;
  const int warp = threadIdx.x / 32;
  float sum[L::kBm][L::kBn][4];
  BoundaryWarp<kD>(s.kt + (warp % L::kRowTiles) * L::kBr * L::kLdt,
                   s.vt + (warp / L::kRowTiles) * L::kBc * L::kLdt, sum);
#pragma unroll
  for (int mi = 0; mi < L::kBm; ++mi) {
#pragma unroll
    for (int nt = 0; nt < L::kBn; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) st[mi][nt][e] = NextState(pow_c, st[mi][nt][e], sum[mi][nt][e]);
    }
  }
}

// Warp w's boundary tile of a [kD, kD] state in global memory, to or from fragments.
template <int kD, bool kStore>
__device__ __forceinline__ void StateIo(float* g,
                                        float (&st)[TcLayout<kD>::kBm][TcLayout<kD>::kBn][4]) {
  using L = TcLayout<kD>;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int mi = 0; mi < L::kBm; ++mi) {
#pragma unroll
    for (int nt = 0; nt < L::kBn; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        float2* p = reinterpret_cast<float2*>(g + StateIndex<kD>(warp, mi, nt, e));
        if constexpr (kStore) {
          *p = make_float2(st[mi][nt][e], st[mi][nt][e + 1]);
        } else {
          const float2 x = *p;
          st[mi][nt][e] = x.x, st[mi][nt][e + 1] = x.y;
        }
      }
    }
  }
}

// Grid (groups, H): the outputs of G consecutive chunks of one sequence and head.
template <int kD>
__global__ void __launch_bounds__(kTcThreads) OutputKernelTc(TcFwdArgs a) {
  using L = TcLayout<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const TcSmem<kD> s = TcSmem<kD>::Carve(smem_raw);
  const int2 grp = a.groups[blockIdx.x];
  const int head = blockIdx.y, warp = threadIdx.x / 32, ld = a.h * kD;
  const int64_t dd = kD * kD;
  LoadPowers(a.pow, head, s.pw);
  const float pow_c = a.pow[head * (kC + 1) + kC];
  float* start = a.states != nullptr ? a.states + (int64_t{grp.x} * a.h + head) * dd
                                     : a.ckpt + (int64_t{blockIdx.x} * a.h + head) * dd;
  float st[L::kBm][L::kBn][4];
  StateIo<kD, false>(start, st);
  for (int c = grp.x; c < grp.x + grp.y; ++c) {
    const ChunkItem it = a.items[c];
    const bool advance = c + 1 < grp.x + grp.y;  // then the chunk is full
    __syncthreads();  // the previous chunk's smem is consumed; pw is written
    StageChunk<kD>(a, s, it, head, advance);
    StoreStateBf16<kD>(st, warp, s.st);
    __syncthreads();
    OutputWarp<kD>(s, a.scale, warp % 4, warp / 4, [&](int i, int b, float x0, float x1) {
      if (i < it.n) Store2(a.o, (int64_t{it.row0} + i) * ld + head * kD + b, x0, x1);
    });
    if (advance) AdvanceState<kD>(s, pow_c, st);
  }
}

struct TcDecodeArgs {
  int h;
  float scale;
  const bf16 *q, *k, *v;
  FloatPtr o;
  const float* pow;
  float *state, *open_k, *open_v;  // [B, H, D, D], [B, C, H, D] x2
  const int32_t* open_len;
};

// One decode step of one (sequence, head): row i = open_len of the open chunk, staged where the
// forward stages it, with zeros for the rows and keys the forward would mask.
template <int kD>
__global__ void __launch_bounds__(kTcThreads) DecodeKernelTc(TcDecodeArgs a) {
  using L = TcLayout<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const TcSmem<kD> s = TcSmem<kD>::Carve(smem_raw);
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h, i = a.open_len[seq];
  const int warp = threadIdx.x / 32, ld = a.h * kD;
  const int64_t row = (int64_t{seq} * a.h + head) * kD;  // in q, k, v, o
  const int64_t open0 = int64_t{seq} * kC;               // row 0 of the open chunk
  float* state = a.state + row * kD;
  float st[L::kBm][L::kBn][4];
  StateIo<kD, false>(state, st);
  LoadPowers(a.pow, head, s.pw);
  const bf16 zero = __float2bfloat16_rn(0.0f);
  for (int idx = threadIdx.x; idx < kC * kD; idx += kTcThreads) {
    const int j = idx / kD, e = idx % kD;
    const int64_t open = (open0 + j) * ld + head * kD + e;
    bf16 qx = zero, kx = zero, vx = zero;
    if (j < i) {
      kx = __float2bfloat16_rn(a.open_k[open]);  // exact: open_k holds bf16 values
      vx = __float2bfloat16_rn(a.open_v[open]);
    } else if (j == i) {
      qx = a.q[row + e], kx = a.k[row + e], vx = a.v[row + e];
      a.open_k[open] = __bfloat162float(kx);
      a.open_v[open] = __bfloat162float(vx);
    }
    s.q[j * L::kLdr + e] = qx;
    s.k[j * L::kLdr + e] = kx;
    s.vt[e * L::kLdt + j] = vx;
  }
  StoreStateBf16<kD>(st, warp, s.st);
  __syncthreads();
  const int m = i / 16;
  if (warp % 4 == m) {
    OutputWarp<kD>(s, a.scale, m, warp / 4, [&](int r, int b, float x0, float x1) {
      if (r == i) Store2(a.o, row + b, x0, x1);
    });
  }
  if (i + 1 < kC) return;  // uniform: the chunk is still open
  for (int idx = threadIdx.x; idx < kC * kD; idx += kTcThreads) {
    const int j = idx / kD, e = idx % kD;
    s.kt[e * L::kLdt + j] = ScaledKey(s.pw[kC - 1 - j], __bfloat162float(s.k[j * L::kLdr + e]));
  }
  __syncthreads();
  AdvanceState<kD>(s, a.pow[head * (kC + 1) + kC], st);
  StateIo<kD, true>(state, st);
}

template <int kD>
cudaError_t LaunchForwardTc(cudaStream_t stream, const TcFwdArgs& a, int batch, int num_groups) {
  constexpr int scan_smem = static_cast<int>(ScanSmem<kD>::kBytes);
  constexpr int out_smem = static_cast<int>(TcSmem<kD>::kBytes);
  cudaError_t e = cudaFuncSetAttribute(&ScanKernelTc<kD>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, scan_smem);
  if (e != cudaSuccess) return e;
  e = cudaFuncSetAttribute(&OutputKernelTc<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           out_smem);
  if (e != cudaSuccess) return e;
  ScanKernelTc<kD><<<dim3(batch * a.h, kTcWarps), kTcThreads, scan_smem, stream>>>(a);
  OutputKernelTc<kD><<<dim3(num_groups, a.h), kTcThreads, out_smem, stream>>>(a);
  return cudaGetLastError();
}

template <int kD>
cudaError_t LaunchDecodeTc(cudaStream_t stream, const TcDecodeArgs& a, int batch) {
  constexpr int smem = static_cast<int>(TcSmem<kD>::kBytes);
  const cudaError_t e =
      cudaFuncSetAttribute(&DecodeKernelTc<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  DecodeKernelTc<kD><<<static_cast<unsigned>(batch * a.h), kTcThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::linear

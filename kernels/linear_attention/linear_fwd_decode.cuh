// Internal to kernels/linear_attention (include from .cu files only): one decode step for bf16 q,
// k, v. One block per (sequence, head) puts all of its reads in flight before it waits on any: the
// fp32 state by cp.async into a padded fp32 stage, the open chunk's k, v rows before open_len
// (bf16 values, stored in fp32 or bf16) into registers; L2 keeps the rows and lets the state go.
// It stages them as the forward does — bf16 k, v, the new row i = open_len where the forward has
// it, zeros for what the forward masks — runs ChunkP for the row tile of i while the state is
// still arriving, then each warp turns its own rows of the stage into bf16(S) in place and
// OutputTile runs with the columns over the warps. When the chunk fills, the block advances the
// fp32 state in global memory with BoundaryTile and NextState, element for element the scan's
// arithmetic. Only data movement differs from the forward, so decode returns the forward's bits.
// The step also advances open_len (CountInAndAdvance): one launch per step.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/core/cuda_device.cuh"
#include "kernels/linear_attention/linear_attention_mma.cuh"
#include "kernels/linear_attention/linear_fwd_output.cuh"
#include "kernels/linear_attention/linear_fwd_scan.cuh"

namespace tandem::kernels::cuda::linear {

// Open is how open_k, open_v store the open chunk's rows: fp32 or bf16, the same bf16 values.
template <typename Open>
struct TcDecodeArgs {
  int h;
  float scale;
  const bf16 *q, *k, *v;
  FloatPtr o;
  const float* pow;
  float* state;           // [B, H, D, D]
  Open *open_k, *open_v;  // [B, C, H, D] each
  int32_t* open_len;      // [B], read and advanced (CountInAndAdvance)
  int items;              // B·H (sequence, head) pairs
};

__device__ __forceinline__ void StoreBf16x4(bf16* dst, float4 x) {
  *reinterpret_cast<uint2*>(dst) = make_uint2(Pack(x.x, x.y), Pack(x.z, x.w));
}

// L2 policies: the state is read once per step and at batch 64 is already larger than L2, so it
// goes first and the open rows, which every step of the chunk reads again, stay.
__device__ __forceinline__ uint64_t EvictFirstPolicy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ uint64_t EvictLastPolicy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ void CpAsync16Hinted(void* smem, const void* gmem, uint64_t policy) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "l"(policy));
}

// Four bf16 values of an open row as two packed words, whichever way the row is stored; the fp32
// form holds bf16 values, so both conversions are exact.
__device__ __forceinline__ uint2 LoadOpen4(const bf16* p, uint64_t policy) {
  uint2 x;
  asm volatile("ld.global.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;\n"
               : "=r"(x.x), "=r"(x.y)
               : "l"(p), "l"(policy));
  return x;
}
__device__ __forceinline__ uint2 LoadOpen4(const float* p, uint64_t policy) {
  float4 x;
  asm volatile("ld.global.L2::cache_hint.v4.f32 {%0, %1, %2, %3}, [%4], %5;\n"
               : "=f"(x.x), "=f"(x.y), "=f"(x.z), "=f"(x.w)
               : "l"(p), "l"(policy));
  return make_uint2(Pack(x.x, x.y), Pack(x.z, x.w));
}
__device__ __forceinline__ void StoreOpen4(bf16* p, uint2 x) { *reinterpret_cast<uint2*>(p) = x; }
__device__ __forceinline__ void StoreOpen4(float* p, uint2 x) {
  *reinterpret_cast<float4*>(p) = make_float4(Lo(x.x), Hi(x.x), Lo(x.y), Hi(x.y));
}

template <int kD>
struct DecodeShape {
  using L = TcLayout<kD>;
  // Two blocks share an SM (shared memory); their warps are what hides the latency of the step's
  // dependent shared-memory and tensor-core work, so at kD = 128 a block has 16 (8 measured
  // 7 % / 6 % slower per step at batch 64 / 256 on the H200).
  static constexpr int kWarps = kD == 128 ? 16 : 8, kThreads = 32 * kWarps;
  static constexpr int kQ = kD / 4;               // float4 pieces per row
  static constexpr int kS4 = kD * kQ / kThreads;  // state pieces per thread
  static constexpr int kKv = kC * kQ / kThreads;  // open-chunk pieces per thread, of k and of v
  static_assert(kS4 * kThreads == kD * kQ && kKv * kThreads == kC * kQ, "whole pieces");
  // Piece p = threadIdx.x + kThreads·u lies in row p / kQ: a row's pieces belong to one warp.
  static_assert(32 % kQ == 0, "rows within a warp");
  // The fp32 stage [kD][kLdf]; bf16(S) overwrites it with stride kLds, so its row r starts where
  // the stage's row r does (the rows never cross: a warp converts its own rows), and the 16 bytes
  // of padding keep ldmatrix rows on distinct banks.
  static constexpr int kLdf = kD + 4, kLds = 2 * kLdf;
  static constexpr int kN = kD >= 128 ? kD / 64 : 1;  // OutputTile n-tiles per warp
  static constexpr int kActive = kD / (8 * kN);       // warps with output columns
  static_assert(kActive <= kWarps, "columns fit the warps");
  // stage fp32 [kD][kLdf]; k, v [kC][kLdr]; q [16][kLdr] (the row tile only); p [16][kLdp]; pw.
  static constexpr size_t kStage = size_t{kD} * kLdf;
  static constexpr size_t kBf16 = 2 * kC * L::kLdr + 16 * L::kLdr + 16 * L::kLdp;
  static constexpr size_t kBytes = sizeof(float) * (kStage + kC + 4) + sizeof(bf16) * kBf16;

  // The routines address q and p by chunk row (16m..16m+15); only that tile is stored, so their
  // pointers are set 16m rows back (never dereferenced there; still inside the block's buffers).
  __device__ static TcSmem<kD> Carve(void* base, int m) {
    TcSmem<kD> s;
    float* stage = static_cast<float*>(base);
    s.s = reinterpret_cast<bf16*>(stage);
    s.lds = kLds;
    s.k = reinterpret_cast<bf16*>(stage + kStage);
    s.v = s.k + kC * L::kLdr;
    s.ldv = L::kLdr;
    bf16* q = s.v + kC * L::kLdr;
    bf16* p = q + 16 * L::kLdr;
    s.pw = reinterpret_cast<float*>(p + 16 * L::kLdp);
    s.q = q - 16 * m * L::kLdr;
    s.p = p - 16 * m * L::kLdp;
    return s;
  }
};

// cp.async of the fp32 state [kD, kD] into the stage, one commit group.
template <int kD>
__device__ __forceinline__ void IssueState(const float* state, float* stage) {
  using Sh = DecodeShape<kD>;
  const uint64_t policy = EvictFirstPolicy();
#pragma unroll
  for (int u = 0; u < Sh::kS4; ++u) {
    const int piece = threadIdx.x + u * Sh::kThreads, r = piece / Sh::kQ, c = 4 * (piece % Sh::kQ);
    CpAsync16Hinted(stage + r * Sh::kLdf + c, state + r * kD + c, policy);
  }
  CpAsyncCommit();
}

// Waits for this thread's state pieces and rewrites them as bf16(S) in place. The pieces a thread
// reads are the ones it copied, and a row's pieces are one warp's, so the warp barrier between
// the reads and the writes is the only ordering needed.
template <int kD>
__device__ __forceinline__ void ConvertState(float* stage) {
  using Sh = DecodeShape<kD>;
  CpAsyncWait<0>();
  float4 x[Sh::kS4];
#pragma unroll
  for (int u = 0; u < Sh::kS4; ++u) {
    const int piece = threadIdx.x + u * Sh::kThreads, r = piece / Sh::kQ, c = 4 * (piece % Sh::kQ);
    x[u] = *reinterpret_cast<const float4*>(stage + r * Sh::kLdf + c);
  }
  __syncwarp();
  bf16* s = reinterpret_cast<bf16*>(stage);
#pragma unroll
  for (int u = 0; u < Sh::kS4; ++u) {
    const int piece = threadIdx.x + u * Sh::kThreads, r = piece / Sh::kQ, c = 4 * (piece % Sh::kQ);
    StoreBf16x4(s + r * Sh::kLds + c, x[u]);
  }
}

// Rows 0 .. 16(m+1)−1 of the open chunk's k, v (row i the new token's, which is also appended to
// open_k, open_v; rows past i zeros), the q tile of rows 16m.. (only row i non-zero) and the decay
// powers. Every global load is issued before the first store.
template <int kD, typename Open>
__device__ __forceinline__ void StageOpenChunk(const TcDecodeArgs<Open>& a, const TcSmem<kD>& s,
                                               int seq, int head, int i) {
  using L = TcLayout<kD>;
  using Sh = DecodeShape<kD>;
  constexpr int kQ = Sh::kQ;
  const int tid = threadIdx.x, m = i / 16, rows = 16 * (m + 1), ld = a.h * kD;
  const int64_t row = (int64_t{seq} * a.h + head) * kD;  // in q, k, v
  const int64_t open0 = int64_t{seq} * kC * ld + head * kD;
  Open* open_k = a.open_k + open0;  // row j at j·ld
  Open* open_v = a.open_v + open0;
  uint2 qx = make_uint2(0u, 0u);
  if (tid < kQ) qx = *reinterpret_cast<const uint2*>(a.q + row + 4 * tid);
  const float pwx = tid <= kC ? a.pow[head * (kC + 1) + tid] : 0.0f;
  const uint64_t policy = EvictLastPolicy();
  uint2 kx[Sh::kKv], vx[Sh::kKv];
#pragma unroll
  for (int u = 0; u < Sh::kKv; ++u) {
    const int piece = tid + u * Sh::kThreads, j = piece / kQ, c = 4 * (piece % kQ);
    kx[u] = vx[u] = make_uint2(0u, 0u);
    if (j < i) {
      kx[u] = LoadOpen4(open_k + j * ld + c, policy);
      vx[u] = LoadOpen4(open_v + j * ld + c, policy);
    } else if (j == i) {
      kx[u] = *reinterpret_cast<const uint2*>(a.k + row + c);
      vx[u] = *reinterpret_cast<const uint2*>(a.v + row + c);
    }
  }
  if (tid <= kC) s.pw[tid] = pwx;
  for (int idx = tid; idx < 16 * kQ; idx += Sh::kThreads) {
    const int r = 16 * m + idx / kQ;
    if (r != i) *reinterpret_cast<uint2*>(s.q + r * L::kLdr + 4 * (idx % kQ)) = make_uint2(0u, 0u);
  }
  if (tid < kQ) *reinterpret_cast<uint2*>(s.q + i * L::kLdr + 4 * tid) = qx;
#pragma unroll
  for (int u = 0; u < Sh::kKv; ++u) {
    const int piece = tid + u * Sh::kThreads, j = piece / kQ, c = 4 * (piece % kQ);
    if (j == i) {
      StoreOpen4(open_k + j * ld + c, kx[u]);
      StoreOpen4(open_v + j * ld + c, vx[u]);
    }
    if (j < rows) {
      StoreOpen4(s.k + j * L::kLdr + c, kx[u]);
      StoreOpen4(s.v + j * L::kLdr + c, vx[u]);
    }
  }
}

// S ← λ^C·S + (the chunk's boundary sum), 16 × 16 tiles over the warps, in place in global
// memory (each element read and written by one thread; the stage holds bf16(S) by now).
template <int kD>
__device__ __forceinline__ void DecodeAdvance(const TcSmem<kD>& s, float* state) {
  using L = TcLayout<kD>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  float ps[kC / 16][4];
  KeyScales(s.pw, ps);
  const float pow_c = s.pw[kC];
  constexpr int kNt = kD / 16;
  for (int tile = warp; tile < (kD / 16) * kNt; tile += DecodeShape<kD>::kWarps) {
    const int mi = tile / kNt, nt = tile % kNt;
    float sum[1][2][4];
    BoundaryTile<2>(s.k, L::kLdr, 16 * mi, s.v + 16 * nt, s.ldv, ps, sum);
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        float2* at = reinterpret_cast<float2*>(state + (16 * mi + g + 8 * (e / 2)) * kD + 16 * nt +
                                               8 * n + 2 * t);
        const float2 x = *at;
        *at = make_float2(NextState(pow_c, x.x, sum[0][n][e]),
                          NextState(pow_c, x.y, sum[0][n][e + 1]));
      }
    }
  }
}

// Grid B·H: one decode step of one (sequence, head).
template <int kD, typename Open>
__global__ void __launch_bounds__(DecodeShape<kD>::kThreads, 2)
    DecodeKernelTc(TcDecodeArgs<Open> a) {
  using Sh = DecodeShape<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h, warp = threadIdx.x / 32;
  const int i = OpenLenOf(a.open_len + seq), m = i / 16;
  const int64_t row = int64_t{blockIdx.x} * kD;  // in q, k, v, o
  float* state = a.state + row * kD;
  float* stage = reinterpret_cast<float*>(smem_raw);
  IssueState<kD>(state, stage);  // needs no open_len: in flight while it arrives
  const TcSmem<kD> s = Sh::Carve(smem_raw, m);
  StageOpenChunk<kD>(a, s, seq, head, i);
  __syncthreads();
  if (threadIdx.x == 0) CountInAndAdvance(a.open_len + seq, a.h, i);
  ChunkP<kD>(s, m, warp, Sh::kWarps);
  ConvertState<kD>(stage);
  __syncthreads();
  if (warp < Sh::kActive) {
    OutputTile<kD, Sh::kN>(s, a.scale, m, warp * 8 * Sh::kN, [&](int r, int b, float x0, float x1) {
      if (r == i) Store2(a.o, row + b, x0, x1);
    });
  }
  if (i + 1 == kC) DecodeAdvance<kD>(s, state);  // uniform: the chunk filled
}

template <int kD, typename Open>
cudaError_t LaunchDecodeTc(cudaStream_t stream, const TcDecodeArgs<Open>& a) {
  constexpr int smem = static_cast<int>(DecodeShape<kD>::kBytes);
  const cudaError_t e = AllowSmem<&DecodeKernelTc<kD, Open>>(smem);
  if (e != cudaSuccess) return e;
  DecodeKernelTc<kD, Open>
      <<<static_cast<unsigned>(a.items), DecodeShape<kD>::kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::linear

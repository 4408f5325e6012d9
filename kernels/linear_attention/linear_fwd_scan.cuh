// Internal to kernels/linear_attention (include from .cu files only): the state scan of the
// tensor-core forward (bf16 q, k, v). One block walks one (sequence, head, 32 × 32 state tile)
// through the sequence's chunks in order; each of its four warps owns a 16 × 16 slice of the tile
// in registers and applies S ← λ^C·S + Σ_j bf16(λ^{C−1−j} k_j)ᵀ v_j (BoundaryTile, then NextState)
// chunk after chunk, while cp.async keeps the next chunks' k, v columns in flight. It writes every
// chunk-start state as bf16 (what the output kernel's q·bf16(S) reads), in fp32 when chunk_states
// is asked for, and the boundary state. The per-element arithmetic is the decode's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/linear_attention/linear_attention_mma.cuh"

namespace tandem::kernels::cuda::linear {

struct TcFwdArgs {
  int h;
  float scale;
  const bf16 *q, *k, *v;
  FloatPtr o;
  const float* pow;        // [H, C + 1]
  const ChunkItem* items;  // [NC]
  const int* seq_chunk;    // [B + 1]: chunks of sequence b are seq_chunk[b] .. seq_chunk[b+1]
  const float* init;       // [B, H, D, D] or null
  bf16* sb;                // [NC, H, D, D] bf16 chunk-start states (always written)
  float* states;           // [NC, H, D, D] fp32 chunk-start states, or null
  float* boundary;         // [B, H, D, D] or null
};

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Raises kKernel's dynamic shared-memory limit to `bytes` once per device (the attribute call
// costs microseconds on every forward otherwise).
template <auto kKernel>
cudaError_t AllowSmem(int bytes) {
  static std::atomic<uint64_t> done{0};
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  const uint64_t bit = uint64_t{1} << (device & 63);
  if ((done.load(std::memory_order_acquire) & bit) != 0) return cudaSuccess;
  e = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) done.fetch_or(bit, std::memory_order_release);
  return e;
}

inline constexpr int kScanWarps = 4, kScanThreads = 32 * kScanWarps, kScanStages = 6;

template <int kD>
struct ScanShape {
  // Block tile rows (a), cols (b): 16 tiles per head at D = 128, so one sequence fills the GPU.
  static constexpr int kTa = 32, kTb = 32;
  static constexpr int kLdk = kTa + 8, kLdv = kTb + 8;
  static constexpr int kN = kTb / 16;  // n-tiles of a warp's 16 × kTb/2 slice
  static constexpr int kTilesB = kD / kTb, kTiles = (kD / kTa) * kTilesB;
  static constexpr int kSlot = kC * (kLdk + kLdv);  // bf16 elements of one chunk's k, v columns
  static constexpr size_t kBytes = sizeof(bf16) * kScanStages * kSlot;
};

// cp.async of the tile's k columns a0.. and v columns b0.. of the full chunk at packed row row0.
template <int kD>
__device__ __forceinline__ void IssueScanChunk(const TcFwdArgs& a, int64_t row0, int head, int a0,
                                               int b0, bf16* slot) {
  using S = ScanShape<kD>;
  constexpr int kVa = S::kTa / 8, kV = kVa + S::kTb / 8;  // 16-byte pieces per row
  for (int idx = threadIdx.x; idx < kC * kV; idx += kScanThreads) {
    const int j = idx / kV, p = idx % kV;
    const int64_t row = (row0 + j) * a.h * kD + head * kD;
    if (p < kVa) {
      CpAsync16(slot + j * S::kLdk + 8 * p, a.k + row + a0 + 8 * p);
    } else {
      CpAsync16(slot + kC * S::kLdk + j * S::kLdv + 8 * (p - kVa), a.v + row + b0 + 8 * (p - kVa));
    }
  }
}

// Grid (B·H, tiles): the chunks of one sequence in order for one head and state tile.
template <int kD>
__global__ void __launch_bounds__(kScanThreads) ScanKernelTc(TcFwdArgs a) {
  using S = ScanShape<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* slots = reinterpret_cast<bf16*>(smem_raw);
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int a0 = blockIdx.y / S::kTilesB * S::kTa, b0 = blockIdx.y % S::kTilesB * S::kTb;
  const int wa = 16 * (warp % 2), wb = (warp / 2) * (S::kTb / 2);  // warp slice in the tile
  const int64_t dd = kD * kD, sh = int64_t{seq} * a.h + head;
  const float* pow = a.pow + head * (kC + 1);
  const float pow_c = pow[kC];
  float ps[kC / 16][4];
  KeyScales(pow, ps);
  // Element (nt, e) of this lane: row a0 + wa + g + 8(e/2), column b0 + wb + 8nt + 2t + e%2.
  auto offset = [&](int nt, int e) {
    return (a0 + wa + g + 8 * (e / 2)) * kD + b0 + wb + 8 * nt + 2 * t + e % 2;
  };
  float st[S::kN][4];
#pragma unroll
  for (int nt = 0; nt < S::kN; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      float2 x = make_float2(0.0f, 0.0f);
      if (a.init != nullptr) x = *reinterpret_cast<const float2*>(a.init + sh * dd + offset(nt, e));
      st[nt][e] = x.x, st[nt][e + 1] = x.y;
    }
  }
  const int begin = a.seq_chunk[seq], end = a.seq_chunk[seq + 1];
  const int64_t row0 = end > begin ? a.items[begin].row0 : 0;
  const int full = end > begin && a.items[end - 1].n < kC ? end - begin - 1 : end - begin;
#pragma unroll
  for (int s = 0; s < kScanStages - 1; ++s) {
    if (s < full) IssueScanChunk<kD>(a, row0 + s * kC, head, a0, b0, slots + s * S::kSlot);
    CpAsyncCommit();
  }
  for (int rel = 0; rel < end - begin; ++rel) {
    CpAsyncWait<kScanStages - 2>();  // chunk rel's group has landed (this thread's part)
    __syncthreads();                 // everyone's part; the slot refilled next was consumed
    const int next = rel + kScanStages - 1;
    if (next < full) {
      IssueScanChunk<kD>(a, row0 + next * kC, head, a0, b0, slots + next % kScanStages * S::kSlot);
    }
    CpAsyncCommit();
    const int64_t base = (int64_t{begin + rel} * a.h + head) * dd;
#pragma unroll
    for (int nt = 0; nt < S::kN; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        *reinterpret_cast<__nv_bfloat162*>(a.sb + base + offset(nt, e)) =
            __floats2bfloat162_rn(st[nt][e], st[nt][e + 1]);
        if (a.states != nullptr) {
          *reinterpret_cast<float2*>(a.states + base + offset(nt, e)) =
              make_float2(st[nt][e], st[nt][e + 1]);
        }
      }
    }
    if (rel >= full) break;  // the sequence's partial last chunk: no state after it
    const bf16* slot = slots + rel % kScanStages * S::kSlot;
    float sum[S::kN][4];
    BoundaryTile<S::kN>(slot + wa, S::kLdk, slot + kC * S::kLdk + wb, S::kLdv, ps, sum);
#pragma unroll
    for (int nt = 0; nt < S::kN; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) st[nt][e] = NextState(pow_c, st[nt][e], sum[nt][e]);
    }
  }
  CpAsyncWait<0>();
  if (a.boundary == nullptr) return;
#pragma unroll
  for (int nt = 0; nt < S::kN; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      *reinterpret_cast<float2*>(a.boundary + sh * dd + offset(nt, e)) =
          make_float2(st[nt][e], st[nt][e + 1]);
    }
  }
}

}  // namespace tandem::kernels::cuda::linear

// Internal to kernels/linear_attention (include from .cu files only): the state scan of the
// tensor-core forward (bf16 q, k, v). One block walks one (sequence, head, 32 × 32 state tile)
// through the sequence's chunks in order; each of its four warps owns a 16 × 16 slice of the tile
// in registers. The chunks go kScanGroup at a time: the group's boundary sums
// Σ_j k_jᵀ bf16(λ^{C−1−j} v_j) (BoundaryTile) do not depend on the state, so their mma chains
// overlap, and only then does the serial S ← λ^C·S + sum (NextState) run through them in chunk
// order, while cp.async brings in the next group's k, v columns. It writes every chunk-start state
// as bf16 (what the output kernel's q·bf16(S) reads), in fp32 when chunk_states is asked for, and
// the boundary state. The per-element arithmetic and its order are the decode's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/core/kernel_smem.h"
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

// kScanGroup chunks per step (independent boundary sums, for instruction-level parallelism),
// kScanDepth steps in the cp.async ring: 80 KB of shared memory, two blocks per SM.
inline constexpr int kScanWarps = 4, kScanThreads = 32 * kScanWarps;
inline constexpr int kScanGroup = 4, kScanDepth = 2, kScanSlots = kScanGroup * kScanDepth;

template <int kD>
struct ScanShape {
  // Block tile rows (a), cols (b): 16 tiles per head at D = 128, so one sequence fills the GPU.
  static constexpr int kTa = 32, kTb = 32;
  static constexpr int kLdk = kTa + 8, kLdv = kTb + 8;
  static constexpr int kN = kTb / 16;  // n-tiles of a warp's 16 × kTb/2 slice
  static_assert(kN == 2, "StoreStateSlice pairs the two n-tiles of a 16 x 16 slice");
  static constexpr int kTilesB = kD / kTb, kTiles = (kD / kTa) * kTilesB;
  static constexpr int kSlot = kC * (kLdk + kLdv);  // bf16 elements of one chunk's k, v columns
  static constexpr size_t kBytes = sizeof(bf16) * kScanSlots * kSlot;
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

// One commit group: the full chunks first .. first + kScanGroup − 1 (those below `full`) into
// their ring slots. first is a multiple of kScanGroup.
template <int kD>
__device__ __forceinline__ void IssueScanGroup(const TcFwdArgs& a, int64_t row0, int head, int a0,
                                               int b0, int first, int full, bf16* slots) {
#pragma unroll
  for (int p = 0; p < kScanGroup; ++p) {
    if (first + p < full) {
      IssueScanChunk<kD>(a, row0 + int64_t{first + p} * kC, head, a0, b0,
                         slots + (first % kScanSlots + p) * ScanShape<kD>::kSlot);
    }
  }
  CpAsyncCommit();
}

// Stores a warp's 16 × 16 state slice (rows row0 + g, row0 + g + 8; lane columns 2t, 2t + 1 of
// n-tile 0 and 8 + 2t, 9 + 2t of n-tile 1 relative to col0) as bf16 to sb and, when states is
// non-null, as fp32. Lanes t and t ^ 1 swap a pair so that each stores four consecutive columns:
// even t columns 2t .. 2t + 3, odd t columns 6 + 2t .. 9 + 2t; the values are unchanged.
template <int kD>
__device__ __forceinline__ void StoreStateSlice(const float (&st)[2][4], bf16* sb, float* states,
                                                int row0, int col0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const bool odd = (t & 1) != 0;
  const int col = col0 + (odd ? 6 + 2 * t : 2 * t);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int off = (row0 + g + 8 * r) * kD + col;
    const uint32_t p0 = Pack(st[0][2 * r], st[0][2 * r + 1]);
    const uint32_t p1 = Pack(st[1][2 * r], st[1][2 * r + 1]);
    const uint32_t got = __shfl_xor_sync(0xffffffffu, odd ? p0 : p1, 1);
    *reinterpret_cast<uint2*>(sb + off) = odd ? make_uint2(got, p1) : make_uint2(p0, got);
    if (states != nullptr) {
      const float x0 = __shfl_xor_sync(0xffffffffu, odd ? st[0][2 * r] : st[1][2 * r], 1);
      const float x1 = __shfl_xor_sync(0xffffffffu, odd ? st[0][2 * r + 1] : st[1][2 * r + 1], 1);
      *reinterpret_cast<float4*>(states + off) =
          odd ? make_float4(x0, x1, st[1][2 * r], st[1][2 * r + 1])
              : make_float4(st[0][2 * r], st[0][2 * r + 1], x0, x1);
    }
  }
}

// A warp's 16 × 16 fp32 state slice at (row0, col0) in the mma accumulator layout: element (nt, e)
// of a lane is row row0 + g + 8(e/2), column col0 + 8nt + 2t + e%2. Zeros when src is null.
template <int kD>
__device__ __forceinline__ void LoadSlice(const float* src, int row0, int col0, float (&st)[2][4]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      float2 x = make_float2(0.0f, 0.0f);
      if (src != nullptr) {
        x = *reinterpret_cast<const float2*>(src + (row0 + g + 4 * e) * kD + col0 + 8 * nt + 2 * t);
      }
      st[nt][e] = x.x, st[nt][e + 1] = x.y;
    }
  }
}

template <int kD>
__device__ __forceinline__ void StoreSlice(const float (&st)[2][4], float* dst, int row0,
                                           int col0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      *reinterpret_cast<float2*>(dst + (row0 + g + 4 * e) * kD + col0 + 8 * nt + 2 * t) =
          make_float2(st[nt][e], st[nt][e + 1]);
    }
  }
}

// Grid (B·H, tiles): the chunks of one sequence in order for one head and state tile.
template <int kD>
__global__ void __launch_bounds__(kScanThreads, 2) ScanKernelTc(TcFwdArgs a) {
  using S = ScanShape<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* slots = reinterpret_cast<bf16*>(smem_raw);
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h;
  const int warp = threadIdx.x / 32;
  const int a0 = blockIdx.y / S::kTilesB * S::kTa, b0 = blockIdx.y % S::kTilesB * S::kTb;
  const int wa = 16 * (warp % 2), wb = (warp / 2) * (S::kTb / 2);  // warp slice in the tile
  const int64_t dd = kD * kD, sh = int64_t{seq} * a.h + head;
  const float* pow = a.pow + head * (kC + 1);
  const float pow_c = pow[kC];
  float ps[kC / 16][4];
  KeyScales(pow, ps);
  float st[S::kN][4];
  LoadSlice<kD>(a.init != nullptr ? a.init + sh * dd : nullptr, a0 + wa, b0 + wb, st);
  const int begin = a.seq_chunk[seq], count = a.seq_chunk[seq + 1] - begin;
  const int64_t row0 = count > 0 ? a.items[begin].row0 : 0;
  const int full = count > 0 && a.items[begin + count - 1].n < kC ? count - 1 : count;
#pragma unroll
  for (int s = 0; s < kScanDepth - 1; ++s) {
    IssueScanGroup<kD>(a, row0, head, a0, b0, s * kScanGroup, full, slots);
  }
  for (int first = 0; first < count; first += kScanGroup) {
    CpAsyncWait<kScanDepth - 2>();  // this group's chunks have landed (this thread's part)
    __syncthreads();                // everyone's part; the slots refilled next were consumed
    IssueScanGroup<kD>(a, row0, head, a0, b0, first + (kScanDepth - 1) * kScanGroup, full, slots);
    // Sums of all the group's slots, also those past `full` (stale data, never used): no branch
    // between the independent mma chains.
    float sum[kScanGroup][1][S::kN][4];
#pragma unroll
    for (int p = 0; p < kScanGroup; ++p) {
      const bf16* slot = slots + (first % kScanSlots + p) * S::kSlot;
      BoundaryTile<S::kN>(slot, S::kLdk, wa, slot + kC * S::kLdk + wb, S::kLdv, ps, sum[p]);
    }
#pragma unroll
    for (int p = 0; p < kScanGroup; ++p) {
      const int rel = first + p;
      if (rel >= count) break;
      const int64_t base = (int64_t{begin + rel} * a.h + head) * dd;
      StoreStateSlice<kD>(st, a.sb + base, a.states != nullptr ? a.states + base : nullptr, a0 + wa,
                          b0 + wb);
      if (rel >= full) break;  // the sequence's partial last chunk: no state after it
#pragma unroll
      for (int nt = 0; nt < S::kN; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] = NextState(pow_c, st[nt][e], sum[p][0][nt][e]);
      }
    }
  }
  CpAsyncWait<0>();
  if (a.boundary != nullptr) StoreSlice<kD>(st, a.boundary + sh * dd, a0 + wa, b0 + wb);
}

}  // namespace tandem::kernels::cuda::linear

// Internal to kernels/linear_attention (include from .cu files only): the state scan of the
// tensor-core forward (bf16 q, k, v). One block walks one (sequence, head, kTa × kTb state tile)
// through the sequence's chunks in order; each warp owns a kWa × kWb slice of the tile in
// registers. The chunks go kGroup at a time: the group's boundary sums
// Σ_j bf16(λ^{C−1−j} k_j)ᵀ v_j (BoundaryTile) do not depend on the state, so their mma chains
// overlap, and only then does the serial S ← λ^C·S + sum (NextState) run through them in chunk
// order, while cp.async brings in later groups' k, v columns (kDepth − 1 groups in flight). It
// writes every chunk-start state as bf16 (what the output kernel's q·bf16(S) reads), in fp32 when
// chunk_states is asked for, and the boundary state. Every state element sees the decode's
// operations in the decode's order whatever the tile: the shape only moves data and ownership.
// A block reads D/kTb copies of its k columns and D/kTa of its v columns per chunk, so at D = 128
// the 64 × 64 tile reads k and v twice each where 32 × 32 tiles read them four times.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

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

// A scan shape: block tile kTa (state rows: k columns) × kTb (state columns: v columns), warp
// slice kWa × kWb (kWa/16 row tiles, kWb/8 n-tiles), kGroup chunks per step, kDepth steps in the
// cp.async ring, kMinBlocks blocks per SM for __launch_bounds__.
template <int kD, int kTa_, int kTb_, int kWa_, int kWb_, int kGroup_, int kDepth_, int kMinBlocks_>
struct ScanTile {
  static constexpr int kTa = kTa_, kTb = kTb_, kWa = kWa_, kWb = kWb_;
  static constexpr int kGroup = kGroup_, kDepth = kDepth_, kMinBlocks = kMinBlocks_;
  static constexpr int kMa = kWa / 16, kN = kWb / 8;  // row tiles, n-tiles of a warp's slice
  static constexpr int kWarpsA = kTa / kWa, kWarps = kWarpsA * (kTb / kWb);
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kSlots = kGroup * kDepth;
  static constexpr int kLdk = kTa + 8, kLdv = kTb + 8;
  static constexpr int kTilesB = kD / kTb, kTiles = (kD / kTa) * kTilesB;
  static constexpr int kSlot = kC * (kLdk + kLdv);  // bf16 elements of one chunk's k, v columns
  static constexpr size_t kBytes = sizeof(bf16) * kSlots * kSlot;
  static_assert(kD % kTa == 0 && kD % kTb == 0 && kTa % kWa == 0 && kTb % kWb == 0, "tiling");
  static_assert(kWa % 16 == 0 && (kN == 1 || kN % 2 == 0), "16-row tiles; one n-tile or pairs");
  static_assert(kDepth >= 2 && kBytes <= 227 * 1024, "a ring of >= 2 steps in shared memory");
};

// The forward's shape (LaunchForwardTc launches ScanKernelTc<kD> with kScanThreads threads):
// 64 × 64 tiles at D = 128 (4 per head: k, v read twice, not four times as with 32 × 32), eight
// warps of 16 × 32, three steps of four chunks in the ring (221 KB, one block per SM, eight
// chunks in flight while a step computes). Smaller heads keep 32 × 32 tiles, in eight warps of
// 16 × 8.
inline constexpr int kScanThreads = 256;
template <int kD>
using ScanShape = std::conditional_t<kD == 128, ScanTile<kD, 64, 64, 16, 32, 4, 3, 1>,
                                     ScanTile<kD, 32, 32, 16, 8, 4, 2, 2>>;
static_assert(ScanShape<128>::kThreads == kScanThreads && ScanShape<64>::kThreads == kScanThreads &&
              ScanShape<32>::kThreads == kScanThreads);

// cp.async of the tile's k columns a0.. and v columns b0.. of the full chunk at packed row row0.
template <int kD, class S>
__device__ __forceinline__ void IssueScanChunk(const TcFwdArgs& a, int64_t row0, int head, int a0,
                                               int b0, bf16* slot) {
  constexpr int kVa = S::kTa / 8, kV = kVa + S::kTb / 8;  // 16-byte pieces per row
  for (int idx = threadIdx.x; idx < kC * kV; idx += S::kThreads) {
    const int j = idx / kV, p = idx % kV;
    const int64_t row = (row0 + j) * a.h * kD + head * kD;
    if (p < kVa) {
      CpAsync16(slot + j * S::kLdk + 8 * p, a.k + row + a0 + 8 * p);
    } else {
      CpAsync16(slot + kC * S::kLdk + j * S::kLdv + 8 * (p - kVa), a.v + row + b0 + 8 * (p - kVa));
    }
  }
}

// One commit group: the full chunks first .. first + kGroup − 1 (those below `full`) into their
// ring slots. first is a multiple of kGroup.
template <int kD, class S>
__device__ __forceinline__ void IssueScanGroup(const TcFwdArgs& a, int64_t row0, int head, int a0,
                                               int b0, int first, int full, bf16* slots) {
#pragma unroll
  for (int p = 0; p < S::kGroup; ++p) {
    if (first + p < full) {
      IssueScanChunk<kD, S>(a, row0 + int64_t{first + p} * kC, head, a0, b0,
                            slots + (first % S::kSlots + p) * S::kSlot);
    }
  }
  CpAsyncCommit();
}

// Stores a warp's 16 × 8·kN state rows (rows row0 + g, row0 + g + 8; lane columns 8nt + 2t,
// 8nt + 2t + 1 relative to col0) as bf16 to sb and, when states is non-null, as fp32. Per pair of
// n-tiles, lanes t and t ^ 1 swap a pair so that each stores four consecutive columns: even t
// columns 2t .. 2t + 3, odd t columns 6 + 2t .. 9 + 2t of the pair; the values are unchanged.
template <int kD, int kN>
__device__ __forceinline__ void StoreStateSlice(const float (&st)[kN][4], bf16* sb, float* states,
                                                int row0, int col0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  if constexpr (kN == 1) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int off = (row0 + g + 8 * r) * kD + col0 + 2 * t;
      *reinterpret_cast<uint32_t*>(sb + off) = Pack(st[0][2 * r], st[0][2 * r + 1]);
      if (states != nullptr) {
        *reinterpret_cast<float2*>(states + off) = make_float2(st[0][2 * r], st[0][2 * r + 1]);
      }
    }
  } else {
    const bool odd = (t & 1) != 0;
#pragma unroll
    for (int np = 0; np < kN / 2; ++np) {
      const float(&s0)[4] = st[2 * np];
      const float(&s1)[4] = st[2 * np + 1];
      const int col = col0 + 16 * np + (odd ? 6 + 2 * t : 2 * t);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int off = (row0 + g + 8 * r) * kD + col;
        const uint32_t p0 = Pack(s0[2 * r], s0[2 * r + 1]);
        const uint32_t p1 = Pack(s1[2 * r], s1[2 * r + 1]);
        const uint32_t got = __shfl_xor_sync(0xffffffffu, odd ? p0 : p1, 1);
        *reinterpret_cast<uint2*>(sb + off) = odd ? make_uint2(got, p1) : make_uint2(p0, got);
        if (states != nullptr) {
          const float x0 = __shfl_xor_sync(0xffffffffu, odd ? s0[2 * r] : s1[2 * r], 1);
          const float x1 = __shfl_xor_sync(0xffffffffu, odd ? s0[2 * r + 1] : s1[2 * r + 1], 1);
          *reinterpret_cast<float4*>(states + off) =
              odd ? make_float4(x0, x1, s1[2 * r], s1[2 * r + 1])
                  : make_float4(s0[2 * r], s0[2 * r + 1], x0, x1);
        }
      }
    }
  }
}

// A warp's 16 × 8·kN fp32 state rows at (row0, col0) in the mma accumulator layout: element
// (nt, e) of a lane is row row0 + g + 8(e/2), column col0 + 8nt + 2t + e%2. Zeros when src is null.
template <int kD, int kN>
__device__ __forceinline__ void LoadSlice(const float* src, int row0, int col0,
                                          float (&st)[kN][4]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < kN; ++nt) {
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

template <int kD, int kN>
__device__ __forceinline__ void StoreSlice(const float (&st)[kN][4], float* dst, int row0,
                                           int col0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < kN; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      *reinterpret_cast<float2*>(dst + (row0 + g + 4 * e) * kD + col0 + 8 * nt + 2 * t) =
          make_float2(st[nt][e], st[nt][e + 1]);
    }
  }
}

// Grid (B·H, S::kTiles), S::kThreads threads: the chunks of one sequence in order for one head and
// state tile. Row tile m of a warp covers state rows a0 + wa + 16m.
template <int kD, class S = ScanShape<kD>>
__global__ void __launch_bounds__(S::kThreads, S::kMinBlocks) ScanKernelTc(TcFwdArgs a) {
  constexpr int kMa = S::kMa, kN = S::kN, kG = S::kGroup;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* slots = reinterpret_cast<bf16*>(smem_raw);
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h;
  const int warp = threadIdx.x / 32;
  const int a0 = blockIdx.y / S::kTilesB * S::kTa, b0 = blockIdx.y % S::kTilesB * S::kTb;
  const int wa = S::kWa * (warp % S::kWarpsA), wb = S::kWb * (warp / S::kWarpsA);
  const int64_t dd = kD * kD, sh = int64_t{seq} * a.h + head;
  const float* pow = a.pow + head * (kC + 1);
  const float pow_c = pow[kC];
  float ps[kC / 16][4];
  KeyScales(pow, ps);
  float st[kMa][kN][4];
#pragma unroll
  for (int m = 0; m < kMa; ++m) {
    LoadSlice<kD, kN>(a.init != nullptr ? a.init + sh * dd : nullptr, a0 + wa + 16 * m, b0 + wb,
                      st[m]);
  }
  const int begin = a.seq_chunk[seq], count = a.seq_chunk[seq + 1] - begin;
  const int64_t row0 = count > 0 ? a.items[begin].row0 : 0;
  const int full = count > 0 && a.items[begin + count - 1].n < kC ? count - 1 : count;
#pragma unroll
  for (int s = 0; s < S::kDepth - 1; ++s) {
    IssueScanGroup<kD, S>(a, row0, head, a0, b0, s * kG, full, slots);
  }
  for (int first = 0; first < count; first += kG) {
    CpAsyncWait<S::kDepth - 2>();  // this group's chunks have landed (this thread's part)
    __syncthreads();               // everyone's part; the slots refilled next were consumed
    IssueScanGroup<kD, S>(a, row0, head, a0, b0, first + (S::kDepth - 1) * kG, full, slots);
    // Sums of all the group's slots, also those past `full` (stale data, never used): no branch
    // between the independent mma chains.
    float sum[kG][kMa][kN][4];
#pragma unroll
    for (int p = 0; p < kG; ++p) {
      const bf16* slot = slots + (first % S::kSlots + p) * S::kSlot;
#pragma unroll
      for (int m = 0; m < kMa; ++m) {
        BoundaryTile<kN>(slot + wa + 16 * m, S::kLdk, slot + kC * S::kLdk + wb, S::kLdv, ps,
                         sum[p][m]);
      }
    }
#pragma unroll
    for (int p = 0; p < kG; ++p) {
      const int rel = first + p;
      if (rel >= count) break;
      const int64_t base = (int64_t{begin + rel} * a.h + head) * dd;
#pragma unroll
      for (int m = 0; m < kMa; ++m) {
        StoreStateSlice<kD, kN>(st[m], a.sb + base, a.states != nullptr ? a.states + base : nullptr,
                                a0 + wa + 16 * m, b0 + wb);
      }
      if (rel >= full) break;  // the sequence's partial last chunk: no state after it
#pragma unroll
      for (int m = 0; m < kMa; ++m) {
#pragma unroll
        for (int nt = 0; nt < kN; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e)
            st[m][nt][e] = NextState(pow_c, st[m][nt][e], sum[p][m][nt][e]);
        }
      }
    }
  }
  CpAsyncWait<0>();
  if (a.boundary != nullptr) {
#pragma unroll
    for (int m = 0; m < kMa; ++m) {
      StoreSlice<kD, kN>(st[m], a.boundary + sh * dd, a0 + wa + 16 * m, b0 + wb);
    }
  }
}

// Scan shapes the benchmark times side by side at D = 128 (kernels compiled in the library only;
// see LaunchScanVariant in linear_attention.cu). Variant 0 is ScanShape<128>.
inline constexpr int kScanVariants = 7;
const char* ScanVariantName(int variant);
// Launches variant `variant` of the scan (D = 128) on stream for a's batch sequences: the same
// outputs (sb, states, boundary) as the forward's scan, bit for bit.
cudaError_t LaunchScanVariant(cudaStream_t stream, const TcFwdArgs& a, int batch, int variant);

}  // namespace tandem::kernels::cuda::linear

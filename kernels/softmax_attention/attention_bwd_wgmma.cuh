// Internal to the attention backward (include from softmax_attention_bwd.cu only): the sm_90a
// wgmma backward for bf16 at D = 128, FlashAttention-3 style. One block per (128 keys, query head,
// sequence), two warpgroups of 64 keys each; K and V stay in smem, Q, dO, lse and δ tiles of 64
// query rows stream through a three-stage cp.async ring (the forward's 128-byte-swizzled layout).
// Per step a warpgroup forms Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (both operands from smem), so Pᵀ and dSᵀ
// are already A fragments for dV += Pᵀ·dO and dK += dSᵀ·Q; dSᵀ also goes to smem (bf16) for
// dQ = dS·K (each warpgroup 64 of the 128 dims).
// No atomics in any sum: dQ tile partials are added in ascending key-tile order and dK/dV partials
// in ascending head order, each add waiting on a counter the previous contributor releases; blocks
// take items by ticket in a list where every item's predecessors come first, so waits end.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/cuda_device.cuh"
#include "kernels/softmax_attention/attention_bwd_tiles.cuh"
#include "kernels/softmax_attention/attention_wgmma.cuh"

namespace tandem::kernels::cuda::attention_bwd {

using bf16 = __nv_bfloat16;

inline constexpr int kWgKeys = 128;  // keys per block, 64 per warpgroup
inline constexpr int kWgQRows = 64;  // query rows per step
inline constexpr int kWgThreads = 256;
inline constexpr int kWgStagesBwd = 3;

struct WgArgs {
  BwdArgs base;
  float* dq_acc;  // [H, q tiles of all sequences, 8192] f32 running dQ sums, fragment order
  float* dk_acc;  // [T, Hkv, D] f32 running dK partials (dk itself when f32)
  float* dv_acc;
  int* dq_count;  // [H, q tiles of all sequences]: key tiles added so far
  int* dk_count;  // [Hkv, key tiles of all sequences]: heads added so far
  int* ticket;
  int q_tiles_total, k_tiles_total;
};

struct WgItem {
  int seq_start, seq_len;
  int q_tile_base, k_tile_base;  // the sequence's first tile in the counter arrays
  int k_tile;                    // 128-key tile within the sequence
  int head;                      // query head
};

// Shared memory (from a 1024-aligned base): K and V (two 64-key swizzled subtiles each), dSᵀ (two
// 64-key subtiles), kWgStagesBwd stages of Q and dO, lse2 and δ per stage, then the previous
// step's dQ partial (each thread's 8 float4 at c·256 + thread), added while the next step's score
// wgmmas run.
struct WgBwdSmem {
  static constexpr int kSub = 64 * 128 * 2;  // a 64-row × 128-dim swizzled bf16 tile
  static constexpr int kDsSub = 64 * 128;    // 64 keys × 64 queries bf16
  static constexpr int kStreamOff = 4 * kSub + 2 * kDsSub;
  static constexpr int kVecOff = kStreamOff + kWgStagesBwd * 2 * kSub;
  static constexpr int kDqOff = kVecOff + kWgStagesBwd * 2 * kWgQRows * 4;
  static constexpr size_t kBytes = 1024 + kDqOff + kWgQRows * 128 * 4;
  static __device__ unsigned char* K(unsigned char* b, int w) { return b + w * kSub; }
  static __device__ unsigned char* V(unsigned char* b, int w) { return b + (2 + w) * kSub; }
  static __device__ unsigned char* Ds(unsigned char* b, int w) { return b + 4 * kSub + w * kDsSub; }
  static __device__ unsigned char* Q(unsigned char* b, int s) {
    return b + kStreamOff + 2 * s * kSub;
  }
  static __device__ unsigned char* Do(unsigned char* b, int s) {
    return b + kStreamOff + (2 * s + 1) * kSub;
  }
  static __device__ float* Lse(unsigned char* b, int s) {
    return reinterpret_cast<float*>(b + kVecOff) + 2 * s * kWgQRows;
  }
  static __device__ float* Delta(unsigned char* b, int s) { return Lse(b, s) + kWgQRows; }
  static __device__ float4* DqStage(unsigned char* b) {
    return reinterpret_cast<float4*>(b + kDqOff);
  }
};
static_assert(WgBwdSmem::kDqOff % 16 == 0, "float4 dQ staging");
static_assert(WgBwdSmem::kBytes + 1024 <= 227 * 1024, "dynamic + static smem of one block");

// d (+)= A·B, 64 rows × 64 columns × 16 k, both operands from smem descriptors; kTransA/B: the
// operand is stored M- / N-major. d starts from its register values (scale-d = 1).
template <int kTransA, int kTransB>
__device__ __forceinline__ void WgmmaSsN64(float (&d)[8][4], uint64_t da, uint64_t db) {
#if TANDEM_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, %35, %36;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(da), "l"(db), "r"(1), "n"(kTransA), "n"(kTransB));
#else
  __trap();
#endif
}

__device__ __forceinline__ void WaitCount(const int* c, int value) {
  int x;
  do {
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(x) : "l"(c) : "memory");
  } while (x != value);
}
__device__ __forceinline__ void ReleaseCount(int* c, int value) {
  asm volatile("st.release.gpu.global.s32 [%0], %1;\n" ::"l"(c), "r"(value) : "memory");
}

// 64 rows × 128 dims into the swizzled layout; row r from src + r·stride, zeros from row `valid`.
__device__ __forceinline__ void LoadSwTile(unsigned char* dst, const bf16* src, int64_t stride,
                                           int valid, const bf16* fallback) {
  for (int idx = threadIdx.x; idx < 64 * 16; idx += kWgThreads) {
    const int r = idx / 16, c = idx % 16;
    const bool ok = r < valid;
    CpAsync16(dst + attention_mma::SwizzledOffset(r, c), ok ? src + r * stride + c * 8 : fallback,
              ok);
  }
}

// Issues Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for the warpgroup's 64 keys × the step's 64 queries, k over d
// ascending from zero; st and dpt are valid after WgWait<0>.
__device__ __forceinline__ void IssueScoresWg(const unsigned char* ks, const unsigned char* vs,
                                              const unsigned char* qs, const unsigned char* dos,
                                              float (&st)[8][4], float (&dpt)[8][4]) {
  using attention_mma::KDesc;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.0f;
  }
  attention_mma::WgFence();
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) WgmmaSsN64<0, 0>(st, KDesc(ks, kk), KDesc(qs, kk));
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) WgmmaSsN64<0, 0>(dpt, KDesc(vs, kk), KDesc(dos, kk));
  attention_mma::WgCommit();
}

// dSᵀ (bf16 A fragments of this warp's 16 keys) into the warpgroup's swizzled dS subtile, rows =
// keys, 64 query columns: the M-major A of dQ = dS·K.
__device__ __forceinline__ void StoreDsT(const uint32_t (&dsa)[4][4], unsigned char* ds) {
  const int lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int r = (threadIdx.x / 32 % 4) * 16 + g;  // r % 8 == g
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int chunk = 2 * kk + half;
      unsigned char* p0 = ds + r * 128 + ((chunk ^ g) << 4) + 4 * t4;
      *reinterpret_cast<uint32_t*>(p0) = dsa[kk][2 * half];
      *reinterpret_cast<uint32_t*>(p0 + 8 * 128) = dsa[kk][2 * half + 1];
    }
  }
}

}  // namespace tandem::kernels::cuda::attention_bwd

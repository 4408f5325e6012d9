// Internal to kernels/softmax_attention (include from .cu files only): the Hopper warpgroup MMA
// (wgmma, sm_90a) pieces of the bf16 forward. A warpgroup (4 warps, 64 query rows) scores a 64-key
// tile with wgmma m64n64k16 (Q as register A fragments, K from 128-byte-swizzled smem) and adds
// P·V with wgmma m64n{64,128}k16 (P as register A fragments, V N-major from the same swizzled
// layout). A wgmma accumulator's warp slice has the m16n8 C fragment layout, so the online softmax
// between the two products is attention_mma's SoftmaxTile (in its two parts), the code the mma.sync
// decode runs; the mbarrier, bulk tensor copy and setmaxnreg wrappers serve the forward's ring.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/core/wgmma.cuh"
#include "kernels/softmax_attention/attention_mma.cuh"

namespace tandem::kernels::cuda::attention_mma {

using wgmma::FenceRegs;
using wgmma::SwDesc;
using wgmma::WgCommit;
using wgmma::WgFence;
using wgmma::WgmmaN64;
using wgmma::WgWait;

// Orders this thread's generic-proxy smem writes (cp.async, stores) before later tensor-core reads.
__device__ __forceinline__ void FenceProxyAsync() {
#if TANDEM_WGMMA_DEVICE
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// mbarrier (shared::cta) primitives for the producer/consumer ring of the forward.
// (try_wait.parity and expect_tx are sm_90 PTX: only the sm_90a code has them.)
#if TANDEM_WGMMA_DEVICE
__device__ __forceinline__ void MbarInit(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SmemAddr(bar)), "r"(count)
               : "memory");
}
__device__ __forceinline__ void MbarArrive(uint64_t* bar) {
  asm volatile(
      "{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(SmemAddr(bar))
      : "memory");
}
// MbarArrive on the threads with `pred`, without a branch (none around in-flight wgmma registers).
__device__ __forceinline__ void MbarArriveIf(uint64_t* bar, bool pred) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 st;\nsetp.ne.b32 p, %1, 0;\n"
      "@p mbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(SmemAddr(bar)),
      "r"(static_cast<int>(pred))
      : "memory");
}
// The one expected arrival plus `bytes` of transactions the bulk tensor copies will complete.
__device__ __forceinline__ void MbarArriveExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile(
      "{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(
          SmemAddr(bar)),
      "r"(bytes)
      : "memory");
}
// The barrier's phase cannot complete before this thread's earlier cp.async copies have landed.
__device__ __forceinline__ void CpAsyncMbarArrive(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.shared::cta.b64 [%0];\n" ::"r"(SmemAddr(bar)) : "memory");
}
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT;\n}\n" ::"r"(SmemAddr(bar)),
      "r"(parity)
      : "memory");
}
// Makes the mbarrier inits visible to the async proxy (the bulk tensor copies).
__device__ __forceinline__ void FenceMbarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
#else
__device__ __forceinline__ void MbarInit(uint64_t*, int) {}
__device__ __forceinline__ void MbarArrive(uint64_t*) {}
__device__ __forceinline__ void MbarArriveIf(uint64_t*, bool) {}
__device__ __forceinline__ void MbarArriveExpectTx(uint64_t*, uint32_t) {}
__device__ __forceinline__ void CpAsyncMbarArrive(uint64_t*) {}
__device__ __forceinline__ void MbarWait(uint64_t*, uint32_t) {}
__device__ __forceinline__ void FenceMbarrierInit() {}
#endif

// Bulk tensor copy of box {c0, c1, c2} of the tensor map `map` (a __grid_constant__ parameter)
// into smem at dst, completing `bar`'s transactions.
__device__ __forceinline__ void TmaLoad3d(void* dst, const void* map, int c0, int c1, int c2,
                                          uint64_t* bar) {
#if TANDEM_WGMMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
      "{%2, %3, %4}], [%5];\n" ::"r"(SmemAddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(SmemAddr(bar))
      : "memory");
#endif
}
template <int kRegs>
__device__ __forceinline__ void SetMaxRegsDec() {
#if TANDEM_WGMMA_DEVICE
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <int kRegs>
__device__ __forceinline__ void SetMaxRegsInc() {
#if TANDEM_WGMMA_DEVICE
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}

// K and V tiles in smem, 128-byte swizzle: blocks of 64 dims (128 bytes per key row), each
// [kTile keys][128 B] with 16-byte chunk c of row j at chunk c ^ (j % 8); block bases 1024-aligned.
inline constexpr int kSwBlockBytes = kTile * 128;
template <int kD>
inline constexpr int kSwTileBytes = kTile* kD * 2;

// Byte offset of dims [8c, 8c + 8) of key row j.
__device__ __forceinline__ int SwizzledOffset(int j, int c) {
  return (c / 8) * kSwBlockBytes + j * 128 + (((c % 8) ^ (j % 8)) << 4);
}

// LoadTileAsync into the swizzled layout (zeros from row `valid` on).
template <int kD, typename RowOffset>
__device__ __forceinline__ void LoadTileSwizzledAsync(const bf16* src, int valid,
                                                      RowOffset row_offset, unsigned char* dst,
                                                      int threads) {
  constexpr int kChunks = kD / 8;
  for (int idx = threadIdx.x; idx < kTile * kChunks; idx += threads) {
    const int j = idx / kChunks, c = idx % kChunks;
    const bool ok = j < valid;
    CpAsync16(dst + SwizzledOffset(j, c), ok ? src + row_offset(j) + c * 8 : src, ok);
  }
}

// K tile as the K-major B of Q·Kᵀ, k step kk (dims 16kk .. 16kk + 15).
static_assert(kSwBlockBytes == wgmma::kSwBlockBytes, "K and V tiles are 64-row swizzle blocks");
__device__ __forceinline__ uint64_t KDesc(const unsigned char* ks, int kk) {
  return wgmma::KMajorDesc(ks, kk);
}
// V tile as the N-major B of P·V, k step kk (keys 16kk .. 16kk + 15): 64-dim blocks
// kSwBlockBytes apart (leading), 8-key groups 1024 bytes apart (stride).
__device__ __forceinline__ uint64_t VDesc(const unsigned char* vs, int kk) {
  return SwDesc(vs + kk * 2048, kSwBlockBytes, 1024);
}

// wgmma descriptors of a swizzled 64-row tile as two words: the low one holds the start address
// (bits 0–13, address / 16) and the leading offset, the high one the stride offset and layout.
// A k step's descriptor adds its byte offset / 16 to the low word: one add, no carry (shared
// addresses stay below 2¹⁸, so the start field never overflows), the bits KDesc / VDesc build.
struct TileDesc {
  uint32_t lo, hi;
  __device__ __forceinline__ uint64_t At(uint32_t byte_offset) const {
    uint64_t d;  // a register pair: no shifts or ors
    asm("mov.b64 %0, {%1, %2};" : "=l"(d) : "r"(lo + (byte_offset >> 4)), "r"(hi));
    return d;
  }
  // K-major k step kk (dims 16kk ..): KDesc(tile, kk).
  __device__ __forceinline__ uint64_t K(int kk) const {
    return At((kk / 4) * kSwBlockBytes + (kk % 4) * 32);
  }
  // N-major k step kk (rows 16kk ..): VDesc(tile, kk).
  __device__ __forceinline__ uint64_t V(int kk) const { return At(kk * 2048); }
};
__device__ __forceinline__ TileDesc KTileDesc(const unsigned char* tile) {
  const uint64_t d = KDesc(tile, 0);
  return {static_cast<uint32_t>(d), static_cast<uint32_t>(d >> 32)};
}
__device__ __forceinline__ TileDesc VTileDesc(const unsigned char* tile) {
  const uint64_t d = VDesc(tile, 0);
  return {static_cast<uint32_t>(d), static_cast<uint32_t>(d >> 32)};
}

// d += A·B (or d = A·B when !accumulate) for the warpgroup's 64 rows and 128 columns over 16 k:
// A = this warp's 16 rows as an m16n8k16 A fragment (registers), B from shared memory through
// `desc` (kTransB: B stored N-major).
template <bool kTransB>
__device__ __forceinline__ void WgmmaN128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc,
                                          bool accumulate = true) {
#if TANDEM_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "
      "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
        "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]),
        "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]),
        "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
        "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]),
        "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]),
        "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(static_cast<int>(accumulate)),
        "n"(kTransB ? 1 : 0));
#else
  __trap();
#endif
}

template <int kD>
__device__ __forceinline__ void WgmmaPv(float (&acc)[kD / 8][4], const uint32_t (&a)[4],
                                        uint64_t desc) {
  if constexpr (kD == 128) {
    WgmmaN128<true>(acc, a, desc);
  } else {
    static_assert(kD == 64, "wgmma path: head dims 64 and 128");
    WgmmaN64<true>(acc, a, desc);
  }
}

// ScoreTile for the warpgroup's 64 rows: s (this warp's 16 rows) starts at zero and takes the k
// steps d = 0, 16, 32, ... in order. Every thread of the warpgroup must call it.
template <int kD>
__device__ __forceinline__ void ScoreTileWg(const uint32_t (&qf)[kD / 16][4],
                                            const unsigned char* ks, float (&s)[8][4]) {
#pragma unroll
  for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
  WgFence();
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) WgmmaN64<false>(s, qf[kk], KDesc(ks, kk));
  WgCommit();
  WgWait<0>();
  FenceRegs(s);
}

// acc += P·V over the tile's keys ascending, 16 per k step. Every thread of the warpgroup calls it.
template <int kD>
__device__ __forceinline__ void AccumulatePvWg(const uint32_t (&pa)[4][4], const unsigned char* vs,
                                               float (&acc)[kD / 8][4]) {
  WgFence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) WgmmaPv<kD>(acc, pa[kk], VDesc(vs, kk));
  WgCommit();
  WgWait<0>();
  FenceRegs(acc);
}

}  // namespace tandem::kernels::cuda::attention_mma

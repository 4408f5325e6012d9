// The Hopper warpgroup MMA (wgmma, sm_90a) pieces shared by the attention kernels (include from .cu
// files only): the fences and group commits around asynchronous wgmma, the register fence that
// keeps accumulators from being read before their wgmma completes, the shared-memory descriptor of
// the 128-byte swizzle, m64n64k16 with A from registers or from shared memory, and m64n80k16 with
// both from shared memory. A wgmma accumulator's warp slice has the mma.sync m16n8 C fragment
// layout, and each of its elements is the same k-ordered sum as a chain of mma.sync m16n8k16 from
// the same start (softmax_attention_wgmma_cuda_test checks it for m64n64; the fused linear
// forward's bitwise test against the two-launch forward for m64n80).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TANDEM_WGMMA_DEVICE 1
#else
#define TANDEM_WGMMA_DEVICE 0
#endif

namespace tandem::kernels::cuda::wgmma {

__device__ __forceinline__ void WgFence() {
#if TANDEM_WGMMA_DEVICE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void WgCommit() {
#if TANDEM_WGMMA_DEVICE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void WgWait() {
#if TANDEM_WGMMA_DEVICE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Keeps the compiler from reading accumulators (float) or fragments (uint32_t) before the wgmma
// that writes or reads them has completed.
template <typename T, int kN>
__device__ __forceinline__ void FenceRegs(T (&r)[kN][4]) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, uint32_t>, "f32 or b32 registers");
#pragma unroll
  for (int n = 0; n < kN; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if constexpr (std::is_same_v<T, float>) {
        asm volatile("" : "+f"(r[n][e])::"memory");
      } else {
        asm volatile("" : "+r"(r[n][e])::"memory");
      }
    }
  }
}
// wgmma shared-memory descriptor, 128-byte swizzle: start, leading and stride byte offsets.
__device__ __forceinline__ uint64_t SwDesc(const unsigned char* start, uint32_t lbo, uint32_t sbo) {
  uint64_t d = (static_cast<uint32_t>(__cvta_generic_to_shared(start)) & 0x3FFFFu) >> 4;
  d |= uint64_t{(lbo >> 4) & 0x3FFFu} << 16;
  d |= uint64_t{(sbo >> 4) & 0x3FFFu} << 32;
  d |= uint64_t{1} << 62;  // layout type 1: 128-byte swizzle
  return d;
}
// A 64-row tile in the 128-byte swizzle: blocks of 64 columns (128 bytes per row), each 64 rows.
inline constexpr int kSwBlockBytes = 64 * 128;
// The tile as a K-major operand of a product (rows = m or n, columns = k), k step kk (columns
// 16kk ..): 32 bytes into the row of block kk / 4, the blocks block_bytes apart (more than 64 rows'
// worth when the operand has more rows); 8-row groups 1024 bytes apart (the leading offset is
// unused for this layout).
__device__ __forceinline__ uint64_t KMajorDesc(const unsigned char* tile, int kk,
                                               int block_bytes = kSwBlockBytes) {
  return SwDesc(tile + (kk / 4) * block_bytes + (kk % 4) * 32, 16, 1024);
}
// A warp's 32 accumulators of an m64n64 wgmma: their place in the instruction (%0..%31) and the
// matching read-write operands of a d[8][4] array, shared by the m64n64 forms below.
#define TANDEM_WGMMA_N64_ACC                                                                    \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define TANDEM_WGMMA_N64_ACC_OPERANDS(d)                                                        \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),     \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), \
      "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
      "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), \
      "+f"(d[7][2]), "+f"(d[7][3])
// d += A·B (or d = A·B when !accumulate) for the warpgroup's 64 rows and 64 columns over 16 k:
// A = this warp's 16 rows as an m16n8k16 A fragment (registers), B from shared memory through
// `desc` (kTransB: B stored N-major).
template <bool kTransB>
__device__ __forceinline__ void WgmmaN64(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc,
                                         bool accumulate = true) {
#if TANDEM_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " TANDEM_WGMMA_N64_ACC
      ", {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : TANDEM_WGMMA_N64_ACC_OPERANDS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(accumulate ? 1 : 0),
        "n"(kTransB ? 1 : 0));
#else
  __trap();
#endif
}

// d = A·B (kAccumulate = 0) or d += A·B (1) for 64 × 64 × 16, both operands K-major from smem
// descriptors. The first k step of a score overwrites d, so no instruction zeroes the
// accumulators while another product is in flight (that would serialise the wgmma pipeline).
template <int kAccumulate>
__device__ __forceinline__ void WgmmaSsKk(float (&d)[8][4], uint64_t da, uint64_t db) {
#if TANDEM_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " TANDEM_WGMMA_N64_ACC
      ", %32, %33, p, 1, 1, 0, 0;\n}\n"
      : TANDEM_WGMMA_N64_ACC_OPERANDS(d)
      : "l"(da), "l"(db), "r"(kAccumulate));
#else
  __trap();
#endif
}

// d += A·B for 64 × 80 × 16 (d[8], d[9]: columns 64..79), both operands K-major from shared-memory
// descriptors (B's 80 rows in one 128-byte-swizzle block per 64 columns of k).
__device__ __forceinline__ void WgmmaSsKkN80(float (&d)[10][4], uint64_t da, uint64_t db) {
#if TANDEM_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %42, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n80k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "
      "%38, %39}, %40, %41, p, 1, 1, 0, 0;\n}\n"
      : TANDEM_WGMMA_N64_ACC_OPERANDS(d), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]),
        "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3])
      : "l"(da), "l"(db), "r"(1));
#else
  __trap();
#endif
}

}  // namespace tandem::kernels::cuda::wgmma

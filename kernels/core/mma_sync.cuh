// The inline-PTX building blocks of the mma.sync tensor-core kernels (include from .cu files
// only): cp.async 16-byte copies with zero-fill, ldmatrix fragment loads, mma.sync m16n8k16 (bf16
// in, fp32 accumulate) and bf16x2 packing. Written once so that the GEMM, the attention and
// linear-attention kernels and the grouped expert GEMMs issue the very same instructions.
// Fragment layouts (lane = 4·g + t): A rows g, g+8 × columns 2t, 2t+1 (+8); B k rows 2t, 2t+1 (+8)
// × column g; C rows g, g+8 × columns 2t, 2t+1.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::kernels::cuda::mma {

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous copy; valid == false writes zeros and reads nothing (rows or k past an
// edge, keys past a sequence), so no stale NaN in shared memory ever meets a zero weight. The
// "memory" clobbers keep the compiler from moving shared-memory traffic across these statements.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(smem))
               : "memory");
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(smem))
               : "memory");
}
// The same two loads chosen at compile time (LdMatrixX4<true> is LdMatrixX4Trans).
template <bool kTrans>
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem) {
  if constexpr (kTrans) {
    LdMatrixX4Trans(r, smem);
  } else {
    LdMatrixX4(r, smem);
  }
}

// d += a · b for one 16x8 tile over 16 k (bf16 in, fp32 accumulate).
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The same instruction as plain (non-volatile) asm, which the compiler may schedule like
// arithmetic; the attention forward's code is generated with this one. Same bits as Mma.
__device__ __forceinline__ void MmaSchedulable(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // lo at the lower address
  return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x by the MUFU with subnormal results flushed to zero: one instruction, where exp2f adds a
// range test and two multiplies to keep them. In a softmax a flushed p is below 2^-126, under half
// an ulp of the row sum (at least 1 once a key is seen).
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace tandem::kernels::cuda::mma

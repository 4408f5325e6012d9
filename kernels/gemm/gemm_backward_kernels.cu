// Device kernels behind cuda::GemmNN / cuda::GemmTN (gemm_backward.cu): the tiled fp32 fallback
// GEMM (one FMA chain per element over k ascending from 0, the CPU GEMM's arithmetic), the
// rounding of an f32 operand into a bf16 copy, and the final c (+)= fp32 product step.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "kernels/gemm/gemm_backward_internal.h"

namespace tandem::kernels::cuda::internal {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;
constexpr int kThreads = 256;  // 16 x 16 threads, 4x4 outputs each
constexpr int kPad = 4;        // keeps each k row of a tile 16-byte aligned

__device__ __forceinline__ float Load(const float* p, int64_t i, bool round_bf16) {
  return round_bf16 ? __bfloat162float(__float2bfloat16_rn(p[i])) : p[i];
}
__device__ __forceinline__ float Load(const __nv_bfloat16* p, int64_t i, bool) {
  return __bfloat162float(p[i]);
}

__device__ __forceinline__ void Store(float* c, int64_t i, float v, bool accumulate) {
  c[i] = accumulate ? __fadd_rn(c[i], v) : v;
}
__device__ __forceinline__ void Store(__nv_bfloat16* c, int64_t i, float v, bool accumulate) {
  c[i] = __float2bfloat16_rn(accumulate ? __fadd_rn(__bfloat162float(c[i]), v) : v);
}

// C(i, j) = Σ_p A(i, p) · B(p, j); A(i, p) = a[i * lda + p] (NN) or a[p * lda + i] (TN).
template <typename TA, typename TB, typename TC, bool kTransA>
__global__ void __launch_bounds__(kThreads) FallbackKernel(const GemmBackwardArgs g, bool round_a) {
  __shared__ __align__(16) float as[kBK][kBM + kPad];
  __shared__ __align__(16) float bs[kBK][kBN + kPad];
  const int64_t m0 = int64_t{blockIdx.y} * kBM, n0 = int64_t{blockIdx.x} * kBN;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const TA* a = static_cast<const TA*>(g.a);
  const TB* b = static_cast<const TB*>(g.b);
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < g.k; k0 += kBK) {
#pragma unroll
    for (int e = 0; e < kBM * kBK / kThreads; ++e) {
      const int idx = threadIdx.x + e * kThreads;
      // Consecutive threads walk the contiguous dimension of each operand.
      const int ar = kTransA ? idx % kBM : idx / kBK, ak = kTransA ? idx / kBM : idx % kBK;
      const int64_t gi = m0 + ar, gp = k0 + ak;
      as[ak][ar] = gi < g.m && gp < g.k
                       ? Load(a, kTransA ? gp * g.lda + gi : gi * g.lda + gp, round_a)
                       : 0.0f;
      const int bc = idx % kBN, bk = idx / kBN;
      const int64_t gj = n0 + bc, gq = k0 + bk;
      bs[bk][bc] = gj < g.n && gq < g.k ? Load(b, gq * g.ldb + gj, false) : 0.0f;
    }
    __syncthreads();
    // The last, partial slice stops at k exactly (a zero product could flip a -0 to +0).
    const int steps = g.k - k0 < kBK ? static_cast<int>(g.k - k0) : kBK;
    for (int kk = 0; kk < steps; ++kk) {
      const float4 av = *reinterpret_cast<const float4*>(&as[kk][ty * 4]);
      const float4 bv = *reinterpret_cast<const float4*>(&bs[kk][tx * 4]);
      const float ar4[4] = {av.x, av.y, av.z, av.w}, br4[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(ar4[i], br4[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  TC* c = static_cast<TC*>(g.c);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t row = m0 + ty * 4 + i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n0 + tx * 4 + j;
      if (row < g.m && col < g.n) Store(c, row * g.ldc + col, acc[i][j], g.accumulate);
    }
  }
}

template <typename TA, typename TB, typename TC>
cudaError_t LaunchFallback(cudaStream_t stream, const GemmBackwardArgs& g, bool trans_a) {
  const dim3 grid(static_cast<unsigned>((g.n + kBN - 1) / kBN),
                  static_cast<unsigned>((g.m + kBM - 1) / kBM));
  const bool round_a = sizeof(TA) == 4 && sizeof(TB) == 2;  // GemmNT's rule for an f32 a
  if (trans_a) {
    FallbackKernel<TA, TB, TC, true><<<grid, kThreads, 0, stream>>>(g, round_a);
  } else {
    FallbackKernel<TA, TB, TC, false><<<grid, kThreads, 0, stream>>>(g, round_a);
  }
  return cudaGetLastError();
}

// Row-wise kernels: blockIdx.y strides over rows, x over columns (no 64-bit index division).
constexpr int kRowThreads = 256;

dim3 RowGrid(int64_t rows, int64_t cols) {
  const int64_t x = (cols + kRowThreads - 1) / kRowThreads;
  return dim3(static_cast<unsigned>(x < 65535 ? (x > 0 ? x : 1) : 65535),
              static_cast<unsigned>(rows < 65535 ? (rows > 0 ? rows : 1) : 65535));
}

__global__ void RoundKernel(const float* src, int64_t ld_src, __nv_bfloat16* dst, int64_t ld_dst,
                            int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    for (int64_t col = blockIdx.x * int64_t{kRowThreads} + threadIdx.x; col < cols;
         col += int64_t{gridDim.x} * kRowThreads) {
      dst[r * ld_dst + col] = __float2bfloat16_rn(src[r * ld_src + col]);
    }
  }
}

template <typename TC>
__global__ void AddIntoKernel(const float* s, int64_t lds, int64_t m, int64_t n, TC* c, int64_t ldc,
                              bool accumulate) {
  for (int64_t r = blockIdx.y; r < m; r += gridDim.y) {
    for (int64_t col = blockIdx.x * int64_t{kRowThreads} + threadIdx.x; col < n;
         col += int64_t{gridDim.x} * kRowThreads) {
      Store(c, r * ldc + col, s[r * lds + col], accumulate);
    }
  }
}

}  // namespace

cudaError_t LaunchGemmBackwardFallback(cudaStream_t stream, const GemmBackwardArgs& g,
                                       bool trans_a) {
  using bf16 = __nv_bfloat16;
  const bool c16 = g.c_dtype == DType::kBF16;
  if (g.b_dtype == DType::kF32) return LaunchFallback<float, float, float>(stream, g, trans_a);
  if (g.a_dtype == DType::kF32) {
    return c16 ? LaunchFallback<float, bf16, bf16>(stream, g, trans_a)
               : LaunchFallback<float, bf16, float>(stream, g, trans_a);
  }
  return c16 ? LaunchFallback<bf16, bf16, bf16>(stream, g, trans_a)
             : LaunchFallback<bf16, bf16, float>(stream, g, trans_a);
}

cudaError_t LaunchRoundToBf16(cudaStream_t stream, const float* src, int64_t ld_src, void* dst,
                              int64_t ld_dst, int64_t rows, int64_t cols) {
  RoundKernel<<<RowGrid(rows, cols), kRowThreads, 0, stream>>>(
      src, ld_src, static_cast<__nv_bfloat16*>(dst), ld_dst, rows, cols);
  return cudaGetLastError();
}

cudaError_t LaunchAddInto(cudaStream_t stream, const float* s, int64_t lds, int64_t m, int64_t n,
                          void* c, int64_t ldc, DType c_dtype, bool accumulate) {
  const dim3 grid = RowGrid(m, n);
  if (c_dtype == DType::kBF16) {
    AddIntoKernel<<<grid, kRowThreads, 0, stream>>>(s, lds, m, n, static_cast<__nv_bfloat16*>(c),
                                                    ldc, accumulate);
  } else {
    AddIntoKernel<<<grid, kRowThreads, 0, stream>>>(s, lds, m, n, static_cast<float*>(c), ldc,
                                                    accumulate);
  }
  return cudaGetLastError();
}

Workspace::~Workspace() {
  int device = 0;  // after the CUDA runtime has unloaded (a static context), exit frees it
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  if (ptr != nullptr) cudaFree(ptr);
}

Workspace& WorkspaceOf(const Context& ctx) {
  auto slot = ctx.Resource("gemm_backward_workspace", [] {
    return std::static_pointer_cast<void>(std::make_shared<Workspace>());
  });
  return *static_cast<Workspace*>(slot.get());  // the context's resources keep it alive
}

cudaError_t Reserve(Workspace& ws, int64_t bytes, cudaStream_t stream, char** out) {
  constexpr int64_t kGrain = int64_t{16} << 20;
  if (bytes > ws.bytes) {
    if (ws.ptr != nullptr) {
      const cudaError_t e = cudaFreeAsync(ws.ptr, stream);
      if (e != cudaSuccess) return e;
    }
    ws.ptr = nullptr, ws.bytes = 0;
    const int64_t size = (bytes + kGrain - 1) / kGrain * kGrain;
    const cudaError_t e = cudaMallocAsync(&ws.ptr, size, stream);
    if (e != cudaSuccess) return e;
    ws.bytes = size;
  }
  *out = static_cast<char*>(ws.ptr);
  return cudaSuccess;
}

}  // namespace tandem::kernels::cuda::internal

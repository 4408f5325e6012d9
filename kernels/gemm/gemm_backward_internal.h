// The device kernels behind cuda::GemmNN / cuda::GemmTN (gemm_backward_kernels.cu). Arguments are
// validated by the caller (gemm_backward.cu); these only launch. Not for use outside kernels/gemm.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <mutex>

#include "kernels/core/context.h"
#include "kernels/gemm/gemm_cuda.h"

namespace tandem::kernels::cuda::internal {

// The fallback GEMM: C (+)= A · B with A [m, k] (trans_a false) or [k, m] (trans_a true); one fp32
// FMA chain per element over k ascending from 0; an f32 a with a bf16 b is rounded to bf16.
cudaError_t LaunchGemmBackwardFallback(cudaStream_t stream, const GemmBackwardArgs& g,
                                       bool trans_a);

// dst[r, c] = bf16(src[r, c]) (nearest-even) for r < rows, c < cols.
cudaError_t LaunchRoundToBf16(cudaStream_t stream, const float* src, int64_t ld_src, void* dst,
                              int64_t ld_dst, int64_t rows, int64_t cols);

// c[r, col] (+)= s[r, col] for r < m, col < n: one fp32 add when `accumulate`, then one rounding
// to c's dtype (f32 or bf16). The last step of the calls that compute an fp32 product in the
// workspace (GemmTN's running chunk sum, GemmNN's product for an accumulating bf16 c).
cudaError_t LaunchAddInto(cudaStream_t stream, const float* s, int64_t lds, int64_t m, int64_t n,
                          void* c, int64_t ldc, DType c_dtype, bool accumulate);

// The per-context device scratch of GemmNN / GemmTN (fp32 products and sums, bf16 copies of an
// f32 a), ctx.Resource("gemm_backward_workspace"), kept between calls. A call holds `mu` from its
// first use of the buffer to its last launch, so calls from several host threads on one context
// never interleave on it; all uses are ordered on the context's stream.
struct Workspace {
  std::mutex mu;
  void* ptr = nullptr;
  int64_t bytes = 0;
  ~Workspace();
};
Workspace& WorkspaceOf(const Context& ctx);
// *out = at least `bytes` of workspace (caller holds ws.mu); growing frees the old buffer and
// allocates the new one in stream order on `stream`.
cudaError_t Reserve(Workspace& ws, int64_t bytes, cudaStream_t stream, char** out);

}  // namespace tandem::kernels::cuda::internal

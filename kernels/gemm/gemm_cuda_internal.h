// The two GPU GEMM kernels behind cuda::GemmNT, one per arithmetic. Arguments are validated by
// the caller (gemm.cu); these only launch. Not for use outside kernels/gemm.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/gemm/gemm_cuda.h"

namespace tandem::kernels::cuda::internal {

// bf16 tensor cores (mma.sync m16n8k16), fp32 accumulation; b bf16, a bf16 or f32, c f32 or bf16.
cudaError_t LaunchGemmTensorCore(cudaStream_t stream, const GemmNTArgs& g);

// fp32 FMA tiles; a, b, c f32.
cudaError_t LaunchGemmF32(cudaStream_t stream, const GemmNTArgs& g);

}  // namespace tandem::kernels::cuda::internal

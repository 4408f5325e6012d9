// The two GPU GEMM kernels behind cuda::GemmNT, one per arithmetic, and the Tensor-to-raw
// argument mapping that GemmNT and GemmNTPinned share. Arguments are validated by the caller
// (gemm.cu); the kernels only launch. Not for use outside kernels/gemm.
#pragma once

#include <cuda_runtime_api.h>

#include "absl/status/statusor.h"
#include "kernels/core/tensor.h"
#include "kernels/gemm/gemm_cuda.h"

namespace tandem::kernels::cuda::internal {

// bf16 tensor cores (mma.sync m16n8k16), fp32 accumulation; b bf16, a bf16 or f32, c f32 or bf16.
cudaError_t LaunchGemmTensorCore(cudaStream_t stream, const GemmNTArgs& g);

// fp32 FMA tiles; a, b, c f32.
cudaError_t LaunchGemmF32(cudaStream_t stream, const GemmNTArgs& g);

// The checks every raw GEMM entry point makes (GemmNT, GemmNN, GemmTN): sizes non-negative; a, b
// and c f32 or bf16, with an f32 b also a and c f32 (CheckGemmDtypes); a and b non-null when
// anything is read, c when anything is written (CheckGemmPointers). Leading dimensions are each
// layout's own.
absl::Status CheckGemmDtypes(int64_t m, int64_t n, int64_t k, DType a, DType b, DType c);
absl::Status CheckGemmPointers(int64_t m, int64_t n, int64_t k, const void* a, const void* b,
                               const void* c);

// The raw arguments for C [m, n] (+)= A [m, k] · B [n, k]ᵀ on CUDA tensors, with the dtype rules of
// the Tensor overloads (b f32 makes everything f32; otherwise a and c may each be f32 or bf16);
// InvalidArgument naming a, b or c when a tensor does not fit.
absl::StatusOr<GemmNTArgs> TensorGemmArgs(const Tensor& a, const Tensor& b, Tensor& c,
                                          bool accumulate);

}  // namespace tandem::kernels::cuda::internal

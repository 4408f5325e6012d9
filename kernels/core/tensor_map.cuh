// Bulk tensor copies (Hopper's copy engine) from the host side (include from .cu files only): the
// driver's tensor-map encoder reached through the runtime, so nothing links libcuda, and the one
// layout the attention kernels copy — rows of one head of a [t, heads, d] bf16 tensor.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::kernels::cuda {

// cuTensorMapEncodeTiled, or null when the driver does not have it.
inline PFN_cuTensorMapEncodeTiled_v12000 TensorMapEncoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return PFN_cuTensorMapEncodeTiled_v12000{nullptr};
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// x [t, heads, d] bf16 as boxes of [64 dims, 1 head, `rows` tokens] in the 128-byte swizzle: each
// box is `rows` rows of 128 bytes, the 16-byte chunk c of row j stored at chunk c ^ (j % 8); rows
// past t read as zeros. False when the encoder is missing or refuses.
inline bool HeadRowsTensorMap(CUtensorMap* map, const __nv_bfloat16* base, int64_t t, int heads,
                              int d, int rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = TensorMapEncoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {cuuint64_t(d), cuuint64_t(heads), cuuint64_t(t)};
  const cuuint64_t strides[2] = {cuuint64_t(d) * 2, cuuint64_t(heads) * d * 2};
  const cuuint32_t box[3] = {64, 1, cuuint32_t(rows)}, elem_strides[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<__nv_bfloat16*>(base), dims,
                strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace tandem::kernels::cuda

// The CUDA halves of the model's data movement (device_ops.h): a strided column copy (splitting the
// fused qkv projection, optionally rounding to bf16 for the KV cache) and an indexed row copy
// (cache writes, slot gathers/scatters, last-row picks). One launch per call; the row indices
// travel in one small upload. For the training pass: the column scatter back into the qkv
// gradient, elementwise add and scale, and the master → compute weight cast.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "model/device_ops.h"

namespace tandem::model::internal::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row t: dst[t, j] = src[t, col + j], j < width.
template <typename Out>
__global__ void CopyColumnsKernel(const float* __restrict__ src, int64_t src_cols, int64_t col,
                                  Out* __restrict__ dst, int64_t width) {
  const int64_t t = blockIdx.x;
  const float* s = src + t * src_cols + col;
  Out* d = dst + t * width;
  for (int64_t j = threadIdx.x; j < width; j += kThreads) {
    if constexpr (sizeof(Out) == 2) {
      d[j] = __float2bfloat16_rn(s[j]);
    } else {
      d[j] = s[j];
    }
  }
}

// One block per pair i: dst row rows[n + i] = src row rows[i], `units` units of Unit per row.
template <typename Unit>
__global__ void CopyRowsKernel(const Unit* __restrict__ src, Unit* __restrict__ dst,
                               const int64_t* __restrict__ rows, int64_t n, int64_t units) {
  const int64_t i = blockIdx.x;
  const Unit* s = src + rows[i] * units;
  Unit* d = dst + rows[n + i] * units;
  for (int64_t j = threadIdx.x; j < units; j += kThreads) d[j] = s[j];
}

template <typename Unit>
void LaunchCopyRows(const void* src, void* dst, const int64_t* rows, int64_t n, int64_t row_bytes,
                    cudaStream_t stream) {
  CopyRowsKernel<Unit><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      static_cast<const Unit*>(src), static_cast<Unit*>(dst), rows, n,
      row_bytes / static_cast<int64_t>(sizeof(Unit)));
}

// One block per row t: dst[t, col + j] = src[t, j], j < width (the inverse of CopyColumns).
__global__ void ScatterColumnsKernel(const float* __restrict__ src, int64_t width,
                                     float* __restrict__ dst, int64_t dst_cols, int64_t col) {
  const int64_t t = blockIdx.x;
  const float* s = src + t * width;
  float* d = dst + t * dst_cols + col;
  for (int64_t j = threadIdx.x; j < width; j += kThreads) d[j] = s[j];
}

// Grid-stride elementwise kernels: one correctly rounded fp32 operation per element, as the CPU.
__global__ void AddIntoKernel(const float* __restrict__ delta, float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kThreads) {
    x[i] = __fadd_rn(x[i], delta[i]);
  }
}

__global__ void ScaleKernel(float* __restrict__ x, float scale, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kThreads) {
    x[i] = __fmul_rn(x[i], scale);
  }
}

// FloatToBf16 (kernels/core/bf16.h) bit for bit: round to nearest even, NaNs kept quiet with
// their payload (the hardware conversion would canonicalise them), so the compute weights cast
// here from the GPU master are the bits UploadWeights casts on the host.
__global__ void CastToBf16Kernel(const float* __restrict__ src, uint16_t* __restrict__ dst,
                                 int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kThreads) {
    const uint32_t bits = __float_as_uint(src[i]);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
      dst[i] = static_cast<uint16_t>((bits >> 16) | 0x0040u);
    } else {
      dst[i] = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    }
  }
}

unsigned ElementwiseBlocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 8192 ? blocks : 8192);
}

}  // namespace

absl::Status CopyColumns(const Context& ctx, const Tensor& src, int64_t col, Tensor& dst) {
  TANDEM_CHECK_ARG(src.device() == Device::kCUDA && dst.device() == Device::kCUDA,
                   "CopyColumns: both tensors must be on the GPU");
  TANDEM_CHECK_ARG(dst.dtype() == DType::kF32 || dst.dtype() == DType::kBF16,
                   "CopyColumns: dst must be f32 or bf16, got ", DTypeName(dst.dtype()));
  const int64_t rows = src.dim(0);
  if (rows == 0) return absl::OkStatus();
  const int64_t width = dst.numel() / rows;
  const cudaStream_t stream = kernels::cuda::StreamOf(ctx);
  if (dst.dtype() == DType::kBF16) {
    CopyColumnsKernel<__nv_bfloat16><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        src.data<float>(), src.dim(1), col, static_cast<__nv_bfloat16*>(dst.raw_data()), width);
  } else {
    CopyColumnsKernel<float><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        src.data<float>(), src.dim(1), col, dst.data<float>(), width);
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status CopyRows(const Context& ctx, const Tensor& src, const std::vector<int64_t>& src_rows,
                      Tensor& dst, const std::vector<int64_t>& dst_rows, int64_t width) {
  TANDEM_CHECK_ARG(src.device() == Device::kCUDA && dst.device() == Device::kCUDA,
                   "CopyRows: both tensors must be on the GPU");
  const int64_t n = static_cast<int64_t>(src_rows.size());
  const int64_t row_bytes = width * static_cast<int64_t>(DTypeSize(src.dtype()));
  // Bounds are checked here, on the host, so the kernel never reads or writes outside.
  const int64_t src_limit = static_cast<int64_t>(src.nbytes()) / row_bytes;
  const int64_t dst_limit = static_cast<int64_t>(dst.nbytes()) / row_bytes;
  std::vector<int64_t> rows(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    TANDEM_CHECK_ARG(
        src_rows[i] >= 0 && src_rows[i] < src_limit && dst_rows[i] >= 0 && dst_rows[i] < dst_limit,
        "CopyRows: pair ", i, " (", src_rows[i], " -> ", dst_rows[i], ") is outside the tensors' ",
        src_limit, " / ", dst_limit, " rows");
    rows[i] = src_rows[i];
    rows[n + i] = dst_rows[i];
  }
  TANDEM_ASSIGN_OR_RETURN(
      Tensor rows_dev,
      kernels::cuda::CopyToDevice(ctx, Tensor::View(rows.data(), {2 * n}, DType::kI64)));
  const cudaStream_t stream = kernels::cuda::StreamOf(ctx);
  const auto aligned = [&](int64_t unit) {
    return row_bytes % unit == 0 && reinterpret_cast<uintptr_t>(src.raw_data()) % unit == 0 &&
           reinterpret_cast<uintptr_t>(dst.raw_data()) % unit == 0;
  };
  const int64_t* idx = rows_dev.data<int64_t>();
  if (aligned(16)) {
    LaunchCopyRows<uint4>(src.raw_data(), dst.raw_data(), idx, n, row_bytes, stream);
  } else if (aligned(4)) {
    LaunchCopyRows<uint32_t>(src.raw_data(), dst.raw_data(), idx, n, row_bytes, stream);
  } else {
    LaunchCopyRows<uint16_t>(src.raw_data(), dst.raw_data(), idx, n, row_bytes, stream);
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // rows_dev is freed on return; cudaFree waits for the launch above to finish with it.
  return absl::OkStatus();
}

absl::Status ScatterColumns(const Context& ctx, const Tensor& src, int64_t col, Tensor& dst) {
  TANDEM_CHECK_ARG(src.device() == Device::kCUDA && dst.device() == Device::kCUDA,
                   "ScatterColumns: both tensors must be on the GPU");
  const int64_t rows = src.dim(0);
  ScatterColumnsKernel<<<static_cast<unsigned>(rows), kThreads, 0, kernels::cuda::StreamOf(ctx)>>>(
      src.data<float>(), src.numel() / rows, dst.data<float>(), dst.dim(1), col);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status AddInto(const Context& ctx, const Tensor& delta, Tensor& dx) {
  TANDEM_CHECK_ARG(delta.device() == Device::kCUDA && dx.device() == Device::kCUDA,
                   "AddInto: both tensors must be on the GPU");
  const int64_t n = dx.numel();
  AddIntoKernel<<<ElementwiseBlocks(n), kThreads, 0, kernels::cuda::StreamOf(ctx)>>>(
      delta.data<float>(), dx.data<float>(), n);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status ScaleInPlace(const Context& ctx, Tensor& t, float scale) {
  const int64_t n = t.numel();
  ScaleKernel<<<ElementwiseBlocks(n), kThreads, 0, kernels::cuda::StreamOf(ctx)>>>(t.data<float>(),
                                                                                   scale, n);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status CastInto(const Context& ctx, const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  const cudaStream_t stream = kernels::cuda::StreamOf(ctx);
  if (dst.dtype() == DType::kF32) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(),
                                                cudaMemcpyDeviceToDevice, stream));
    return absl::OkStatus();
  }
  CastToBf16Kernel<<<ElementwiseBlocks(n), kThreads, 0, stream>>>(
      src.data<float>(), static_cast<uint16_t*>(dst.raw_data()), n);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::model::internal::cuda

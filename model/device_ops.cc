// Device-aware data movement (device_ops.h): the CPU paths, and the dispatch to device_ops.cu.
#include "model/device_ops.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/core/cuda_util.h"
#endif

namespace tandem::model::internal {
namespace {

#ifndef TANDEM_HAVE_CUDA
absl::Status NoCuda(const char* what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": CUDA context, but Tandem was built without CUDA (TANDEM_CUDA=OFF)"));
}
#endif

}  // namespace

absl::StatusOr<Tensor> ToContextDevice(const Context& ctx, const Tensor& t) {
  if (!OnCuda(ctx) || t.device() == Device::kCUDA) return t;
#ifdef TANDEM_HAVE_CUDA
  return kernels::cuda::CopyToDevice(ctx, t);
#else
  return NoCuda("ToContextDevice");
#endif
}

absl::StatusOr<Tensor> ToHost(const Context& ctx, const Tensor& t) {
  if (t.device() == Device::kCPU) return t;
#ifdef TANDEM_HAVE_CUDA
  return kernels::cuda::CopyToHost(ctx, t);
#else
  return NoCuda("ToHost");
#endif
}

absl::StatusOr<Tensor> AsF32(const Context& ctx, const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
#ifdef TANDEM_HAVE_CUDA
  if (t.device() == Device::kCUDA) return kernels::cuda::ToF32(ctx, t);
#endif
  return absl::InvalidArgumentError(absl::StrCat("AsF32: expected f32, or bf16 on the GPU, got ",
                                                 DTypeName(t.dtype()), " on ",
                                                 DeviceName(t.device())));
}

absl::Status CopyColumns(const Context& ctx, const Tensor& src, int64_t col, Tensor& dst) {
  const int64_t rows = src.dim(0), src_cols = src.dim(1);
  const int64_t width = rows == 0 ? 0 : dst.numel() / rows;
  TANDEM_CHECK_ARG(
      src.dtype() == DType::kF32 && dst.dim(0) == rows && col >= 0 && col + width <= src_cols,
      "CopyColumns: columns [", col, ", ", col + width, ") of ", ShapeString(src.shape()), " into ",
      ShapeString(dst.shape()));
  if (OnCuda(ctx)) {
#ifdef TANDEM_HAVE_CUDA
    return cuda::CopyColumns(ctx, src, col, dst);
#else
    return NoCuda("CopyColumns");
#endif
  }
  TANDEM_CHECK_ARG(dst.dtype() == DType::kF32, "CopyColumns: the CPU path writes f32 only");
  const float* s = src.data<float>();
  float* d = dst.data<float>();
  ctx.ParallelFor(rows, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      std::memcpy(d + t * width, s + t * src_cols + col, width * sizeof(float));
    }
  });
  return absl::OkStatus();
}

absl::Status CopyRows(const Context& ctx, const Tensor& src, const std::vector<int64_t>& src_rows,
                      Tensor& dst, const std::vector<int64_t>& dst_rows, int64_t width) {
  TANDEM_CHECK_ARG(src.dtype() == dst.dtype() && src_rows.size() == dst_rows.size() && width >= 0,
                   "CopyRows: ", src_rows.size(), " source rows of ", DTypeName(src.dtype()),
                   " into ", dst_rows.size(), " rows of ", DTypeName(dst.dtype()));
  if (src_rows.empty() || width == 0) return absl::OkStatus();
  if (OnCuda(ctx)) {
#ifdef TANDEM_HAVE_CUDA
    return cuda::CopyRows(ctx, src, src_rows, dst, dst_rows, width);
#else
    return NoCuda("CopyRows");
#endif
  }
  const size_t row_bytes = static_cast<size_t>(width) * DTypeSize(src.dtype());
  const char* s = static_cast<const char*>(src.raw_data());
  char* d = static_cast<char*>(dst.raw_data());
  ctx.ParallelFor(static_cast<int64_t>(src_rows.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      std::memcpy(d + dst_rows[i] * row_bytes, s + src_rows[i] * row_bytes, row_bytes);
    }
  });
  return absl::OkStatus();
}

absl::Status ScatterColumns(const Context& ctx, const Tensor& src, int64_t col, Tensor& dst) {
  const int64_t rows = src.dim(0), dst_cols = dst.dim(1);
  const int64_t width = rows == 0 ? 0 : src.numel() / rows;
  TANDEM_CHECK_ARG(src.dtype() == DType::kF32 && dst.dtype() == DType::kF32 && dst.dim(0) == rows &&
                       col >= 0 && col + width <= dst_cols && src.device() == dst.device(),
                   "ScatterColumns: ", ShapeString(src.shape()), " into columns [", col, ", ",
                   col + width, ") of ", ShapeString(dst.shape()));
  if (rows == 0 || width == 0) return absl::OkStatus();
  if (OnCuda(ctx)) {
#ifdef TANDEM_HAVE_CUDA
    return cuda::ScatterColumns(ctx, src, col, dst);
#else
    return NoCuda("ScatterColumns");
#endif
  }
  const float* s = src.data<float>();
  float* d = dst.data<float>();
  ctx.ParallelFor(rows, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      std::memcpy(d + t * dst_cols + col, s + t * width, width * sizeof(float));
    }
  });
  return absl::OkStatus();
}

absl::Status AddInto(const Context& ctx, const Tensor& delta, Tensor& dx) {
  TANDEM_CHECK_ARG(delta.dtype() == DType::kF32 && dx.dtype() == DType::kF32 &&
                       delta.shape() == dx.shape() && delta.device() == dx.device(),
                   "AddInto: ", ShapeString(delta.shape()), " into ", ShapeString(dx.shape()));
  if (dx.numel() == 0) return absl::OkStatus();
  if (OnCuda(ctx)) {
#ifdef TANDEM_HAVE_CUDA
    return cuda::AddInto(ctx, delta, dx);
#else
    return NoCuda("AddInto");
#endif
  }
  const int64_t cols = dx.numel() / dx.dim(0);
  const float* d = delta.data<float>();
  float* x = dx.data<float>();
  ctx.ParallelFor(dx.dim(0), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin * cols; i < end * cols; ++i) x[i] += d[i];
  });
  return absl::OkStatus();
}

absl::Status ScaleInPlace(const Context& ctx, Tensor& t, float scale) {
  TANDEM_CHECK_ARG(t.dtype() == DType::kF32, "ScaleInPlace: expected f32, got ",
                   DTypeName(t.dtype()));
  if (t.numel() == 0) return absl::OkStatus();
  if (t.device() == Device::kCUDA) {
#ifdef TANDEM_HAVE_CUDA
    return cuda::ScaleInPlace(ctx, t, scale);
#else
    return NoCuda("ScaleInPlace");
#endif
  }
  float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] *= scale;
  return absl::OkStatus();
}

absl::Status CastInto(const Context& ctx, const Tensor& src, Tensor& dst) {
  TANDEM_CHECK_ARG(
      src.dtype() == DType::kF32 && src.shape() == dst.shape() && src.device() == dst.device() &&
          (dst.dtype() == DType::kF32 || dst.dtype() == DType::kBF16),
      "CastInto: f32 ", ShapeString(src.shape()), " on ", DeviceName(src.device()), " into ",
      DTypeName(dst.dtype()), " ", ShapeString(dst.shape()), " on ", DeviceName(dst.device()));
  if (src.numel() == 0) return absl::OkStatus();
  if (src.device() == Device::kCUDA) {
#ifdef TANDEM_HAVE_CUDA
    return cuda::CastInto(ctx, src, dst);
#else
    return NoCuda("CastInto");
#endif
  }
  TANDEM_CHECK_ARG(dst.dtype() == DType::kF32, "CastInto: the CPU path writes f32 only");
  std::memcpy(dst.raw_data(), src.raw_data(), src.nbytes());
  return absl::OkStatus();
}

}  // namespace tandem::model::internal

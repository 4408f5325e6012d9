// UploadWeights: the host fp32 weights copied into AllocateWeights(config, Device::kCUDA), whose
// tensor dtypes are the one statement of the GPU cast. The bf16 cast is FloatToBf16 (round to
// nearest even) on the host, the same bits as cuda::ToBf16.
#include "model/device_weights.h"

#include <cstdint>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/bf16.h"
#include "kernels/core/status_macros.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/core/cuda_util.h"
#endif

namespace tandem::model {
namespace {

#ifdef TANDEM_HAVE_CUDA
// dst (GPU, f32 or bf16) = src (host f32), cast on the host first when dst is bf16.
absl::Status CopyCast(const Context& ctx, const Tensor& src, const std::string& name, Tensor& dst) {
  TANDEM_CHECK_ARG(
      src.dtype() == DType::kF32 && src.device() == Device::kCPU && src.shape() == dst.shape(),
      "weights: ", name, " must be f32 ", ShapeString(dst.shape()), " on the host, got ",
      DTypeName(src.dtype()), " ", ShapeString(src.shape()), " on ", DeviceName(src.device()));
  if (dst.dtype() == DType::kF32) return kernels::cuda::CopyTensor(ctx, src, dst);
  Tensor host = Tensor::Empty(src.shape(), DType::kBF16);
  const float* in = src.data<float>();
  uint16_t* out = host.data<uint16_t>();
  ctx.ParallelFor(src.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = FloatToBf16(in[i]);
  });
  return kernels::cuda::CopyTensor(ctx, host, dst);
}
#endif

}  // namespace

absl::StatusOr<ModelWeights> UploadWeights(const Context& ctx, const ModelConfig& config,
                                           const ModelWeights& weights) {
  if (ctx.device() != Device::kCUDA) {
    return absl::FailedPreconditionError("UploadWeights: needs a CUDA context, got a CPU one");
  }
#ifndef TANDEM_HAVE_CUDA
  return absl::FailedPreconditionError(
      "UploadWeights: Tandem was built without CUDA (TANDEM_CUDA=OFF)");
#else
  std::vector<std::pair<std::string, Tensor> > src;  // views, in ForEachParameter order
  weights.ForEachParameter(
      [&](const std::string& name, const Tensor& t) { src.emplace_back(name, t); });
  ModelWeights out;
  try {
    out = AllocateWeights(config, Device::kCUDA);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("UploadWeights: not enough GPU memory for the weights");
  }
  size_t next = 0;
  absl::Status status;
  out.ForEachParameter([&](const std::string& name, Tensor& dst) {
    if (!status.ok()) return;
    if (next >= src.size() || src[next].first != name) {
      status = absl::InvalidArgumentError(
          absl::StrCat("weights: expected ", name, " at position ", next, " for this config, got ",
                       next < src.size() ? src[next].first : std::string("nothing")));
      return;
    }
    status = CopyCast(ctx, src[next++].second, name, dst);
  });
  TANDEM_RETURN_IF_ERROR(status);
  TANDEM_CHECK_ARG(next == src.size(), "weights: ", src.size(), " tensors for a config of ", next);
  TANDEM_RETURN_IF_ERROR(kernels::cuda::Synchronize(ctx));
  return out;
#endif
}

}  // namespace tandem::model

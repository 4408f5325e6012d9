// CUDA error statuses, device detection, host/device Tensor copies and the f32 <-> bf16 casts.
// The casts are elementwise, so trivially batch-invariant; the device cast reproduces the host's
// FloatToBf16 bit for bit.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "kernels/core/bf16.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kCastThreads = 256;

// FloatToBf16 (bf16.h) on the device, bit for bit: NaN payloads too, which the hardware
// conversion would canonicalise.
__device__ __forceinline__ uint16_t FloatToBf16Bits(float f) {
  const uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

__global__ void F32ToBf16Kernel(const float* __restrict__ in, uint16_t* __restrict__ out,
                                int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = FloatToBf16Bits(in[i]);
  }
}

__global__ void Bf16ToF32Kernel(const __nv_bfloat16* __restrict__ in, float* __restrict__ out,
                                int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}

int CastBlocks(int64_t n) {
  int64_t blocks = (n + kCastThreads - 1) / kCastThreads;
  return static_cast<int>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

cudaMemcpyKind CopyKind(Device from, Device to) {
  if (from == Device::kCPU)
    return to == Device::kCPU ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice;
  return to == Device::kCPU ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
}

// Tensor::Empty reports a failed allocation by throwing; kernels report errors as statuses.
absl::StatusOr<Tensor> Allocate(const Shape& shape, DType dtype, Device device) {
  try {
    return Tensor::Empty(shape, dtype, device);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", DTypeName(dtype), " ", ShapeString(shape), " on ", DeviceName(device)));
  }
}

// Host-side cast through the reference conversions in bf16.h.
void CastOnHost(const Tensor& in, Tensor& out) {
  const int64_t n = in.numel();
  if (in.dtype() == DType::kF32) {
    for (int64_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = FloatToBf16(in.data<float>()[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out.data<float>()[i] = Bf16ToFloat(in.data<uint16_t>()[i]);
  }
}

absl::StatusOr<Tensor> Cast(const Context& ctx, const Tensor& t, DType to, const char* name) {
  TANDEM_CHECK_ARG(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16, name,
                   ": expected an f32 or bf16 tensor, got ", DTypeName(t.dtype()));
  TANDEM_CHECK_ARG(t.defined() || t.numel() == 0, name, ": undefined tensor");
  TANDEM_ASSIGN_OR_RETURN(Tensor out, Allocate(t.shape(), to, t.device()));
  if (t.dtype() == to) {
    TANDEM_RETURN_IF_ERROR(CopyTensor(ctx, t, out));
    return out;
  }
  const int64_t n = t.numel();
  if (t.device() == Device::kCPU) {
    CastOnHost(t, out);
    return out;
  }
  if (n == 0) return out;
  if (to == DType::kBF16) {
    F32ToBf16Kernel<<<CastBlocks(n), kCastThreads, 0, StreamOf(ctx)>>>(t.data<float>(),
                                                                       out.data<uint16_t>(), n);
  } else {
    Bf16ToF32Kernel<<<CastBlocks(n), kCastThreads, 0, StreamOf(ctx)>>>(
        static_cast<const __nv_bfloat16*>(t.raw_data()), out.data<float>(), n);
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return out;
}

}  // namespace

absl::Status CudaErrorToStatus(cudaError_t error, const char* expr, const char* file, int line) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      file, ":", line, ": ", expr, ": ", cudaGetErrorName(error), ": ", cudaGetErrorString(error)));
}

absl::Status StreamBuffer::Allocate(cudaStream_t stream, size_t bytes) {
  TANDEM_CHECK_ARG(data_ == nullptr, "StreamBuffer::Allocate: already allocated");
  stream_ = stream;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&data_, std::max<size_t>(1, bytes), stream));
  return absl::OkStatus();
}

int Multiprocessors() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cached[kMaxDevices] = {};
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    cudaGetLastError();
    return 0;
  }
  if (cached[dev].load() == 0 &&
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess) {
    cached[dev].store(sms);
  }
  cudaGetLastError();
  return cached[dev].load();
}

bool CudaAvailable() {
  static const bool available = [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();  // clear the error so that later checks do not report it
      return false;
    }
    return count > 0;
  }();
  return available;
}

absl::Status Synchronize(const Context& ctx) {
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(StreamOf(ctx)));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status CopyTensor(const Context& ctx, const Tensor& src, Tensor& dst) {
  TANDEM_CHECK_ARG(src.dtype() == dst.dtype() && src.shape() == dst.shape(), "dst: expected ",
                   DTypeName(src.dtype()), " ", ShapeString(src.shape()), ", got ",
                   DTypeName(dst.dtype()), " ", ShapeString(dst.shape()));
  TANDEM_CHECK_ARG(src.defined() || src.numel() == 0, "src: undefined tensor");
  TANDEM_CHECK_ARG(dst.defined() || dst.numel() == 0, "dst: undefined tensor");
  if (src.nbytes() == 0) return absl::OkStatus();
  if (src.device() == Device::kCPU && dst.device() == Device::kCPU) {
    std::memcpy(dst.raw_data(), src.raw_data(), src.nbytes());  // works without a GPU
    return absl::OkStatus();
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(),
                                              CopyKind(src.device(), dst.device()), StreamOf(ctx)));
  if (dst.device() == Device::kCPU) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(StreamOf(ctx)));
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> CopyToDevice(const Context& ctx, const Tensor& t) {
  TANDEM_ASSIGN_OR_RETURN(Tensor out, Allocate(t.shape(), t.dtype(), Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(CopyTensor(ctx, t, out));
  return out;
}

absl::StatusOr<Tensor> CopyToHost(const Context& ctx, const Tensor& t) {
  TANDEM_ASSIGN_OR_RETURN(Tensor out, Allocate(t.shape(), t.dtype(), Device::kCPU));
  TANDEM_RETURN_IF_ERROR(CopyTensor(ctx, t, out));
  return out;
}

absl::StatusOr<Tensor> ToBf16(const Context& ctx, const Tensor& t) {
  return Cast(ctx, t, DType::kBF16, "ToBf16");
}

absl::StatusOr<Tensor> ToF32(const Context& ctx, const Tensor& t) {
  return Cast(ctx, t, DType::kF32, "ToF32");
}

}  // namespace tandem::kernels::cuda

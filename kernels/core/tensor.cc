#include "kernels/core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#ifdef TANDEM_HAVE_CUDA
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <set>
#endif

namespace tandem {
namespace {
constexpr size_t kCpuAlignment = 64;

#ifdef TANDEM_HAVE_CUDA
// Sets the current device's default memory pool to keep what is freed (once per device).
void KeepFreedCudaMemory() {
  static std::mutex mu;
  static std::set<int> done;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return;
  std::lock_guard<std::mutex> lock(mu);
  if (!done.insert(device).second) return;
  cudaMemPool_t pool = nullptr;
  if (cudaDeviceGetDefaultMemPool(&pool, device) != cudaSuccess) return;
  uint64_t keep_all = UINT64_MAX;
  cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all);
}
#endif

std::shared_ptr<void> Allocate(size_t nbytes, Device device) {
  size_t padded = (nbytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
  if (padded == 0) padded = kCpuAlignment;
  if (device == Device::kCPU) {
    void* p = std::aligned_alloc(kCpuAlignment, padded);
    if (p == nullptr) throw std::bad_alloc();
    return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  }
#ifdef TANDEM_HAVE_CUDA
  // Stream-ordered on the legacy default stream, which orders itself with every blocking stream:
  // cudaFree would synchronise the whole device on every temporary a kernel call drops, and the
  // model drops hundreds per step. The pool keeps freed memory for reuse instead of returning it
  // to the driver at each synchronisation.
  KeepFreedCudaMemory();
  void* p = nullptr;
  if (cudaMallocAsync(&p, padded, /*stream=*/nullptr) != cudaSuccess) throw std::bad_alloc();
  return std::shared_ptr<void>(p, [](void* q) { cudaFreeAsync(q, /*stream=*/nullptr); });
#else
  throw std::runtime_error("Tensor: CUDA memory requested but Tandem was built without CUDA");
#endif
}
}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kI64:
      return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
  }
  return "?";
}

const char* DeviceName(Device device) { return device == Device::kCPU ? "cpu" : "cuda"; }

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

Tensor Tensor::Empty(Shape shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.holder_ = Allocate(t.nbytes(), device);
  t.data_ = t.holder_.get();
  return t;
}

Tensor Tensor::Zeros(Shape shape, DType dtype, Device device) {
  Tensor t = Empty(std::move(shape), dtype, device);
  t.SetZero();
  return t;
}

Tensor Tensor::View(void* data, Shape shape, DType dtype, Device device) {
  Tensor t;
  t.data_ = data;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

absl::StatusOr<Tensor> Tensor::Reshape(Shape shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  if (t.numel() != numel()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Reshape: cannot view ", ShapeString(shape_), " as ", ShapeString(t.shape_)));
  }
  return t;
}

Tensor Tensor::Rows(int64_t begin, int64_t end) const {
  Tensor t = *this;
  int64_t row = numel() / (shape_.empty() || shape_[0] == 0 ? 1 : shape_[0]);
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + begin * row * static_cast<int64_t>(DTypeSize(dtype_));
  return t;
}

Tensor Tensor::Clone() const {
  Tensor t = Empty(shape_, dtype_, device_);
  if (device_ == Device::kCPU) {
    std::memcpy(t.data_, data_, nbytes());
  } else {
#ifdef TANDEM_HAVE_CUDA
    cudaMemcpy(t.data_, data_, nbytes(), cudaMemcpyDeviceToDevice);
#endif
  }
  return t;
}

void Tensor::SetZero() {
  if (device_ == Device::kCPU) {
    std::memset(data_, 0, nbytes());
  } else {
#ifdef TANDEM_HAVE_CUDA
    cudaMemset(data_, 0, nbytes());
#endif
  }
}

absl::Status ExpectAligned16(const Tensor& t, absl::string_view name,
                             absl::string_view requirement) {
  if (reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", requirement));
}

absl::Status ExpectTensor(const Tensor& t, absl::string_view name, DType dtype,
                          std::initializer_list<int64_t> shape, Device device) {
  bool ok = t.dtype() == dtype && t.device() == device &&
            t.rank() == static_cast<int>(shape.size()) &&
            (t.raw_data() != nullptr || t.numel() == 0);
  if (ok) {
    int i = 0;
    for (int64_t d : shape) {
      if (d >= 0 && t.dim(i) != d) ok = false;
      ++i;
    }
  }
  if (ok) return absl::OkStatus();
  std::vector<std::string> want;
  for (int64_t d : shape) want.push_back(d < 0 ? "*" : std::to_string(d));
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": expected ", DTypeName(dtype), " [", absl::StrJoin(want, ", "), "] on ",
                   DeviceName(device), ", got ",
                   t.raw_data() == nullptr && t.numel() != 0
                       ? "an undefined tensor"
                       : absl::StrCat(DTypeName(t.dtype()), " ", ShapeString(t.shape()), " on ",
                                      DeviceName(t.device()))));
}

}  // namespace tandem

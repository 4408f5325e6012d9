// Tensor: a typed, shaped, contiguous block of memory on the CPU or a CUDA device, owning or a
// view. Deliberately small: no strides, no autograd, no broadcasting. Kernels read shapes from it
// and validate them with ExpectTensor, which produces an error that names the argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tandem {

enum class DType { kF32, kBF16, kI32, kI64 };
enum class Device { kCPU, kCUDA };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);
const char* DeviceName(Device device);

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<uint16_t> {  // bf16 bits
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};

using Shape = std::vector<int64_t>;
std::string ShapeString(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // Allocates uninitialised (Empty) or zeroed (Zeros) memory. CPU memory is 64-byte aligned.
  static Tensor Empty(Shape shape, DType dtype, Device device = Device::kCPU);
  static Tensor Zeros(Shape shape, DType dtype, Device device = Device::kCPU);
  // A non-owning view of memory the caller keeps alive.
  static Tensor View(void* data, Shape shape, DType dtype, Device device = Device::kCPU);
  // Copies host values into a new CPU tensor.
  template <typename T>
  static Tensor FromVector(const std::vector<T>& values, const Shape& shape);

  bool defined() const { return data_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  bool owning() const { return holder_ != nullptr; }
  // True when both are views of one owned allocation (e.g. rows of one tensor).
  bool SharesStorage(const Tensor& other) const {
    return holder_ != nullptr && holder_ == other.holder_;
  }

  void* raw_data() { return data_; }
  const void* raw_data() const { return data_; }
  // Typed access. REQUIRES: T matches dtype() (checked in debug builds).
  template <typename T>
  T* data();
  template <typename T>
  const T* data() const;

  // Same memory, new shape. REQUIRES: same number of elements.
  absl::StatusOr<Tensor> Reshape(Shape shape) const;
  // Rows [begin, end) along dimension 0, sharing memory. REQUIRES: 0 <= begin <= end <= dim(0).
  Tensor Rows(int64_t begin, int64_t end) const;
  // Deep copy on the same device (CPU only for now).
  Tensor Clone() const;
  // Fills with zeros.
  void SetZero();

 private:
  std::shared_ptr<void> holder_;  // keeps owned memory alive; null for external views
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
};

// Checks dtype, device and shape; a dimension of -1 in `shape` matches anything. On mismatch
// returns InvalidArgument naming `name`, e.g. "q: expected f32 [T, 4, 64] on cpu, got f32 [7, 2,
// 64]".
absl::Status ExpectTensor(const Tensor& t, absl::string_view name, DType dtype,
                          std::initializer_list<int64_t> shape, Device device = Device::kCPU);

// Checks that t's data starts on a 16-byte boundary (what kernels that move 16 bytes at a time
// need); otherwise returns InvalidArgument "<name>: <requirement>".
absl::Status ExpectAligned16(const Tensor& t, absl::string_view name,
                             absl::string_view requirement);

// ----------------------------------------------------------------------------------------------
template <typename T>
T* Tensor::data() {
  return static_cast<T*>(data_);
}
template <typename T>
const T* Tensor::data() const {
  return static_cast<const T*>(data_);
}
template <typename T>
Tensor Tensor::FromVector(const std::vector<T>& values, const Shape& shape) {
  Tensor t = Empty(shape, DTypeOf<T>::value);
  std::copy(values.begin(), values.begin() + std::min<size_t>(values.size(), t.numel()),
            t.data<T>());
  return t;
}

}  // namespace tandem

// Helpers for the CUDA kernel tests: skip without a GPU, move float data to and from the device in
// f32 or bf16 storage, and round host data to bf16 so CPU and GPU kernels see the same values.
#pragma once

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/bf16.h"
#include "kernels/core/context.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/tensor.h"

// Skips the test (not fails) on machines without a CUDA device.
#define TANDEM_SKIP_WITHOUT_GPU()                                                    \
  do {                                                                               \
    if (!::tandem::kernels::cuda::CudaAvailable()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

#define TANDEM_ASSERT_OK(expr)                \
  do {                                        \
    const ::absl::Status tandem_s_ = (expr);  \
    ASSERT_TRUE(tandem_s_.ok()) << tandem_s_; \
  } while (0)

namespace tandem::testing {

// The context GPU tests launch with: default stream (a CPU pool of one thread for CPU kernels).
inline const Context& GpuTestContext() {
  static const Context ctx = Context::Cpu(1);
  return ctx;
}

// The context for calls through the public ops, which dispatch on the context's device: device 0,
// default stream. (GpuTestContext would send them to the CPU kernels.)
inline const Context& CudaDispatchContext() {
  static const Context ctx = Context::Cuda();
  return ctx;
}

inline std::vector<float> RoundedToBf16(std::vector<float> v) {
  for (float& x : v) x = RoundToBf16(x);
  return v;
}

// A new device tensor holding `values` in `dtype` storage (f32, or bf16 rounded to nearest even).
inline Tensor ToDevice(const std::vector<float>& values, Shape shape, DType dtype = DType::kF32) {
  Tensor host = Tensor::FromVector(values, shape);
  if (dtype == DType::kBF16) {
    Tensor h16 = Tensor::Empty(shape, DType::kBF16);
    for (int64_t i = 0; i < host.numel(); ++i) h16.data<uint16_t>()[i] = FloatToBf16(values[i]);
    host = h16;
  }
  auto dev = kernels::cuda::CopyToDevice(GpuTestContext(), host);
  EXPECT_TRUE(dev.ok()) << dev.status();
  return dev.ok() ? *dev : Tensor();
}

// The values of a device (or host) f32 or bf16 tensor, as floats.
inline std::vector<float> ToHostFloats(const Tensor& t) {
  auto host = kernels::cuda::CopyToHost(GpuTestContext(), t);
  EXPECT_TRUE(host.ok()) << host.status();
  std::vector<float> out(host.ok() ? t.numel() : 0);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] =
        t.dtype() == DType::kBF16 ? Bf16ToFloat(host->data<uint16_t>()[i]) : host->data<float>()[i];
  }
  return out;
}

}  // namespace tandem::testing

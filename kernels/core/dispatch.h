// Device dispatch for the top-level kernel APIs (kernels/<op>/<op>.h): one line at the top of each
// CPU definition sends a CUDA context to the op's cuda:: entry point, so model code calls one API
// for both devices. Without CUDA in the build, a CUDA context gets FailedPrecondition instead of
// reaching CPU code that would misread device pointers.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/context.h"

namespace tandem::kernels::internal {

inline absl::Status BuiltWithoutCuda(const char* op) {
  return absl::FailedPreconditionError(absl::StrCat(
      op, ": the context is a CUDA context, but Tandem was built without CUDA (TANDEM_CUDA=OFF)"));
}

inline absl::Status NoCudaImplementation(const char* op) {
  return absl::UnimplementedError(absl::StrCat(op, ": no CUDA implementation yet"));
}

}  // namespace tandem::kernels::internal

// `call` (a cuda:: entry point returning absl::Status) is only expanded in CUDA builds.
#ifdef TANDEM_HAVE_CUDA
#define TANDEM_DISPATCH_CUDA(ctx, call)                           \
  do {                                                            \
    if ((ctx).device() == ::tandem::Device::kCUDA) return (call); \
  } while (0)
#else
#define TANDEM_DISPATCH_CUDA(ctx, call)                               \
  do {                                                                \
    if ((ctx).device() == ::tandem::Device::kCUDA) {                  \
      return ::tandem::kernels::internal::BuiltWithoutCuda(__func__); \
    }                                                                 \
  } while (0)
#endif

// For an op without a CUDA implementation: a CUDA context gets Unimplemented naming the op.
#define TANDEM_NO_CUDA(ctx)                                               \
  do {                                                                    \
    if ((ctx).device() == ::tandem::Device::kCUDA) {                      \
      return ::tandem::kernels::internal::NoCudaImplementation(__func__); \
    }                                                                     \
  } while (0)

// CPU embedding lookup (a row copy per token) and its gradient. The gradient is a scatter-add
// whose order matters for repeated ids, so threads split the D columns and every column adds the
// tokens in ascending t: the result is the same for any thread count.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/embedding/embedding.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/embedding/embedding_cuda.h"
#endif

namespace tandem::kernels {
namespace {

absl::Status CheckIds(const Tensor& ids, int64_t vocab) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(ids, "ids", DType::kI32, {-1}));
  const int32_t* p = ids.data<int32_t>();
  for (int64_t t = 0; t < ids.dim(0); ++t) {
    TANDEM_CHECK_ARG(p[t] >= 0 && p[t] < vocab, "ids: ids[", t, "] = ", p[t],
                     " is outside the vocabulary [0, ", vocab, ")");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EmbeddingFwd(const Context& ctx, const Tensor& table, const Tensor& ids, Tensor& out) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::EmbeddingFwd(ctx, table, ids, out));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(table, "table", DType::kF32, {-1, -1}));
  const int64_t d = table.dim(1);
  TANDEM_RETURN_IF_ERROR(CheckIds(ids, table.dim(0)));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(out, "out", DType::kF32, {ids.dim(0), d}));
  const float* tab = table.data<float>();   // [V, D]
  const int32_t* id = ids.data<int32_t>();  // [T]
  float* o = out.data<float>();             // [T, D]
  ctx.ParallelFor(ids.dim(0), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      std::memcpy(o + t * d, tab + static_cast<int64_t>(id[t]) * d, sizeof(float) * d);
    }
  });
  return absl::OkStatus();
}

absl::Status EmbeddingBwd(const Context& ctx, const Tensor& ids, const Tensor& dout,
                          Tensor& dtable) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::EmbeddingBwd(ctx, ids, dout, dtable));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dtable, "dtable", DType::kF32, {-1, -1}));
  const int64_t d = dtable.dim(1);
  TANDEM_RETURN_IF_ERROR(CheckIds(ids, dtable.dim(0)));
  const int64_t t = ids.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dout, "dout", DType::kF32, {t, d}));
  const int32_t* id = ids.data<int32_t>();  // [T]
  const float* g = dout.data<float>();      // [T, D]
  float* dt = dtable.data<float>();         // [V, D]
  ctx.ParallelFor(
      d,
      [&](int64_t c0, int64_t c1) {
        for (int64_t r = 0; r < t; ++r) {
          float* row = dt + static_cast<int64_t>(id[r]) * d;
          for (int64_t c = c0; c < c1; ++c) row[c] += g[r * d + c];
        }
      },
      16);
  return absl::OkStatus();
}

}  // namespace tandem::kernels

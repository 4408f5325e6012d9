// Device-aware buffers and data movement for the model: the few places where model code moves
// bytes itself instead of calling a kernel (splitting the fused qkv projection, writing K/V into
// cache blocks, gathering linear-attention slots, picking each sequence's last row). On a CPU
// context they are memcpy loops; on a CUDA context each call is one small copy kernel (device
// memory on both sides). Pure data movement, so a row's bits never depend on the device path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::model::internal {

inline bool OnCuda(const Context& ctx) { return ctx.device() == Device::kCUDA; }

// An uninitialised tensor on ctx's device.
inline Tensor Buffer(const Context& ctx, Shape shape, DType dtype = DType::kF32) {
  return Tensor::Empty(std::move(shape), dtype, ctx.device());
}

// The storage of activations that only enter GEMMs (the normalised stream, the SwiGLU product,
// the attention outputs): f32 on the CPU; bf16 on the GPU, the value the GEMM would round them to
// anyway (round to nearest even), which lets the pinned cuBLASLt path take them.
inline DType GemmInputDType(const Context& ctx) { return OnCuda(ctx) ? DType::kBF16 : DType::kF32; }

// Rows of logits [rows, vocab] f32 the LM head computes at a time (the forward's log-probs and
// their backward): every chunk's GEMM reads the whole LM head, so the GPU takes 2^26
// logits per chunk (256 MiB; ~430 rows of a 157K vocabulary instead of 26, where the reads of the
// LM head would cost more than its products), the CPU 2^22. Between 1 and `rows`.
inline int64_t LmHeadChunkRows(const Context& ctx, int64_t rows, int64_t vocab) {
  const int64_t elements = OnCuda(ctx) ? int64_t{1} << 26 : int64_t{1} << 22;
  return std::clamp<int64_t>(elements / std::max<int64_t>(vocab, 1), 1, std::max<int64_t>(rows, 1));
}

// `t` as f32 on its own device: t itself when it is f32, else an exact widening copy (GPU).
absl::StatusOr<Tensor> AsF32(const Context& ctx, const Tensor& t);

// `t` (a host tensor) on ctx's device: t itself on a CPU context, else a device copy.
absl::StatusOr<Tensor> ToContextDevice(const Context& ctx, const Tensor& t);
// `t` on the host: t itself when it is a host tensor, else a host copy (complete on return).
absl::StatusOr<Tensor> ToHost(const Context& ctx, const Tensor& t);

// dst [T, ...] = columns [col, col + w) of src [T, Ch] f32, with w = dst.numel() / T. dst is f32,
// or (CUDA only) bf16 rounded to nearest even.
absl::Status CopyColumns(const Context& ctx, const Tensor& src, int64_t col, Tensor& dst);

// Row copies between two tensors of one dtype on ctx's device, each seen as rows of `width`
// elements: row dst_rows[i] of dst = row src_rows[i] of src, for every i. The destination rows
// must be distinct. Indices are host vectors of the same length.
absl::Status CopyRows(const Context& ctx, const Tensor& src, const std::vector<int64_t>& src_rows,
                      Tensor& dst, const std::vector<int64_t>& dst_rows, int64_t width);

// The training pass's elementwise pieces (CPU and GPU do the same single fp32 operation per
// element, so the GPU results are the CPU's bits):
//   ScatterColumns: columns [col, col + w) of dst [T, Ch] = src [T, ...] f32 (the inverse of
//                   CopyColumns: the fused qkv projection's gradient), w = src.numel() / T.
//   AddInto:        dx [T, ...] += delta (same shape), f32.
//   ScaleInPlace:   t *= scale, f32 (the gradient clip).
//   CastInto:       dst = src f32 of one shape, dst f32 (copy) or bf16 (round to nearest even,
//                   NaNs quiet: FloatToBf16's bits). On the CPU only an f32 dst is accepted.
absl::Status ScatterColumns(const Context& ctx, const Tensor& src, int64_t col, Tensor& dst);
absl::Status AddInto(const Context& ctx, const Tensor& delta, Tensor& dx);
absl::Status ScaleInPlace(const Context& ctx, Tensor& t, float scale);
absl::Status CastInto(const Context& ctx, const Tensor& src, Tensor& dst);

#ifdef TANDEM_HAVE_CUDA
namespace cuda {
// The CUDA halves of the functions above (device_ops.cu); arguments already checked.
absl::Status CopyColumns(const Context& ctx, const Tensor& src, int64_t col, Tensor& dst);
absl::Status CopyRows(const Context& ctx, const Tensor& src, const std::vector<int64_t>& src_rows,
                      Tensor& dst, const std::vector<int64_t>& dst_rows, int64_t width);
absl::Status ScatterColumns(const Context& ctx, const Tensor& src, int64_t col, Tensor& dst);
absl::Status AddInto(const Context& ctx, const Tensor& delta, Tensor& dx);
absl::Status ScaleInPlace(const Context& ctx, Tensor& t, float scale);
absl::Status CastInto(const Context& ctx, const Tensor& src, Tensor& dst);
}  // namespace cuda
#endif

}  // namespace tandem::model::internal

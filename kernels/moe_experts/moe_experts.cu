// CUDA routed experts (contract rules 1 and 4), the CPU kernel's algorithm on the device: the
// (t, k) rows are grouped by expert with a deterministic counting sort, each expert runs
// cuda::GemmNT on its contiguous block (one tile for every M: a row's bits never depend on how
// many rows the expert got), and tokens combine their K outputs in rank order. The per-expert
// launches need the expert offsets on the host, so grouping costs one stream synchronisation.
// The backward runs the NN / TN products as GemmNT on transposed copies (weights, grouped rows).
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm_cuda.h"
#include "kernels/moe_experts/moe_experts_cuda.h"
#include "kernels/moe_experts/moe_experts_kernels.cuh"
#include "kernels/swiglu/swiglu_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr Device kGpu = Device::kCUDA;

struct Dims {
  int64_t t, k, e, dm, i;
  int64_t n() const { return t * k; }  // number of (t, k) rows
};

// Rows grouped by expert: expert e owns grouped positions [offset[e], offset[e + 1]).
struct Grouping {
  Tensor pos;                   // [N] i32 (GPU): grouped position of row r = t·K + k
  Tensor row_of;                // [N] i32 (GPU): the row at grouped position p
  std::vector<int32_t> offset;  // [E + 1] (host)
};

DType FloatDType(const Tensor& t) { return t.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32; }

char* Bytes(const Tensor& t) { return static_cast<char*>(const_cast<void*>(t.raw_data())); }
const int32_t* I32(const Tensor& t) { return static_cast<const int32_t*>(t.raw_data()); }
const float* F32(const Tensor& t) { return static_cast<const float*>(t.raw_data()); }

// Address of element (row, 0) of a row-major matrix, or of expert e's matrix in a stacked
// [E, rows, cols] tensor when row = e · rows.
void* RowPtr(const Tensor& t, int64_t row, int64_t width) {
  return Bytes(t) + row * width * static_cast<int64_t>(DTypeSize(t.dtype()));
}
// Element (0, col) of a row-major matrix: a column block of a transposed [·, N] buffer.
void* ColPtr(const Tensor& t, int64_t col) {
  return Bytes(t) + col * static_cast<int64_t>(DTypeSize(t.dtype()));
}
void* ExpertPtr(const Tensor& stacked, int64_t e) {
  return RowPtr(stacked, e * stacked.dim(1), stacked.dim(2));
}

unsigned Blocks(int64_t n, int64_t cap = 65535) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(n, cap)));
}

absl::Status CheckInputs(const Tensor& x, const Tensor& topk_idx, const Tensor& topk_weight,
                         const MoeExpertsWeights& w, Dims& d) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(x, "x", FloatDType(x), {-1, -1}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w.gate, "w.gate", DType::kBF16, {-1, -1, x.dim(1)}, kGpu));
  d = {x.dim(0), topk_idx.rank() == 2 ? topk_idx.dim(1) : -1, w.gate.dim(0), x.dim(1),
       w.gate.dim(1)};
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_idx, "topk_idx", DType::kI32, {d.t, -1}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_weight, "topk_weight", DType::kF32, {d.t, d.k}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w.up, "w.up", DType::kBF16, {d.e, d.i, d.dm}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w.down, "w.down", DType::kBF16, {d.e, d.dm, d.i}, kGpu));
  TANDEM_CHECK_ARG(d.e <= moe::kMaxExperts, "w.gate: at most ", moe::kMaxExperts, " experts, got ",
                   d.e);
  // Grids of the transposes put N / 32 in y: keep it within 65535 (and indices within i32).
  TANDEM_CHECK_ARG(d.n() <= int64_t{65535} * moe::kTransposeTile, "topk_idx: T·K = ", d.n(),
                   " rows is more than ", int64_t{65535} * moe::kTransposeTile);
  return absl::OkStatus();
}

absl::StatusOr<Grouping> GroupByExpert(const Context& ctx, const Tensor& topk_idx, const Dims& d) {
  cudaStream_t s = StreamOf(ctx);
  const int64_t n = d.n(), chunks = (n + moe::kSortChunk - 1) / moe::kSortChunk;
  const int e = static_cast<int>(d.e);
  Tensor hist = Tensor::Empty({chunks, d.e}, DType::kI32, kGpu);
  Tensor base = Tensor::Empty({chunks, d.e}, DType::kI32, kGpu);
  Tensor meta = Tensor::Empty({d.e + 2}, DType::kI32, kGpu);  // offsets [E + 1], then "bad"
  int32_t* offsets = static_cast<int32_t*>(meta.raw_data());
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(offsets + d.e + 1, 0, sizeof(int32_t), s));
  Grouping g{Tensor::Empty({n}, DType::kI32, kGpu), Tensor::Empty({n}, DType::kI32, kGpu), {}};
  const size_t smem = static_cast<size_t>(d.e) * sizeof(int32_t);
  moe::ExpertHistogramKernel<<<Blocks(chunks, chunks), moe::kSortThreads, smem, s>>>(
      I32(topk_idx), n, e, static_cast<int32_t*>(hist.raw_data()), offsets + d.e + 1);
  moe::ExpertScanKernel<<<1, 1024, smem, s>>>(chunks, e, I32(hist),
                                              static_cast<int32_t*>(base.raw_data()), offsets);
  moe::ExpertPlaceKernel<<<Blocks(chunks, chunks), moe::kSortThreads, 0, s>>>(
      I32(topk_idx), n, e, I32(base), offsets, static_cast<int32_t*>(g.pos.raw_data()),
      static_cast<int32_t*>(g.row_of.raw_data()));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  std::vector<int32_t> host(d.e + 2);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host.data(), offsets, host.size() * sizeof(int32_t),
                                              cudaMemcpyDeviceToHost, s));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
  TANDEM_CHECK_ARG(host[d.e + 1] == 0, "topk_idx: an expert index is outside [0, ", d.e, ")");
  g.offset.assign(host.begin(), host.begin() + d.e + 1);
  return g;
}

// dst[p, :] = src[index[p] / div, :] (· scale[index[p]]) for p < rows.
absl::Status Gather(const Context& ctx, int64_t rows, int64_t width, const int32_t* index, int div,
                    const float* scale, const Tensor& src, const Tensor& dst) {
  moe::GatherRowsKernel<<<Blocks(rows), 256, 0, StreamOf(ctx)>>>(rows, width, index, div, scale,
                                                                 ToFloatPtr(src), ToFloatPtr(dst));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// dst [B, C, R] = src [B, R, C] transposed per batch entry.
absl::Status Transpose(const Context& ctx, int64_t batch, int64_t rows, int64_t cols,
                       const Tensor& src, const Tensor& dst) {
  const dim3 grid(static_cast<unsigned>((cols + moe::kTransposeTile - 1) / moe::kTransposeTile),
                  static_cast<unsigned>((rows + moe::kTransposeTile - 1) / moe::kTransposeTile),
                  static_cast<unsigned>(batch));
  moe::TransposeKernel<<<grid, dim3(moe::kTransposeTile, moe::kTransposeRows), 0, StreamOf(ctx)>>>(
      rows, cols, ToFloatPtr(src), ToFloatPtr(dst));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status Combine(const Context& ctx, const Dims& d, const Grouping& g, const float* scale,
                     const Tensor& rows, const Tensor& out) {
  moe::CombineKernel<<<Blocks(d.t), 256, 0, StreamOf(ctx)>>>(d.t, d.k, d.dm, I32(g.pos), scale,
                                                             F32(rows), ToFloatPtr(out));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// One bf16-weight GEMM c[m, n] (+)= a[m, k] · b[n, k]ᵀ on raw rows.
absl::Status Gemm(const Context& ctx, int64_t m, int64_t n, int64_t k, const void* a, DType at,
                  int64_t lda, const void* b, int64_t ldb, void* c, DType ct, int64_t ldc,
                  bool accumulate) {
  GemmNTArgs args;
  args.m = m, args.n = n, args.k = k;
  args.a = a, args.a_dtype = at, args.lda = lda;
  args.b = b, args.b_dtype = DType::kBF16, args.ldb = ldb;
  args.c = c, args.c_dtype = ct, args.ldc = ldc;
  args.accumulate = accumulate;
  return GemmNT(StreamOf(ctx), args);
}

// Calls fn(e, offset, count) for every expert with rows, ascending e.
template <typename Fn>
absl::Status ForEachExpert(const Grouping& g, Fn fn) {
  for (size_t e = 0; e + 1 < g.offset.size(); ++e) {
    const int64_t off = g.offset[e], m = g.offset[e + 1] - off;
    if (m > 0) TANDEM_RETURN_IF_ERROR(fn(static_cast<int64_t>(e), off, m));
  }
  return absl::OkStatus();
}

absl::Status ZeroIfEmptyRows(const Context& ctx, const Dims& d, Tensor& t) {
  if (t.nbytes() > 0) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(t.raw_data(), 0, t.nbytes(), StreamOf(ctx)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MoeExpertsFwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w, Tensor& out,
                           MoeExpertsActivations* acts) {
  Dims d;
  TANDEM_RETURN_IF_ERROR(CheckInputs(x, topk_idx, topk_weight, w, d));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(out, "out", FloatDType(out), {d.t, d.dm}, kGpu));
  const int64_t n = d.n();
  if (acts != nullptr) {
    acts->gate = Tensor::Empty({n, d.i}, DType::kF32, kGpu);
    acts->up = Tensor::Empty({n, d.i}, DType::kF32, kGpu);
    acts->y = Tensor::Empty({n, d.dm}, DType::kF32, kGpu);
  }
  if (n == 0) return ZeroIfEmptyRows(ctx, d, out);
  TANDEM_ASSIGN_OR_RETURN(const Grouping g, GroupByExpert(ctx, topk_idx, d));
  Tensor xg = Tensor::Empty({n, d.dm}, DType::kBF16, kGpu);  // [N, Dm] grouped x
  TANDEM_RETURN_IF_ERROR(
      Gather(ctx, n, d.dm, I32(g.row_of), static_cast<int>(d.k), nullptr, x, xg));
  Tensor gate = Tensor::Empty({n, d.i}, DType::kF32, kGpu);  // [N, I] grouped
  Tensor up = Tensor::Empty({n, d.i}, DType::kF32, kGpu);    // [N, I] grouped
  TANDEM_RETURN_IF_ERROR(ForEachExpert(g, [&](int64_t e, int64_t off, int64_t m) {
    const void* a = RowPtr(xg, off, d.dm);
    TANDEM_RETURN_IF_ERROR(Gemm(ctx, m, d.i, d.dm, a, DType::kBF16, d.dm, ExpertPtr(w.gate, e),
                                d.dm, RowPtr(gate, off, d.i), DType::kF32, d.i, false));
    return Gemm(ctx, m, d.i, d.dm, a, DType::kBF16, d.dm, ExpertPtr(w.up, e), d.dm,
                RowPtr(up, off, d.i), DType::kF32, d.i, false);
  }));
  Tensor h = Tensor::Empty({n, d.i}, DType::kBF16, kGpu);  // [N, I] the down GEMM's bf16 input
  TANDEM_RETURN_IF_ERROR(SwigluFwd(ctx, gate, up, h));
  Tensor y = Tensor::Empty({n, d.dm}, DType::kF32, kGpu);  // [N, Dm] grouped expert outputs
  TANDEM_RETURN_IF_ERROR(ForEachExpert(g, [&](int64_t e, int64_t off, int64_t m) {
    return Gemm(ctx, m, d.dm, d.i, RowPtr(h, off, d.i), DType::kBF16, d.i, ExpertPtr(w.down, e),
                d.i, RowPtr(y, off, d.dm), DType::kF32, d.dm, false);
  }));
  TANDEM_RETURN_IF_ERROR(Combine(ctx, d, g, F32(topk_weight), y, out));
  if (acts != nullptr) {  // back to (t, k) row order
    TANDEM_RETURN_IF_ERROR(Gather(ctx, n, d.i, I32(g.pos), 1, nullptr, gate, acts->gate));
    TANDEM_RETURN_IF_ERROR(Gather(ctx, n, d.i, I32(g.pos), 1, nullptr, up, acts->up));
    TANDEM_RETURN_IF_ERROR(Gather(ctx, n, d.dm, I32(g.pos), 1, nullptr, y, acts->y));
  }
  return absl::OkStatus();
}

namespace {

// Grouped buffers of the backward pass, [N, ·] in grouped order.
struct BackwardRows {
  Tensor xg, dy;         // [N, Dm] bf16
  Tensor gate, up;       // [N, I] f32
  Tensor h, dgate, dup;  // [N, I] bf16
  Tensor dh;             // [N, I] f32
  Tensor dx;             // [N, Dm] f32
};

Tensor Bf16Gpu(Shape shape) { return Tensor::Empty(std::move(shape), DType::kBF16, kGpu); }

// dW[rows, cols] += aᵀ · bt over expert rows [off, off + m): a [N, rows] and bt [N, cols] arrive
// transposed ([rows, N], [cols, N]), so k walks the expert's rows in ascending token order.
absl::Status WeightGrad(const Context& ctx, int64_t n, int64_t off, int64_t m, const Tensor& at,
                        const Tensor& bt, Tensor& dw, int64_t e) {
  return Gemm(ctx, at.dim(0), bt.dim(0), m, ColPtr(at, off), DType::kBF16, n, ColPtr(bt, off), n,
              ExpertPtr(dw, e), DType::kF32, dw.dim(2), true);
}

// Per expert: dh = dy · W_down and dW_down += dyᵀ · h. NN products run on transposed weights.
absl::Status DownBackward(const Context& ctx, const Dims& d, const Grouping& g,
                          const MoeExpertsWeights& w, BackwardRows& b, MoeExpertsWeights& grads) {
  const int64_t n = d.n();
  Tensor wt = Bf16Gpu({d.e, d.i, d.dm});  // W_downᵀ per expert
  TANDEM_RETURN_IF_ERROR(Transpose(ctx, d.e, d.dm, d.i, w.down, wt));
  Tensor dyt = Bf16Gpu({d.dm, n}), ht = Bf16Gpu({d.i, n});
  TANDEM_RETURN_IF_ERROR(Transpose(ctx, 1, n, d.dm, b.dy, dyt));
  TANDEM_RETURN_IF_ERROR(Transpose(ctx, 1, n, d.i, b.h, ht));
  return ForEachExpert(g, [&](int64_t e, int64_t off, int64_t m) {
    TANDEM_RETURN_IF_ERROR(Gemm(ctx, m, d.i, d.dm, RowPtr(b.dy, off, d.dm), DType::kBF16, d.dm,
                                ExpertPtr(wt, e), d.dm, RowPtr(b.dh, off, d.i), DType::kF32, d.i,
                                false));
    return WeightGrad(ctx, n, off, m, dyt, ht, grads.down, e);
  });
}

// Per expert: dW_gate += dgateᵀ · x, dW_up += dupᵀ · x, dx = dgate · W_gate + dup · W_up (the
// second product added in fp32 after the first, as on the CPU).
absl::Status GateUpBackward(const Context& ctx, const Dims& d, const Grouping& g,
                            const MoeExpertsWeights& w, BackwardRows& b, MoeExpertsWeights& grads) {
  const int64_t n = d.n();
  Tensor wgt = Bf16Gpu({d.e, d.dm, d.i}), wut = Bf16Gpu({d.e, d.dm, d.i});  // W_gateᵀ, W_upᵀ
  TANDEM_RETURN_IF_ERROR(Transpose(ctx, d.e, d.i, d.dm, w.gate, wgt));
  TANDEM_RETURN_IF_ERROR(Transpose(ctx, d.e, d.i, d.dm, w.up, wut));
  Tensor xt = Bf16Gpu({d.dm, n}), dgt = Bf16Gpu({d.i, n}), dut = Bf16Gpu({d.i, n});
  TANDEM_RETURN_IF_ERROR(Transpose(ctx, 1, n, d.dm, b.xg, xt));
  TANDEM_RETURN_IF_ERROR(Transpose(ctx, 1, n, d.i, b.dgate, dgt));
  TANDEM_RETURN_IF_ERROR(Transpose(ctx, 1, n, d.i, b.dup, dut));
  return ForEachExpert(g, [&](int64_t e, int64_t off, int64_t m) {
    TANDEM_RETURN_IF_ERROR(WeightGrad(ctx, n, off, m, dgt, xt, grads.gate, e));
    TANDEM_RETURN_IF_ERROR(WeightGrad(ctx, n, off, m, dut, xt, grads.up, e));
    void* dx = RowPtr(b.dx, off, d.dm);
    TANDEM_RETURN_IF_ERROR(Gemm(ctx, m, d.dm, d.i, RowPtr(b.dgate, off, d.i), DType::kBF16, d.i,
                                ExpertPtr(wgt, e), d.i, dx, DType::kF32, d.dm, false));
    return Gemm(ctx, m, d.dm, d.i, RowPtr(b.dup, off, d.i), DType::kBF16, d.i, ExpertPtr(wut, e),
                d.i, dx, DType::kF32, d.dm, true);
  });
}

absl::Status CheckBackwardArgs(const Dims& d, const MoeExpertsActivations& acts, const Tensor& dout,
                               const Tensor& dx, const Tensor& dtopk_weight,
                               const MoeExpertsWeights& grads) {
  const int64_t n = d.n();
  TANDEM_RETURN_IF_ERROR(ExpectTensor(acts.gate, "acts.gate", DType::kF32, {n, d.i}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(acts.up, "acts.up", DType::kF32, {n, d.i}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(acts.y, "acts.y", DType::kF32, {n, d.dm}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dout, "dout", FloatDType(dout), {d.t, d.dm}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dx, "dx", FloatDType(dx), {d.t, d.dm}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dtopk_weight, "dtopk_weight", DType::kF32, {d.t, d.k}, kGpu));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(grads.gate, "grads.gate", DType::kF32, {d.e, d.i, d.dm}, kGpu));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(grads.up, "grads.up", DType::kF32, {d.e, d.i, d.dm}, kGpu));
  return ExpectTensor(grads.down, "grads.down", DType::kF32, {d.e, d.dm, d.i}, kGpu);
}

}  // namespace

absl::Status MoeExpertsBwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w,
                           const MoeExpertsActivations& acts, const Tensor& dout, Tensor& dx,
                           Tensor& dtopk_weight, MoeExpertsWeights& grads) {
  Dims d;
  TANDEM_RETURN_IF_ERROR(CheckInputs(x, topk_idx, topk_weight, w, d));
  TANDEM_RETURN_IF_ERROR(CheckBackwardArgs(d, acts, dout, dx, dtopk_weight, grads));
  const int64_t n = d.n();
  if (n == 0) return ZeroIfEmptyRows(ctx, d, dx);
  moe::TopkWeightGradKernel<<<Blocks((n + moe::kDotWarps - 1) / moe::kDotWarps),
                              32 * moe::kDotWarps, 0, StreamOf(ctx)>>>(
      n, d.k, d.dm, ToFloatPtr(dout), F32(acts.y), static_cast<float*>(dtopk_weight.raw_data()));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  TANDEM_ASSIGN_OR_RETURN(const Grouping g, GroupByExpert(ctx, topk_idx, d));
  auto f32 = [](Shape s) { return Tensor::Empty(std::move(s), DType::kF32, kGpu); };
  BackwardRows b{Bf16Gpu({n, d.dm}), Bf16Gpu({n, d.dm}), f32({n, d.i}),
                 f32({n, d.i}),      Bf16Gpu({n, d.i}),  Bf16Gpu({n, d.i}),
                 Bf16Gpu({n, d.i}),  f32({n, d.i}),      f32({n, d.dm})};
  const int32_t* row_of = I32(g.row_of);
  const int k = static_cast<int>(d.k);
  TANDEM_RETURN_IF_ERROR(Gather(ctx, n, d.dm, row_of, k, nullptr, x, b.xg));
  TANDEM_RETURN_IF_ERROR(Gather(ctx, n, d.dm, row_of, k, F32(topk_weight), dout, b.dy));
  TANDEM_RETURN_IF_ERROR(Gather(ctx, n, d.i, row_of, 1, nullptr, acts.gate, b.gate));
  TANDEM_RETURN_IF_ERROR(Gather(ctx, n, d.i, row_of, 1, nullptr, acts.up, b.up));
  TANDEM_RETURN_IF_ERROR(SwigluFwd(ctx, b.gate, b.up, b.h));
  TANDEM_RETURN_IF_ERROR(DownBackward(ctx, d, g, w, b, grads));
  TANDEM_RETURN_IF_ERROR(SwigluBwd(ctx, b.gate, b.up, b.dh, b.dgate, b.dup));
  TANDEM_RETURN_IF_ERROR(GateUpBackward(ctx, d, g, w, b, grads));
  return Combine(ctx, d, g, nullptr, b.dx, dx);
}

}  // namespace tandem::kernels::cuda

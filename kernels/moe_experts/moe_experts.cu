// CUDA routed experts (contract rules 1 and 4), the CPU kernel's algorithm on the device without a
// host synchronisation: a deterministic counting sort groups the (t, k) rows by expert and leaves
// the expert offsets on the device, and each projection is ONE grouped GEMM launch over (N-tile,
// M-tile slot) whose slots map to experts on the device (grouped_kernels.cuh). The tiles do
// cuda::GemmNT's arithmetic, so a row's bits never depend on how many rows its expert got. Scratch
// lives in a per-context buffer that only grows; the backward reads the weights in place (NN and
// TN tile loads), with no transposed copies.
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/moe_experts/grouped_launch.cuh"
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

DType FloatDType(const Tensor& t) { return t.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32; }
const int32_t* I32(const Tensor& t) { return static_cast<const int32_t*>(t.raw_data()); }
const float* F32(const Tensor& t) { return static_cast<const float*>(t.raw_data()); }
const uint16_t* U16(const void* p) { return static_cast<const uint16_t*>(p); }

unsigned Blocks(int64_t n, int64_t cap = 65535) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(n, cap)));
}

// Per-context scratch: one device buffer that only grows (stream-ordered, so a buffer still read
// by queued work is freed only after it), and a mapped host word the sort sets when an expert
// index is out of range. Calls on one context are expected from one thread at a time.
struct Scratch {
  void* data = nullptr;
  size_t bytes = 0;
  int32_t* bad_host = nullptr;  // pinned, mapped
  int32_t* bad_dev = nullptr;
  ~Scratch() {
    if (data != nullptr) cudaFree(data);
    if (bad_host != nullptr) cudaFreeHost(bad_host);
  }
};

absl::StatusOr<Scratch*> GetScratch(const Context& ctx) {
  auto slot = ctx.Resource("moe_experts.scratch", [] {
    auto s = std::make_shared<Scratch>();
    void* host = nullptr;
    if (cudaHostAlloc(&host, sizeof(int32_t), cudaHostAllocMapped) == cudaSuccess) {
      s->bad_host = static_cast<int32_t*>(host);
      *s->bad_host = 0;
      void* dev = nullptr;
      if (cudaHostGetDevicePointer(&dev, host, 0) == cudaSuccess) {
        s->bad_dev = static_cast<int32_t*>(dev);
      }
    }
    return std::static_pointer_cast<void>(s);
  });
  auto* s = static_cast<Scratch*>(slot.get());
  if (s->bad_dev == nullptr) return absl::InternalError("moe_experts: no mapped host memory");
  return s;
}

// Carves aligned sub-buffers out of the scratch buffer; a first pass with a null base sizes it.
class Carver {
 public:
  explicit Carver(char* base) : base_(base) {}
  template <typename T>
  T* Take(int64_t count) {
    char* p = base_ == nullptr ? nullptr : base_ + used_;
    used_ += (static_cast<size_t>(count) * sizeof(T) + 255) / 256 * 256;
    return reinterpret_cast<T*>(p);
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

// Sizes the layout with fn(Carver&), grows the scratch to fit and runs fn on the real buffer.
template <typename Fn>
absl::Status CarveScratch(const Context& ctx, Scratch& s, Fn fn) {
  Carver sizing(nullptr);
  fn(sizing);
  if (sizing.used() > s.bytes) {
    cudaStream_t stream = StreamOf(ctx);
    if (s.data != nullptr) TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(s.data, stream));
    s.data = nullptr, s.bytes = 0;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&s.data, sizing.used(), stream));
    s.bytes = sizing.used();
  }
  Carver real(static_cast<char*>(s.data));
  fn(real);
  return absl::OkStatus();
}

// An expert index out of range is found on the device without a synchronisation: its rows are
// dropped, and the next call on the context reports it (the flag is read once it has landed).
absl::Status TakeBadIndexFlag(Scratch& s) {
  volatile int32_t* flag = s.bad_host;
  if (*flag == 0) return absl::OkStatus();
  *flag = 0;
  return absl::InvalidArgumentError(
      "topk_idx: an earlier MoeExperts call on this context had an expert index outside [0, E); "
      "its rows were dropped");
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
  TANDEM_CHECK_ARG(d.e >= 1 && d.e <= moe::kMaxExperts, "w.gate: 1 to ", moe::kMaxExperts,
                   " experts, got ", d.e);
  // The tiles move 8 bf16 (16 bytes) at a time along Dm and I.
  TANDEM_CHECK_ARG(d.dm % 8 == 0 && d.i % 8 == 0, "w.gate: Dm = ", d.dm, " and I = ", d.i,
                   " must be multiples of 8");
  // Grouped positions are i32 and the M-tile slots (at most N / 16 + E) go in grid.y.
  TANDEM_CHECK_ARG(d.n() <= int64_t{1} << 30 && d.n() / 128 + d.e < 65535,
                   "topk_idx: T·K = ", d.n(), " rows is too many");
  return absl::OkStatus();
}

// Rows grouped by expert (device arrays): expert e owns grouped rows [offsets[e], offsets[e+1]);
// bucket E (offsets[E] .. offsets[E+1]) holds rows with an out-of-range index.
struct Grouping {
  int32_t *hist, *base, *offsets, *tile_off, *pos, *row_of;
  int tile_rows;
  int64_t chunks;
};

Grouping TakeGrouping(Carver& c, const Dims& d, int tile_rows) {
  const int64_t chunks = (d.n() + moe::kSortChunk - 1) / moe::kSortChunk;
  Grouping g;
  g.hist = c.Take<int32_t>(chunks * (d.e + 1));
  g.base = c.Take<int32_t>(chunks * (d.e + 1));
  g.offsets = c.Take<int32_t>(d.e + 2);
  g.tile_off = c.Take<int32_t>(d.e + 1);
  g.pos = c.Take<int32_t>(d.n());
  g.row_of = c.Take<int32_t>(d.n());
  g.tile_rows = tile_rows, g.chunks = chunks;
  return g;
}

absl::Status GroupByExpert(const Context& ctx, const Tensor& topk_idx, const Dims& d,
                           const Grouping& g, int32_t* bad) {
  cudaStream_t s = StreamOf(ctx);
  const int e = static_cast<int>(d.e);
  const size_t smem = static_cast<size_t>(d.e + 1) * sizeof(int32_t);
  moe::ExpertHistogramKernel<<<Blocks(g.chunks, g.chunks), moe::kSortThreads, smem, s>>>(
      I32(topk_idx), d.n(), e, g.hist, bad);
  moe::ExpertScanKernel<<<1, moe::kScanThreads, smem, s>>>(g.chunks, e, g.tile_rows, g.hist, g.base,
                                                           g.offsets, g.tile_off);
  moe::ExpertPlaceKernel<<<Blocks(g.chunks, g.chunks), moe::kSortThreads, 0, s>>>(
      I32(topk_idx), d.n(), e, g.base, g.offsets, g.pos, g.row_of);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

moe::Groups DeviceGroups(const Grouping& g, const Dims& d) {
  return {g.offsets, g.tile_off, static_cast<int>(d.e), g.tile_rows};
}

// dst[p, :] = src[index[p] / div, :] (· scale[index[p]]) for p < rows.
absl::Status Gather(const Context& ctx, int64_t rows, int64_t width, const int32_t* index, int div,
                    const float* scale, FloatPtr src, FloatPtr dst) {
  moe::GatherRowsKernel<<<Blocks(rows), 256, 0, StreamOf(ctx)>>>(rows, width, index, div, scale,
                                                                 src, dst);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status Combine(const Context& ctx, const Dims& d, const Tensor& topk_idx, const int32_t* pos,
                     const float* scale, const float* rows, const Tensor& out) {
  moe::CombineKernel<<<Blocks(d.t), 256, 0, StreamOf(ctx)>>>(
      d.t, d.k, d.dm, I32(topk_idx), static_cast<int>(d.e), pos, scale, rows, ToFloatPtr(out));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status ZeroIfEmptyRows(const Context& ctx, Tensor& t) {
  if (t.nbytes() > 0) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(t.raw_data(), 0, t.nbytes(), StreamOf(ctx)));
  }
  return absl::OkStatus();
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

absl::Status MoeExpertsFwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w, Tensor& out,
                           MoeExpertsActivations* acts) {
  Dims d;
  TANDEM_RETURN_IF_ERROR(CheckInputs(x, topk_idx, topk_weight, w, d));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(out, "out", FloatDType(out), {d.t, d.dm}, kGpu));
  TANDEM_ASSIGN_OR_RETURN(Scratch * scratch, GetScratch(ctx));
  TANDEM_RETURN_IF_ERROR(TakeBadIndexFlag(*scratch));
  const int64_t n = d.n();
  if (acts != nullptr) {
    acts->gate = Tensor::Empty({n, d.i}, DType::kF32, kGpu);
    acts->up = Tensor::Empty({n, d.i}, DType::kF32, kGpu);
    acts->y = Tensor::Empty({n, d.dm}, DType::kF32, kGpu);
  }
  if (n == 0) return ZeroIfEmptyRows(ctx, out);
  // bf16 x with aligned rows feeds the gate/up tiles directly; anything else is gathered first.
  const bool direct_x = x.dtype() == DType::kBF16 && Aligned16(x.raw_data());
  Grouping g;
  uint16_t* xg = nullptr;      // [N, Dm] bf16 grouped x (when not direct)
  __nv_bfloat16* h = nullptr;  // [N, I] bf16 grouped
  float* y = nullptr;          // [N, Dm] f32 (t, k) rows (when acts is null)
  TANDEM_RETURN_IF_ERROR(CarveScratch(ctx, *scratch, [&](Carver& c) {
    g = TakeGrouping(c, d, moe::TileRows(d.n(), d.e));
    xg = direct_x ? nullptr : c.Take<uint16_t>(n * d.dm);
    h = c.Take<__nv_bfloat16>(n * d.i);
    y = acts != nullptr ? nullptr : c.Take<float>(n * d.dm);
  }));
  if (acts != nullptr) y = static_cast<float*>(acts->y.raw_data());
  TANDEM_RETURN_IF_ERROR(GroupByExpert(ctx, topk_idx, d, g, scratch->bad_dev));
  moe::RowSource xs{U16(x.raw_data()), d.dm, g.row_of, static_cast<int>(d.k)};
  if (!direct_x) {
    TANDEM_RETURN_IF_ERROR(Gather(ctx, n, d.dm, g.row_of, static_cast<int>(d.k), nullptr,
                                  ToFloatPtr(x), FloatPtr{xg, true}));
    xs = {xg, d.dm, nullptr, 1};
  }
  moe::GateUpArgs gu{DeviceGroups(g, d),
                     xs,
                     U16(w.gate.raw_data()),
                     U16(w.up.raw_data()),
                     d.i,
                     d.dm,
                     g.row_of,
                     nullptr,
                     nullptr,
                     h};
  if (acts != nullptr) {
    gu.gate_out = static_cast<float*>(acts->gate.raw_data());
    gu.up_out = static_cast<float*>(acts->up.raw_data());
  }
  TANDEM_RETURN_IF_ERROR(moe::GateUp(ctx, n, gu));
  const moe::RowsArgs down{DeviceGroups(g, d),
                           {U16(h), d.i, nullptr, 1},
                           U16(w.down.raw_data()),
                           d.i,
                           d.dm * d.i,
                           d.dm,
                           d.i,
                           y,
                           d.dm,
                           g.row_of,
                           false};
  TANDEM_RETURN_IF_ERROR(moe::Rows<false>(ctx, n, down));
  return Combine(ctx, d, topk_idx, nullptr, F32(topk_weight), y, out);
}

namespace {

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

// Grouped buffers of the backward pass, [N, ·] in grouped order (scratch).
struct BackwardRows {
  uint16_t *xg, *dy;          // [N, Dm] bf16
  float *gate, *up, *dh;      // [N, I] f32
  uint16_t *h, *dgate, *dup;  // [N, I] bf16
  float* dx;                  // [N, Dm] f32
};

BackwardRows TakeBackwardRows(Carver& c, const Dims& d) {
  const int64_t n = d.n();
  BackwardRows b;
  b.xg = c.Take<uint16_t>(n * d.dm), b.dy = c.Take<uint16_t>(n * d.dm);
  b.gate = c.Take<float>(n * d.i), b.up = c.Take<float>(n * d.i), b.dh = c.Take<float>(n * d.i);
  b.h = c.Take<uint16_t>(n * d.i), b.dgate = c.Take<uint16_t>(n * d.i);
  b.dup = c.Take<uint16_t>(n * d.i), b.dx = c.Take<float>(n * d.dm);
  return b;
}

Tensor View(const void* p, int64_t rows, int64_t cols, DType dt) {
  return Tensor::View(const_cast<void*>(p), {rows, cols}, dt, kGpu);
}

// dh = dy · W_down per expert (NN), dW_down += dyᵀ · h (TN), then dgate, dup by SwiGLU's backward.
absl::Status DownBackward(const Context& ctx, const Dims& d, const Grouping& g,
                          const MoeExpertsWeights& w, const BackwardRows& b,
                          MoeExpertsWeights& grads) {
  const int64_t n = d.n();
  const moe::RowsArgs dh{DeviceGroups(g, d),
                         {b.dy, d.dm, nullptr, 1},
                         U16(w.down.raw_data()),
                         d.i,
                         d.dm * d.i,
                         d.i,
                         d.dm,
                         b.dh,
                         d.i,
                         nullptr,
                         false};
  TANDEM_RETURN_IF_ERROR(moe::Rows<true>(ctx, n, dh));
  TANDEM_RETURN_IF_ERROR(moe::WeightGrad(
      ctx, d.e,
      {g.offsets, b.dy, d.dm, b.h, d.i, d.dm, d.i, static_cast<float*>(grads.down.raw_data())}));
  Tensor dgate = View(b.dgate, n, d.i, DType::kBF16), dup = View(b.dup, n, d.i, DType::kBF16);
  return SwigluBwd(ctx, View(b.gate, n, d.i, DType::kF32), View(b.up, n, d.i, DType::kF32),
                   View(b.dh, n, d.i, DType::kF32), dgate, dup);
}

// dW_gate += dgateᵀ · x, dW_up += dupᵀ · x (TN), dx = dgate · W_gate + dup · W_up (NN, the second
// product added in fp32 after the first, as on the CPU).
absl::Status GateUpBackward(const Context& ctx, const Dims& d, const Grouping& g,
                            const MoeExpertsWeights& w, const BackwardRows& b,
                            MoeExpertsWeights& grads) {
  TANDEM_RETURN_IF_ERROR(moe::WeightGrad(ctx, d.e,
                                         {g.offsets, b.dgate, d.i, b.xg, d.dm, d.i, d.dm,
                                          static_cast<float*>(grads.gate.raw_data())}));
  TANDEM_RETURN_IF_ERROR(moe::WeightGrad(
      ctx, d.e,
      {g.offsets, b.dup, d.i, b.xg, d.dm, d.i, d.dm, static_cast<float*>(grads.up.raw_data())}));
  moe::RowsArgs dx{DeviceGroups(g, d),
                   {b.dgate, d.i, nullptr, 1},
                   U16(w.gate.raw_data()),
                   d.dm,
                   d.i * d.dm,
                   d.dm,
                   d.i,
                   b.dx,
                   d.dm,
                   nullptr,
                   false};
  TANDEM_RETURN_IF_ERROR(moe::Rows<true>(ctx, d.n(), dx));
  dx.a = {b.dup, d.i, nullptr, 1}, dx.b = U16(w.up.raw_data()), dx.accumulate = true;
  return moe::Rows<true>(ctx, d.n(), dx);
}

}  // namespace

absl::Status MoeExpertsBwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w,
                           const MoeExpertsActivations& acts, const Tensor& dout, Tensor& dx,
                           Tensor& dtopk_weight, MoeExpertsWeights& grads) {
  Dims d;
  TANDEM_RETURN_IF_ERROR(CheckInputs(x, topk_idx, topk_weight, w, d));
  TANDEM_RETURN_IF_ERROR(CheckBackwardArgs(d, acts, dout, dx, dtopk_weight, grads));
  TANDEM_ASSIGN_OR_RETURN(Scratch * scratch, GetScratch(ctx));
  TANDEM_RETURN_IF_ERROR(TakeBadIndexFlag(*scratch));
  const int64_t n = d.n();
  if (n == 0) return ZeroIfEmptyRows(ctx, dx);
  moe::TopkWeightGradKernel<<<Blocks((n + moe::kDotWarps - 1) / moe::kDotWarps),
                              32 * moe::kDotWarps, 0, StreamOf(ctx)>>>(
      n, d.k, d.dm, ToFloatPtr(dout), F32(acts.y), static_cast<float*>(dtopk_weight.raw_data()));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  Grouping g;
  BackwardRows b;
  TANDEM_RETURN_IF_ERROR(CarveScratch(ctx, *scratch, [&](Carver& c) {
    g = TakeGrouping(c, d, moe::TileRows(d.n(), d.e));
    b = TakeBackwardRows(c, d);
  }));
  TANDEM_RETURN_IF_ERROR(GroupByExpert(ctx, topk_idx, d, g, scratch->bad_dev));
  const int k = static_cast<int>(d.k);
  TANDEM_RETURN_IF_ERROR(
      Gather(ctx, n, d.dm, g.row_of, k, nullptr, ToFloatPtr(x), FloatPtr{b.xg, true}));
  TANDEM_RETURN_IF_ERROR(
      Gather(ctx, n, d.dm, g.row_of, k, F32(topk_weight), ToFloatPtr(dout), FloatPtr{b.dy, true}));
  TANDEM_RETURN_IF_ERROR(
      Gather(ctx, n, d.i, g.row_of, 1, nullptr, ToFloatPtr(acts.gate), FloatPtr{b.gate, false}));
  TANDEM_RETURN_IF_ERROR(
      Gather(ctx, n, d.i, g.row_of, 1, nullptr, ToFloatPtr(acts.up), FloatPtr{b.up, false}));
  Tensor h = View(b.h, n, d.i, DType::kBF16);
  TANDEM_RETURN_IF_ERROR(
      SwigluFwd(ctx, View(b.gate, n, d.i, DType::kF32), View(b.up, n, d.i, DType::kF32), h));
  TANDEM_RETURN_IF_ERROR(DownBackward(ctx, d, g, w, b, grads));
  TANDEM_RETURN_IF_ERROR(GateUpBackward(ctx, d, g, w, b, grads));
  return Combine(ctx, d, topk_idx, g.pos, nullptr, b.dx, dx);
}

}  // namespace tandem::kernels::cuda

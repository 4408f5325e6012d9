// CPU routed experts (contract rule 4). The (t, k) rows are grouped by expert, in ascending (t, k)
// order, so each expert runs dense GEMMs on a contiguous block; GEMM rows are batch-invariant, so
// y_{t,k} has the same bits whatever else is in the batch. Outputs are then combined per token in
// top-k rank order. Threads split rows or tokens (or GEMM tiles inside cpu::Gemm*), never a sum.
#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/gemm/gemm.h"
#include "kernels/moe_experts/moe_experts.h"
#include "kernels/swiglu/swiglu.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/moe_experts/moe_experts_cuda.h"
#endif

namespace tandem::kernels {
namespace {

struct Dims {
  int64_t t, k, e, dm, i;
  int64_t n() const { return t * k; }  // number of (t, k) rows
};

// Rows grouped by expert: expert e owns grouped positions [offset[e], offset[e + 1]); the row at
// grouped position p is row[p] = t·K + k, ascending within an expert; pos is row's inverse.
struct ExpertRows {
  std::vector<int64_t> offset;  // [E + 1]
  std::vector<int64_t> row;     // [T·K]
  std::vector<int64_t> pos;     // [T·K]
  int64_t count(int64_t e) const { return offset[e + 1] - offset[e]; }
};

ExpertRows GroupByExpert(const int32_t* idx, const Dims& d) {
  ExpertRows g{std::vector<int64_t>(d.e + 1, 0), std::vector<int64_t>(d.n()),
               std::vector<int64_t>(d.n())};
  for (int64_t r = 0; r < d.n(); ++r) ++g.offset[idx[r] + 1];
  for (int64_t e = 0; e < d.e; ++e) g.offset[e + 1] += g.offset[e];
  std::vector<int64_t> next(g.offset.begin(), g.offset.end() - 1);
  for (int64_t r = 0; r < d.n(); ++r) {
    int64_t p = next[idx[r]]++;
    g.row[p] = r;
    g.pos[r] = p;
  }
  return g;
}

absl::Status CheckInputs(const Tensor& x, const Tensor& topk_idx, const Tensor& topk_weight,
                         const MoeExpertsWeights& w, Dims& d) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(x, "x", DType::kF32, {-1, -1}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w.gate, "w.gate", DType::kF32, {-1, -1, x.dim(1)}));
  d = {x.dim(0), topk_idx.rank() == 2 ? topk_idx.dim(1) : -1, w.gate.dim(0), x.dim(1),
       w.gate.dim(1)};
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_idx, "topk_idx", DType::kI32, {d.t, -1}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_weight, "topk_weight", DType::kF32, {d.t, d.k}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w.up, "w.up", DType::kF32, {d.e, d.i, d.dm}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(w.down, "w.down", DType::kF32, {d.e, d.dm, d.i}));
  const int32_t* idx = topk_idx.data<int32_t>();
  for (int64_t r = 0; r < d.n(); ++r) {
    TANDEM_CHECK_ARG(idx[r] >= 0 && idx[r] < d.e, "topk_idx: expert ", idx[r], " at [", r / d.k,
                     ", ", r % d.k, "] is outside [0, ", d.e, ")");
  }
  return absl::OkStatus();
}

// dst[p, :] = src[src_row(p), :] for every grouped position p, width columns.
template <typename RowFn>
void GatherRows(const Context& ctx, int64_t n, RowFn src_row, const float* src, int64_t width,
                float* dst) {
  ctx.ParallelFor(n, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* s = src + src_row(p) * width;
      std::copy(s, s + width, dst + p * width);
    }
  });
}

// Expert e's weight matrix (rows × cols) inside a stacked [E, rows, cols] tensor.
const float* ExpertMatrix(const Tensor& stacked, int64_t e) {
  return stacked.data<float>() + e * stacked.dim(1) * stacked.dim(2);
}
float* ExpertMatrix(Tensor& stacked, int64_t e) {
  return stacked.data<float>() + e * stacked.dim(1) * stacked.dim(2);
}

// gate/up/h [N, I] and y [N, Dm] in grouped order from the grouped inputs xg [N, Dm].
void ExpertsForward(const Context& ctx, const Dims& d, const ExpertRows& g,
                    const MoeExpertsWeights& w, const float* xg, float* gate, float* up, float* h,
                    float* y) {
  for (int64_t e = 0; e < d.e; ++e) {
    const int64_t m = g.count(e), off = g.offset[e];
    if (m == 0) continue;
    cpu::GemmNT(ctx, m, d.i, d.dm, xg + off * d.dm, d.dm, ExpertMatrix(w.gate, e), d.dm,
                gate + off * d.i, d.i, false);
    cpu::GemmNT(ctx, m, d.i, d.dm, xg + off * d.dm, d.dm, ExpertMatrix(w.up, e), d.dm,
                up + off * d.i, d.i, false);
  }
  ctx.ParallelFor(d.n(), [&](int64_t p0, int64_t p1) {
    cpu::SwigluFwd((p1 - p0) * d.i, gate + p0 * d.i, up + p0 * d.i, h + p0 * d.i);
  });
  for (int64_t e = 0; e < d.e; ++e) {
    const int64_t m = g.count(e), off = g.offset[e];
    if (m == 0) continue;
    cpu::GemmNT(ctx, m, d.dm, d.i, h + off * d.i, d.i, ExpertMatrix(w.down, e), d.i, y + off * d.dm,
                d.dm, false);
  }
}

// out[t, :] = Σ_{k ascending} scale(t, k) · rows[pos[t·K + k], :], threads over tokens.
template <typename ScaleFn>
void CombinePerToken(const Context& ctx, const Dims& d, const ExpertRows& g, ScaleFn scale,
                     const float* rows, float* out) {
  ctx.ParallelFor(d.t, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* o = out + t * d.dm;
      std::fill(o, o + d.dm, 0.0f);
      for (int64_t k = 0; k < d.k; ++k) {
        const float s = scale(t * d.k + k);
        const float* r = rows + g.pos[t * d.k + k] * d.dm;
        for (int64_t c = 0; c < d.dm; ++c) o[c] += s * r[c];
      }
    }
  });
}

// dtopk_weight[t, k] = Σ_c dout[t, c] · y[t·K + k, c], c ascending.
void TopkWeightGrad(const Context& ctx, const Dims& d, const float* dout, const float* y,
                    float* dtw) {
  ctx.ParallelFor(d.t, [&](int64_t t0, int64_t t1) {
    for (int64_t r = t0 * d.k; r < t1 * d.k; ++r) {
      const float* o = dout + (r / d.k) * d.dm;
      const float* yr = y + r * d.dm;
      float acc = 0.0f;
      for (int64_t c = 0; c < d.dm; ++c) acc += o[c] * yr[c];
      dtw[r] = acc;
    }
  });
}

// Grouped buffers of the backward pass; see ExpertsBackward for who reads what when.
struct BackwardBuffers {
  std::vector<float> xg;     // [N, Dm] x rows
  std::vector<float> dy_dx;  // [N, Dm] dy = w · dout, then (reused) dx_{t,k}
  std::vector<float> gate;   // [N, I]
  std::vector<float> up;     // [N, I]
  std::vector<float> h;      // [N, I] silu(gate) · up, recomputed
  std::vector<float> dh;     // [N, I]
  std::vector<float> dgate;  // [N, I]
  std::vector<float> dup;    // [N, I]
};

// Per expert: dh = dy · W_down, dW_down += dyᵀ · h; swiglu backward; dW_gate += dgateᵀ · x,
// dW_up += dupᵀ · x, dx = dgate · W_gate + dup · W_up (written over dy, which is dead by then).
void ExpertsBackward(const Context& ctx, const Dims& d, const ExpertRows& g,
                     const MoeExpertsWeights& w, BackwardBuffers& b, MoeExpertsWeights& grads) {
  for (int64_t e = 0; e < d.e; ++e) {
    const int64_t m = g.count(e), off = g.offset[e];
    if (m == 0) continue;
    const float* dy = b.dy_dx.data() + off * d.dm;
    cpu::GemmNN(ctx, m, d.i, d.dm, dy, d.dm, ExpertMatrix(w.down, e), d.i, b.dh.data() + off * d.i,
                d.i, false);
    cpu::GemmTN(ctx, d.dm, d.i, m, dy, d.dm, b.h.data() + off * d.i, d.i,
                ExpertMatrix(grads.down, e), d.i, true);
  }
  ctx.ParallelFor(d.n(), [&](int64_t p0, int64_t p1) {
    const int64_t o = p0 * d.i;
    cpu::SwigluBwd((p1 - p0) * d.i, b.gate.data() + o, b.up.data() + o, b.dh.data() + o,
                   b.dgate.data() + o, b.dup.data() + o);
  });
  for (int64_t e = 0; e < d.e; ++e) {
    const int64_t m = g.count(e), off = g.offset[e];
    if (m == 0) continue;
    const float* dgate = b.dgate.data() + off * d.i;
    const float* dup = b.dup.data() + off * d.i;
    const float* xg = b.xg.data() + off * d.dm;
    float* dx = b.dy_dx.data() + off * d.dm;
    cpu::GemmTN(ctx, d.i, d.dm, m, dgate, d.i, xg, d.dm, ExpertMatrix(grads.gate, e), d.dm, true);
    cpu::GemmTN(ctx, d.i, d.dm, m, dup, d.i, xg, d.dm, ExpertMatrix(grads.up, e), d.dm, true);
    cpu::GemmNN(ctx, m, d.dm, d.i, dgate, d.i, ExpertMatrix(w.gate, e), d.dm, dx, d.dm, false);
    cpu::GemmNN(ctx, m, d.dm, d.i, dup, d.i, ExpertMatrix(w.up, e), d.dm, dx, d.dm, true);
  }
}

}  // namespace

absl::Status MoeExpertsFwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w, Tensor& out,
                           MoeExpertsActivations* acts) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::MoeExpertsFwd(ctx, x, topk_idx, topk_weight, w, out, acts));
  Dims d;
  TANDEM_RETURN_IF_ERROR(CheckInputs(x, topk_idx, topk_weight, w, d));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(out, "out", DType::kF32, {d.t, d.dm}));
  const ExpertRows g = GroupByExpert(topk_idx.data<int32_t>(), d);
  const int64_t n = d.n();
  std::vector<float> xy(n * d.dm);  // [N, Dm] gathered x, then (reused) the expert outputs y
  std::vector<float> gate(n * d.i), up(n * d.i), h(n * d.i);  // [N, I] each
  GatherRows(
      ctx, n, [&](int64_t p) { return g.row[p] / d.k; }, x.data<float>(), d.dm, xy.data());
  // The down GEMMs run after every gate/up GEMM has read xg, so y may overwrite it.
  ExpertsForward(ctx, d, g, w, xy.data(), gate.data(), up.data(), h.data(), xy.data());
  const float* tw = topk_weight.data<float>();
  CombinePerToken(
      ctx, d, g, [&](int64_t r) { return tw[r]; }, xy.data(), out.data<float>());
  if (acts != nullptr) {
    acts->gate = Tensor::Empty({n, d.i}, DType::kF32);
    acts->up = Tensor::Empty({n, d.i}, DType::kF32);
    acts->y = Tensor::Empty({n, d.dm}, DType::kF32);
    auto grouped_pos = [&](int64_t r) { return g.pos[r]; };
    GatherRows(ctx, n, grouped_pos, gate.data(), d.i, acts->gate.data<float>());
    GatherRows(ctx, n, grouped_pos, up.data(), d.i, acts->up.data<float>());
    GatherRows(ctx, n, grouped_pos, xy.data(), d.dm, acts->y.data<float>());
  }
  return absl::OkStatus();
}

absl::Status MoeExpertsBwd(const Context& ctx, const Tensor& x, const Tensor& topk_idx,
                           const Tensor& topk_weight, const MoeExpertsWeights& w,
                           const MoeExpertsActivations& acts, const Tensor& dout, Tensor& dx,
                           Tensor& dtopk_weight, MoeExpertsWeights& grads) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::MoeExpertsBwd(ctx, x, topk_idx, topk_weight, w, acts, dout, dx,
                                                dtopk_weight, grads));
  Dims d;
  TANDEM_RETURN_IF_ERROR(CheckInputs(x, topk_idx, topk_weight, w, d));
  const int64_t n = d.n();
  TANDEM_RETURN_IF_ERROR(ExpectTensor(acts.gate, "acts.gate", DType::kF32, {n, d.i}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(acts.up, "acts.up", DType::kF32, {n, d.i}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(acts.y, "acts.y", DType::kF32, {n, d.dm}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dout, "dout", DType::kF32, {d.t, d.dm}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dx, "dx", DType::kF32, {d.t, d.dm}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dtopk_weight, "dtopk_weight", DType::kF32, {d.t, d.k}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(grads.gate, "grads.gate", DType::kF32, {d.e, d.i, d.dm}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(grads.up, "grads.up", DType::kF32, {d.e, d.i, d.dm}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(grads.down, "grads.down", DType::kF32, {d.e, d.dm, d.i}));
  TopkWeightGrad(ctx, d, dout.data<float>(), acts.y.data<float>(), dtopk_weight.data<float>());

  const ExpertRows g = GroupByExpert(topk_idx.data<int32_t>(), d);
  BackwardBuffers b{std::vector<float>(n * d.dm), std::vector<float>(n * d.dm),
                    std::vector<float>(n * d.i),  std::vector<float>(n * d.i),
                    std::vector<float>(n * d.i),  std::vector<float>(n * d.i),
                    std::vector<float>(n * d.i),  std::vector<float>(n * d.i)};
  auto token_of = [&](int64_t p) { return g.row[p] / d.k; };
  auto row_of = [&](int64_t p) { return g.row[p]; };
  GatherRows(ctx, n, token_of, x.data<float>(), d.dm, b.xg.data());
  GatherRows(ctx, n, row_of, acts.gate.data<float>(), d.i, b.gate.data());
  GatherRows(ctx, n, row_of, acts.up.data<float>(), d.i, b.up.data());
  const float* tw = topk_weight.data<float>();
  const float* dout_data = dout.data<float>();
  ctx.ParallelFor(n, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {  // dy_{t,k} = w_{t,k} · dout_t
      const float wt = tw[g.row[p]];
      const float* o = dout_data + token_of(p) * d.dm;
      for (int64_t c = 0; c < d.dm; ++c) b.dy_dx[p * d.dm + c] = wt * o[c];
    }
    cpu::SwigluFwd((p1 - p0) * d.i, b.gate.data() + p0 * d.i, b.up.data() + p0 * d.i,
                   b.h.data() + p0 * d.i);
  });
  ExpertsBackward(ctx, d, g, w, b, grads);
  CombinePerToken(
      ctx, d, g, [](int64_t) { return 1.0f; }, b.dy_dx.data(), dx.data<float>());
  return absl::OkStatus();
}

}  // namespace tandem::kernels

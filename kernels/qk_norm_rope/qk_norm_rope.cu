// CUDA per-head RMSNorm + RoPE: one block per (t, h) head row for the forward and the row part of
// the backward, one thread per column for dw (rows ascending, no atomics). The cos/sin rows come
// from cpu::RopeCosSin on the host: kept per context in a table by position (built once, grown
// when a later position comes, uploaded once), which the kernels index by the uploaded positions;
// positions past kCachedPositions get a table of their own rows for that call. Building the rows
// per call cost the model step about 8 ms of host time per layer at 4096 new tokens.
// Products and sums are explicit round-to-nearest intrinsics, never contracted into FMAs.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/qk_norm_rope/qk_norm_rope_cuda.h"
#include "kernels/rms_norm/rms_norm_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = kRmsNormThreads;  // the same block reduction as RmsNormFwd
constexpr int kDwThreads = 64;

struct Args {
  int64_t t, h, d, r;  // r: rotary_dim
  float eps;
  FloatPtr x, w, y, dy, dx;
  float* rstd;
  const float* table;  // rows of R: cos[0, R/2) then sin[0, R/2)
  const int32_t* pos;  // [T]: the table row of token t (null: row t)
  float* dw;
};

// The cos/sin row of head row `row` (token row / h).
__device__ __forceinline__ const float* CosSin(const Args& a, int64_t row) {
  const int64_t t = row / a.h;
  return a.table + (a.pos != nullptr ? int64_t{a.pos[t]} : t) * a.r;
}

// ∂L/∂n_c: RoPE's transpose applied to the row's dy at column c.
__device__ __forceinline__ float RopeGrad(const Args& a, int64_t row, int64_t c, const float* cs) {
  const int64_t half = a.r / 2, base = row * a.d;
  if (c >= a.r) return a.dy.Load(base + c);
  if (c < half) {
    return __fadd_rn(__fmul_rn(a.dy.Load(base + c), cs[c]),
                     __fmul_rn(a.dy.Load(base + c + half), cs[half + c]));
  }
  const int64_t i = c - half;
  return __fsub_rn(__fmul_rn(a.dy.Load(base + c), cs[i]),
                   __fmul_rn(a.dy.Load(base + i), cs[half + i]));
}

__global__ void __launch_bounds__(kThreads) FwdKernel(const Args a) {
  const int64_t row = blockIdx.x, base = row * a.d, half = a.r / 2;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    const float v = a.x.Load(base + i);
    ss = __fadd_rn(ss, __fmul_rn(v, v));
  }
  ss = BlockSum<kThreads>(ss);
  const float rs = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, float(a.d)), a.eps)));
  if (threadIdx.x == 0) a.rstd[row] = rs;
  const float* cs = CosSin(a, row);
  for (int64_t i = threadIdx.x; i < half; i += kThreads) {
    const float n0 = __fmul_rn(__fmul_rn(a.x.Load(base + i), rs), a.w.Load(i));
    const float n1 = __fmul_rn(__fmul_rn(a.x.Load(base + i + half), rs), a.w.Load(i + half));
    const float c = cs[i], s = cs[half + i];
    a.y.Store(base + i, __fsub_rn(__fmul_rn(n0, c), __fmul_rn(n1, s)));
    a.y.Store(base + i + half, __fadd_rn(__fmul_rn(n1, c), __fmul_rn(n0, s)));
  }
  for (int64_t i = a.r + threadIdx.x; i < a.d; i += kThreads) {
    a.y.Store(base + i, __fmul_rn(__fmul_rn(a.x.Load(base + i), rs), a.w.Load(i)));
  }
}

// dx = dn · rstd − x · c with dn = RopeGrad · w and c = (Σ dn·x) · rstd³ / D.
__global__ void __launch_bounds__(kThreads) BwdRowKernel(const Args a) {
  const int64_t row = blockIdx.x, base = row * a.d;
  const float rs = a.rstd[row];
  const float* cs = CosSin(a, row);
  float dot = 0.0f;
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    const float dn = __fmul_rn(RopeGrad(a, row, i, cs), a.w.Load(i));
    dot = __fadd_rn(dot, __fmul_rn(dn, a.x.Load(base + i)));
  }
  dot = BlockSum<kThreads>(dot);
  const float c = __fdiv_rn(__fmul_rn(dot, __fmul_rn(__fmul_rn(rs, rs), rs)), float(a.d));
  for (int64_t i = threadIdx.x; i < a.d; i += kThreads) {
    const float dn = __fmul_rn(RopeGrad(a, row, i, cs), a.w.Load(i));
    a.dx.Store(base + i, __fsub_rn(__fmul_rn(dn, rs), __fmul_rn(a.x.Load(base + i), c)));
  }
}

// dw[c] += Σ_(t,h) RopeGrad_c · (x_c · rstd), rows ascending, one thread per column.
__global__ void __launch_bounds__(kDwThreads) BwdDwKernel(const Args a) {
  const int64_t col = int64_t{blockIdx.x} * kDwThreads + threadIdx.x;
  if (col >= a.d) return;
  float acc = a.dw[col];
  for (int64_t row = 0; row < a.t * a.h; ++row) {
    const float* cs = CosSin(a, row);
    const float u = __fmul_rn(a.x.Load(row * a.d + col), a.rstd[row]);
    acc = __fadd_rn(acc, __fmul_rn(RopeGrad(a, row, col, cs), u));
  }
  a.dw[col] = acc;
}

absl::Status ExpectFloat(const Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
  const DType dt = t.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  return ExpectTensor(t, name, dt, shape, Device::kCUDA);
}

// Positions below this share the context's table (at rotary_dim 64, 64 MB); a call with a later
// position builds the rows it needs instead.
constexpr int64_t kCachedPositions = int64_t{1} << 18;
constexpr int64_t kFirstRows = 4096;

// Rows [0, rows) of cpu::RopeCosSin for one (rotary_dim, theta), on the host and the device.
struct RopeTable {
  std::vector<float> host;
  float* dev = nullptr;
  int64_t rows = 0;
};
struct RopeTables {
  std::mutex mu;
  std::map<std::pair<int64_t, uint64_t>, RopeTable> by_shape;
  ~RopeTables() {
    // A context that lives until exit is destroyed after the CUDA runtime has unloaded; the
    // process frees everything then.
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    for (auto& entry : by_shape) cudaFree(entry.second.dev);
  }
};

// The context's table for (r, theta) holding at least rows [0, max_pos]; grows it (doubling)
// stream-ordered, so calls already queued keep reading the copy they were given.
absl::StatusOr<const float*> CachedTable(const Context& ctx, int64_t r, double theta,
                                         int64_t max_pos) {
  auto slot = ctx.Resource("qk_norm_rope.tables", [] {
    return std::static_pointer_cast<void>(std::make_shared<RopeTables>());
  });
  RopeTables& tables = *static_cast<RopeTables*>(slot.get());
  uint64_t theta_bits = 0;
  std::memcpy(&theta_bits, &theta, sizeof(theta_bits));
  std::lock_guard<std::mutex> lock(tables.mu);
  RopeTable& t = tables.by_shape[{r, theta_bits}];
  if (max_pos >= t.rows) {
    const int64_t rows =
        std::min(kCachedPositions, std::max({max_pos + 1, 2 * t.rows, kFirstRows}));
    t.host.resize(rows * r);
    for (int64_t i = t.rows; i < rows; ++i) {
      cpu::RopeCosSin(i, r, theta, t.host.data() + i * r, t.host.data() + i * r + r / 2);
    }
    const cudaStream_t stream = StreamOf(ctx);
    float* fresh = nullptr;
    const size_t bytes = t.host.size() * sizeof(float);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&fresh), bytes, stream));
    const absl::Status uploaded = UploadAsync(fresh, t.host.data(), bytes, stream);
    if (!uploaded.ok()) {
      cudaFreeAsync(fresh, stream);
      return uploaded;
    }
    if (t.dev != nullptr) TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(t.dev, stream));
    t.dev = fresh;
    t.rows = rows;
  }
  return t.dev;
}

// Checks the common arguments and fills *a: shapes, pointers, the cos/sin table and the positions
// that index it (device buffers of this call in `pos_dev` / `own_table`, freed stream-ordered).
absl::Status Prepare(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                     const Tensor& w, const Tensor& positions, const Tensor& rstd, Args* a,
                     StreamBuffer& pos_dev, StreamBuffer& own_table) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1, -1}));
  const int64_t t = x.dim(0), h = x.dim(1), d = x.dim(2), r = p.rotary_dim;
  TANDEM_RETURN_IF_ERROR(ExpectFloat(w, "w", {d}));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(positions, "positions", DType::kI32, {t}, positions.device()));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(rstd, "rstd", DType::kF32, {t, h}, Device::kCUDA));
  TANDEM_CHECK_ARG(r >= 0 && r <= d && r % 2 == 0, "rotary_dim: expected an even value in [0, ", d,
                   "], got ", r);
  TANDEM_CHECK_ARG(p.theta > 0 && std::isfinite(p.theta), "theta: expected > 0, got ", p.theta);
  TANDEM_CHECK_ARG(p.eps >= 0 && std::isfinite(p.eps), "eps: expected >= 0, got ", p.eps);
  TANDEM_CHECK_ARG(t * h <= 0x7fffffff, "x: at most 2^31 - 1 head rows, got ", t * h);
  Tensor pos = positions;
  if (positions.device() == Device::kCUDA) {
    TANDEM_ASSIGN_OR_RETURN(pos, CopyToHost(ctx, positions));
  }
  const int32_t* host_pos = pos.data<int32_t>();
  int64_t max_pos = -1;
  for (int64_t i = 0; i < t; ++i) {
    TANDEM_CHECK_ARG(host_pos[i] >= 0, "positions: positions[", i, "] = ", host_pos[i],
                     " is negative");
    max_pos = std::max<int64_t>(max_pos, host_pos[i]);
  }
  const cudaStream_t stream = StreamOf(ctx);
  if (r > 0 && max_pos < kCachedPositions) {
    TANDEM_ASSIGN_OR_RETURN(a->table, CachedTable(ctx, r, p.theta, max_pos));
    TANDEM_RETURN_IF_ERROR(pos_dev.Allocate(stream, t * sizeof(int32_t)));
    TANDEM_RETURN_IF_ERROR(UploadAsync(pos_dev.as<void>(), host_pos, t * sizeof(int32_t), stream));
    a->pos = pos_dev.as<int32_t>();
  } else {
    std::vector<float> table(std::max<int64_t>(1, t * r));  // [T, R]
    for (int64_t i = 0; i < t; ++i) {
      cpu::RopeCosSin(host_pos[i], r, p.theta, table.data() + i * r, table.data() + i * r + r / 2);
    }
    TANDEM_RETURN_IF_ERROR(own_table.Upload(stream, table));
    a->table = own_table.as<float>();
    a->pos = nullptr;
  }
  a->t = t, a->h = h, a->d = d, a->r = r, a->eps = p.eps;
  a->x = ToFloatPtr(x), a->w = ToFloatPtr(w);
  a->rstd = const_cast<float*>(rstd.data<float>());
  return absl::OkStatus();
}

}  // namespace

absl::Status QkNormRopeFwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, Tensor& y, Tensor& rstd) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1, -1}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(y, "y", {x.dim(0), x.dim(1), x.dim(2)}));
  TANDEM_CHECK_ARG(y.numel() == 0 || y.raw_data() != x.raw_data(), "y: may not alias x");
  Args a{};
  StreamBuffer pos_dev, own_table;
  TANDEM_RETURN_IF_ERROR(Prepare(ctx, p, x, w, positions, rstd, &a, pos_dev, own_table));
  a.y = ToFloatPtr(y);
  const cudaStream_t stream = StreamOf(ctx);
  if (a.t * a.h > 0) {
    FwdKernel<<<static_cast<unsigned>(a.t * a.h), kThreads, 0, stream>>>(a);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return absl::OkStatus();
}

absl::Status QkNormRopeBwd(const Context& ctx, const QkNormRopeParams& p, const Tensor& x,
                           const Tensor& w, const Tensor& positions, const Tensor& rstd,
                           const Tensor& dy, Tensor& dx, Tensor& dw) {
  TANDEM_RETURN_IF_ERROR(ExpectFloat(x, "x", {-1, -1, -1}));
  const int64_t t = x.dim(0), h = x.dim(1), d = x.dim(2);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dy, "dy", {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dx, "dx", {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dw, "dw", DType::kF32, {d}, Device::kCUDA));
  Args a{};
  StreamBuffer pos_dev, own_table;
  TANDEM_RETURN_IF_ERROR(Prepare(ctx, p, x, w, positions, rstd, &a, pos_dev, own_table));
  a.dy = ToFloatPtr(dy), a.dx = ToFloatPtr(dx), a.dw = dw.data<float>();
  const cudaStream_t stream = StreamOf(ctx);
  if (t * h > 0 && d > 0) {
    BwdRowKernel<<<static_cast<unsigned>(t * h), kThreads, 0, stream>>>(a);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    BwdDwKernel<<<static_cast<unsigned>((d + kDwThreads - 1) / kDwThreads), kDwThreads, 0,
                  stream>>>(a);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

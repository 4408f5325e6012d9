// CUDA chunked linear attention: the three forward launches (boundary sums, in-order state scan,
// chunk outputs) and the decode step, all built from the pieces in linear_attention_chunk.cuh.
// Blocks are (chunk, head) for the forward and (sequence, head) for decode; no reduction is split
// across threads, so the packing, the batch and the launch shape never change a bit.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/linear_attention/linear_attention_chunk.cuh"
#include "kernels/linear_attention/linear_attention_cuda.h"

namespace tandem::kernels::cuda {
namespace {

using linear::ChunkSmem;
using linear::kC;
using linear::kThreads;

struct ChunkItem {
  int row0;   // packed row of the chunk's first token
  int n;      // tokens in the chunk (C except a sequence's last)
  int chunk;  // global chunk index (sequence by sequence)
};

struct FwdArgs {
  int h;
  float scale;
  FloatPtr q, k, v, o;
  const float* pow;        // [H, C + 1]
  const ChunkItem* items;  // [NC]
  const int* seq_chunk;    // [B + 1]: chunks of sequence b are seq_chunk[b] .. seq_chunk[b+1]
  const float* init;       // [B, H, D, D] or null
  float* states;           // [NC, H, D, D] chunk-start states
  float* sums;             // [NC, H, D, D] boundary sums of full chunks
  float* boundary;         // [B, H, D, D] or null
};

// dst[r][e] (row stride ldd, or transposed: dst[e][r] with stride kC) = src row r of head `head`,
// for r < n; zeros for n ≤ r < kC.
template <int kD, bool kTranspose>
__device__ void LoadRows(FloatPtr src, int64_t row0, int ld, int head, int n, float* dst, int ldd) {
  for (int idx = threadIdx.x; idx < kC * kD; idx += blockDim.x) {
    const int r = idx / kD, e = idx % kD;
    const float x = r < n ? src.Load((row0 + r) * ld + int64_t{head} * kD + e) : 0.0f;
    if constexpr (kTranspose) {
      dst[e * kC + r] = x;
    } else {
      dst[r * ldd + e] = x;
    }
  }
}

// Phase 1: boundary sums of full chunks.
template <int kD>
__global__ void __launch_bounds__(kThreads) BoundaryKernel(FwdArgs a) {
  extern __shared__ __align__(16) float smem[];
  const ChunkSmem<kD> s = ChunkSmem<kD>::Carve(smem);
  const ChunkItem it = a.items[blockIdx.x];
  const int head = blockIdx.y;
  if (it.n < kC) return;
  const float* pow = a.pow + head * (kC + 1);
  LoadRows<kD, false>(a.k, it.row0, a.h * kD, head, kC, s.k, ChunkSmem<kD>::kLdk);
  LoadRows<kD, false>(a.v, it.row0, a.h * kD, head, kC, s.v, kD);
  __syncthreads();
  for (int idx = threadIdx.x; idx < kC * kD; idx += blockDim.x) {
    const int j = idx / kD, e = idx % kD;
    float& x = s.k[j * ChunkSmem<kD>::kLdk + e];
    x = __fmul_rn(pow[kC - 1 - j], x);
  }
  __syncthreads();
  float* out = a.sums + (int64_t{it.chunk} * a.h + head) * kD * kD;
  linear::BoundarySum<kD>(s, [&](int r, int c, float x) { out[r * kD + c] = x; });
}

// Phase 2: per (sequence, head), state elements walk the chunks in order.
template <int kD>
__global__ void ScanKernel(FwdArgs a) {
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h;
  const int e = blockIdx.y * blockDim.x + threadIdx.x;
  if (e >= kD * kD) return;
  const float pow_c = a.pow[head * (kC + 1) + kC];
  const int64_t dd = kD * kD;
  float st = a.init != nullptr ? a.init[(int64_t{seq} * a.h + head) * dd + e] : 0.0f;
  for (int c = a.seq_chunk[seq]; c < a.seq_chunk[seq + 1]; ++c) {
    const int64_t off = (int64_t{c} * a.h + head) * dd + e;
    a.states[off] = st;
    if (a.items[c].n == kC) st = linear::NextState(pow_c, st, a.sums[off]);
  }
  if (a.boundary != nullptr) a.boundary[(int64_t{seq} * a.h + head) * dd + e] = st;
}

// Phase 3: the outputs of one chunk from its start state.
template <int kD>
__global__ void __launch_bounds__(kThreads) OutputKernel(FwdArgs a) {
  constexpr int kGroups = kThreads / kD, kRows = kC / kGroups;
  extern __shared__ __align__(16) float smem[];
  const ChunkSmem<kD> s = ChunkSmem<kD>::Carve(smem);
  const ChunkItem it = a.items[blockIdx.x];
  const int head = blockIdx.y, ld = a.h * kD;
  const float* pow = a.pow + head * (kC + 1);
  LoadRows<kD, true>(a.q, it.row0, ld, head, it.n, s.qt, kC);
  LoadRows<kD, false>(a.k, it.row0, ld, head, it.n, s.k, ChunkSmem<kD>::kLdk);
  LoadRows<kD, false>(a.v, it.row0, ld, head, it.n, s.v, kD);
  __syncthreads();
  for (int idx = threadIdx.x; idx < kC * kC; idx += blockDim.x) {
    const int r = idx / kC, j = idx % kC;
    if (r < it.n && j <= r) linear::WeightedScore<kD>(s, pow, r, j);
  }
  __syncthreads();
  const int b = threadIdx.x % kD, r0 = threadIdx.x / kD * kRows;
  const float* state = a.states + (int64_t{it.chunk} * a.h + head) * kD * kD;
  float inter[kRows];
  linear::InterRows<kD, kRows>(s, r0, state, b, inter);
#pragma unroll
  for (int rr = 0; rr < kRows; ++rr) {
    const int r = r0 + rr;
    if (r < it.n) {
      a.o.Store((it.row0 + int64_t{r}) * ld + head * kD + b,
                linear::OutputElement<kD>(s, pow, a.scale, r, b, inter[rr]));
    }
  }
}

struct DecodeArgs {
  int h;
  float scale;
  FloatPtr q, k, v, o;
  const float* pow;
  float *state, *open_k, *open_v;  // [B, H, D, D], [B, C, H, D] x2
  const int32_t* open_len;
};

// One decode step of one (sequence, head): row i = open_len of the open chunk.
template <int kD>
__global__ void __launch_bounds__(kThreads) DecodeKernel(DecodeArgs a) {
  extern __shared__ __align__(16) float smem[];
  const ChunkSmem<kD> s = ChunkSmem<kD>::Carve(smem);
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h, i = a.open_len[seq];
  const int ld = a.h * kD;
  const float* pow = a.pow + head * (kC + 1);
  const int64_t row = (int64_t{seq} * a.h + head) * kD;  // in q, k, v, o
  const int64_t open_row0 = int64_t{seq} * kC;           // row 0 of the open chunk
  float* state = a.state + (int64_t{seq} * a.h + head) * kD * kD;
  for (int e = threadIdx.x; e < kD; e += blockDim.x) {
    a.open_k[(open_row0 + i) * ld + head * kD + e] = a.k.Load(row + e);
    a.open_v[(open_row0 + i) * ld + head * kD + e] = a.v.Load(row + e);
    s.qt[e * kC + i] = a.q.Load(row + e);
  }
  __syncthreads();  // global writes of this block are visible to it after the barrier
  const FloatPtr ok{a.open_k, false}, ov{a.open_v, false};
  LoadRows<kD, false>(ok, open_row0, ld, head, i + 1, s.k, ChunkSmem<kD>::kLdk);
  LoadRows<kD, false>(ov, open_row0, ld, head, i + 1, s.v, kD);
  __syncthreads();
  for (int j = threadIdx.x; j <= i; j += blockDim.x) linear::WeightedScore<kD>(s, pow, i, j);
  __syncthreads();
  if (threadIdx.x < kD) {
    const int b = threadIdx.x;
    float inter[1];
    linear::InterRows<kD, 1>(s, i, state, b, inter);
    a.o.Store(row + b, linear::OutputElement<kD>(s, pow, a.scale, i, b, inter[0]));
  }
  if (i + 1 < kC) return;  // uniform: the chunk is still open
  __syncthreads();         // the state is no longer read
  for (int idx = threadIdx.x; idx < kC * kD; idx += blockDim.x) {
    const int j = idx / kD, e = idx % kD;
    float& x = s.k[j * ChunkSmem<kD>::kLdk + e];
    x = __fmul_rn(pow[kC - 1 - j], x);
  }
  __syncthreads();
  const float pow_c = pow[kC];
  linear::BoundarySum<kD>(s, [&](int r, int c, float x) {
    state[r * kD + c] = linear::NextState(pow_c, state[r * kD + c], x);
  });
}

__global__ void AdvanceOpenLen(int32_t* open_len, int b) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < b) open_len[i] = (open_len[i] + 1) % kC;
}

bool IsFloat(const Tensor& t) { return t.dtype() == DType::kF32 || t.dtype() == DType::kBF16; }

absl::Status ExpectFloat(const Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
  return ExpectTensor(t, name, IsFloat(t) ? t.dtype() : DType::kF32, shape, Device::kCUDA);
}

absl::Status ExpectStateOrUndefined(const Tensor& t, const char* name, int64_t n, int64_t h,
                                    int64_t d) {
  if (!t.defined()) return absl::OkStatus();
  return ExpectTensor(t, name, DType::kF32, {n, h, d, d}, Device::kCUDA);
}

// Checks p, q, k, v and decay (host), and uploads the decay powers [H, C + 1] (stream-ordered;
// the pageable source is staged before cudaMemcpyAsync returns). The caller frees *pow.
absl::Status CheckAndUploadPowers(const Context& ctx, const LinearAttentionParams& p,
                                  const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& decay, float** pow) {
  TANDEM_CHECK_ARG(p.num_heads > 0, "p.num_heads: must be > 0, got ", p.num_heads);
  TANDEM_CHECK_ARG(LinearAttentionHeadDimSupported(p.head_dim),
                   "p.head_dim: the CUDA kernels take 32, 64 or 128, got ", p.head_dim);
  TANDEM_CHECK_ARG(std::isfinite(p.scale), "p.scale: must be finite, got ", p.scale);
  const int64_t h = p.num_heads, d = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectFloat(q, "q", {-1, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(k, "k", {q.dim(0), h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(v, "v", {q.dim(0), h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(decay, "decay", DType::kF32, {h}));
  std::vector<float> table(h * (kC + 1));
  for (int64_t i = 0; i < h; ++i) {
    const float x = decay.data<float>()[i];
    TANDEM_CHECK_ARG(std::isfinite(x) && x > 0.0f, "decay[", i, "]: must be finite and > 0, got ",
                     x);
    LinearAttentionDecayPowers(x, table.data() + i * (kC + 1));
  }
  const size_t bytes = table.size() * sizeof(float);
  const cudaStream_t stream = StreamOf(ctx);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(pow), bytes, stream));
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(*pow, table.data(), bytes, cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

// cu_seqlens on the host, checked, and the chunk list (sequence by sequence).
absl::Status MakeChunks(const Context& ctx, const Tensor& cu_seqlens, int64_t t,
                        std::vector<ChunkItem>* items, std::vector<int>* seq_chunk) {
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(cu_seqlens, "cu_seqlens", DType::kI32, {-1}, cu_seqlens.device()));
  Tensor host = cu_seqlens;
  if (cu_seqlens.device() == Device::kCUDA) {
    TANDEM_ASSIGN_OR_RETURN(host, CopyToHost(ctx, cu_seqlens));
  }
  const int32_t* cu = host.data<int32_t>();
  const int64_t n = host.numel();
  TANDEM_CHECK_ARG(n >= 2, "cu_seqlens: needs B + 1 >= 2 entries, got ", n);
  TANDEM_CHECK_ARG(cu[0] == 0, "cu_seqlens[0]: must be 0, got ", cu[0]);
  TANDEM_CHECK_ARG(cu[n - 1] == t, "cu_seqlens[", n - 1, "]: must equal T = ", t, ", got ",
                   cu[n - 1]);
  seq_chunk->assign(1, 0);
  for (int64_t b = 0; b + 1 < n; ++b) {
    TANDEM_CHECK_ARG(cu[b + 1] >= cu[b], "cu_seqlens: must be non-decreasing, but cu_seqlens[",
                     b + 1, "] = ", cu[b + 1], " < ", cu[b]);
    for (int c0 = cu[b]; c0 < cu[b + 1]; c0 += kC) {
      items->push_back({c0, std::min(kC, cu[b + 1] - c0), static_cast<int>(items->size())});
    }
    seq_chunk->push_back(static_cast<int>(items->size()));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Upload(cudaStream_t stream, const std::vector<T>& host, T** dev) {
  const size_t bytes = std::max<size_t>(1, host.size()) * sizeof(T);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(dev), bytes, stream));
  if (!host.empty()) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(*dev, host.data(), host.size() * sizeof(T),
                                                cudaMemcpyHostToDevice, stream));
  }
  return absl::OkStatus();
}

template <typename Fn>
cudaError_t ForHeadDim(int64_t d, Fn&& fn) {
  if (d == 32) return fn(std::integral_constant<int, 32>());
  if (d == 64) return fn(std::integral_constant<int, 64>());
  return fn(std::integral_constant<int, 128>());
}

template <int kD>
cudaError_t LaunchForward(cudaStream_t stream, const FwdArgs& a, int num_chunks, int batch) {
  constexpr int smem = static_cast<int>(ChunkSmem<kD>::kBytes);
  for (const void* kernel : {reinterpret_cast<const void*>(&BoundaryKernel<kD>),
                             reinterpret_cast<const void*>(&OutputKernel<kD>)}) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
  }
  const dim3 chunks(num_chunks, a.h);
  BoundaryKernel<kD><<<chunks, kThreads, smem, stream>>>(a);
  ScanKernel<kD>
      <<<dim3(batch * a.h, (kD * kD + kThreads - 1) / kThreads), kThreads, 0, stream>>>(a);
  OutputKernel<kD><<<chunks, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

absl::Status LinearAttentionFwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& initial_state, Tensor& o,
                                Tensor& chunk_states, Tensor& boundary_state) {
  float* pow = nullptr;
  TANDEM_RETURN_IF_ERROR(CheckAndUploadPowers(ctx, p, q, k, v, decay, &pow));
  const cudaStream_t stream = StreamOf(ctx);
  absl::Status status = [&]() -> absl::Status {
    const int64_t t = q.dim(0), h = p.num_heads, d = p.head_dim;
    std::vector<ChunkItem> items;
    std::vector<int> seq_chunk;
    TANDEM_RETURN_IF_ERROR(MakeChunks(ctx, cu_seqlens, t, &items, &seq_chunk));
    const int64_t b = static_cast<int64_t>(seq_chunk.size()) - 1, nc = items.size();
    TANDEM_RETURN_IF_ERROR(ExpectFloat(o, "o", {t, h, d}));
    TANDEM_RETURN_IF_ERROR(ExpectStateOrUndefined(initial_state, "initial_state", b, h, d));
    TANDEM_RETURN_IF_ERROR(ExpectStateOrUndefined(chunk_states, "chunk_states", nc, h, d));
    TANDEM_RETURN_IF_ERROR(ExpectStateOrUndefined(boundary_state, "boundary_state", b, h, d));
    if (nc == 0) return absl::OkStatus();
    FwdArgs a{static_cast<int>(h), p.scale, ToFloatPtr(q), ToFloatPtr(k), ToFloatPtr(v),
              ToFloatPtr(o),       pow};
    a.init = initial_state.defined() ? initial_state.data<float>() : nullptr;
    a.boundary = boundary_state.defined() ? boundary_state.data<float>() : nullptr;
    ChunkItem* dev_items = nullptr;
    int* dev_seq_chunk = nullptr;
    TANDEM_RETURN_IF_ERROR(Upload(stream, items, &dev_items));
    TANDEM_RETURN_IF_ERROR(Upload(stream, seq_chunk, &dev_seq_chunk));
    a.items = dev_items, a.seq_chunk = dev_seq_chunk;
    const size_t state_bytes = sizeof(float) * nc * h * d * d;
    TANDEM_CUDA_RETURN_IF_ERROR(
        cudaMallocAsync(reinterpret_cast<void**>(&a.sums), state_bytes, stream));
    a.states = chunk_states.defined() ? chunk_states.data<float>() : nullptr;
    if (a.states == nullptr) {
      TANDEM_CUDA_RETURN_IF_ERROR(
          cudaMallocAsync(reinterpret_cast<void**>(&a.states), state_bytes, stream));
    }
    const cudaError_t launched = ForHeadDim(d, [&](auto dim) {
      return LaunchForward<decltype(dim)::value>(stream, a, static_cast<int>(nc),
                                                 static_cast<int>(b));
    });
    if (!chunk_states.defined()) TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(a.states, stream));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(a.sums, stream));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(dev_items, stream));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(dev_seq_chunk, stream));
    TANDEM_CUDA_RETURN_IF_ERROR(launched);
    return absl::OkStatus();
  }();
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(pow, stream));
  return status;
}

absl::Status LinearAttentionDecode(const Context& ctx, const LinearAttentionParams& p,
                                   const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& decay, Tensor& state, Tensor& open_k,
                                   Tensor& open_v, Tensor& open_len, Tensor& o) {
  float* pow = nullptr;
  TANDEM_RETURN_IF_ERROR(CheckAndUploadPowers(ctx, p, q, k, v, decay, &pow));
  const cudaStream_t stream = StreamOf(ctx);
  absl::Status status = [&]() -> absl::Status {
    const int64_t b = q.dim(0), h = p.num_heads, d = p.head_dim;
    TANDEM_RETURN_IF_ERROR(ExpectTensor(state, "state", DType::kF32, {b, h, d, d}, Device::kCUDA));
    TANDEM_RETURN_IF_ERROR(
        ExpectTensor(open_k, "open_k", DType::kF32, {b, kC, h, d}, Device::kCUDA));
    TANDEM_RETURN_IF_ERROR(
        ExpectTensor(open_v, "open_v", DType::kF32, {b, kC, h, d}, Device::kCUDA));
    TANDEM_RETURN_IF_ERROR(ExpectTensor(open_len, "open_len", DType::kI32, {b}, Device::kCUDA));
    TANDEM_RETURN_IF_ERROR(ExpectFloat(o, "o", {b, h, d}));
    if (b == 0) return absl::OkStatus();
    const DecodeArgs a{static_cast<int>(h),
                       p.scale,
                       ToFloatPtr(q),
                       ToFloatPtr(k),
                       ToFloatPtr(v),
                       ToFloatPtr(o),
                       pow,
                       state.data<float>(),
                       open_k.data<float>(),
                       open_v.data<float>(),
                       open_len.data<int32_t>()};
    const cudaError_t launched = ForHeadDim(d, [&](auto dim) {
      constexpr int kD = decltype(dim)::value;
      constexpr int smem = static_cast<int>(ChunkSmem<kD>::kBytes);
      cudaError_t e = cudaFuncSetAttribute(&DecodeKernel<kD>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      if (e != cudaSuccess) return e;
      DecodeKernel<kD><<<static_cast<unsigned>(b * h), kThreads, smem, stream>>>(a);
      AdvanceOpenLen<<<static_cast<unsigned>((b + 255) / 256), 256, 0, stream>>>(
          open_len.data<int32_t>(), static_cast<int>(b));
      return cudaGetLastError();
    });
    TANDEM_CUDA_RETURN_IF_ERROR(launched);
    return absl::OkStatus();
  }();
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(pow, stream));
  return status;
}

}  // namespace tandem::kernels::cuda

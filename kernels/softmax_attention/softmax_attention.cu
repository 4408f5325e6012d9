// CUDA causal GQA softmax attention: the packed forward kernel (one block per 64 query rows of one
// sequence and kv head, splits and tiles walked in order) and paged decode (one block per
// sequence, kv head and split, then an in-order merge kernel). Both fold tiles with AttendTile and
// splits with MergeSplit (attention_tile.cuh); decode only reads K/V through the block table.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/softmax_attention/attention_internal.h"
#include "kernels/softmax_attention/attention_tile.cuh"
#include "kernels/softmax_attention/softmax_attention_cuda.h"

namespace tandem::kernels::cuda {
namespace {

using attention::AttendTile;
using attention::kRowsPerWarp;
using attention::kSplit;
using attention::kTile;
using attention::RowState;
using attention::TileSmem;

constexpr int kFwdWarps = 8;
constexpr int kFwdRows = kFwdWarps * kRowsPerWarp;  // query rows per forward block
constexpr int kDecodeThreads = 128;

struct Dims {
  int h, hkv, group, d;
  float scale;
};

// 64 flat rows (position-major, then the group's heads) of one sequence and kv head.
struct FwdItem {
  int seq_start, seq_len, row0, kv_head;
};

// Copies rows [0, kTile) of a K or V tile into smem (row stride ld), zeros past `valid` keys.
// row_offset(j) is the element offset of key j's kv-head vector.
template <int kD, typename RowOffset>
__device__ void LoadTile(FloatPtr src, int valid, int ld, RowOffset row_offset, float* dst) {
  for (int idx = threadIdx.x; idx < kTile * kD; idx += blockDim.x) {
    const int j = idx / kD, e = idx % kD;
    dst[j * ld + e] = j < valid ? src.Load(row_offset(j) + e) : 0.0f;
  }
}

template <int kD>
__global__ void __launch_bounds__(kFwdWarps * 32)
    FwdKernel(Dims dm, FloatPtr q, FloatPtr k, FloatPtr v, FloatPtr o, float* lse,
              const FwdItem* items) {
  extern __shared__ __align__(16) float smem[];
  const TileSmem<kD> sm = TileSmem<kD>::Carve(smem, kFwdWarps);
  const FwdItem it = items[blockIdx.x];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int live_rows = it.seq_len * dm.group - it.row0;  // rows of this block that exist (> 0)
  for (int idx = threadIdx.x; idx < kFwdRows * kD; idx += blockDim.x) {
    const int r = idx / kD, e = idx % kD, f = it.row0 + r;
    const int64_t row =
        int64_t{it.seq_start + f / dm.group} * dm.h + it.kv_head * dm.group + f % dm.group;
    sm.q[idx] = r < live_rows ? q.Load(row * kD + e) : 0.0f;
  }
  int t[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr;
    t[rr] = r < live_rows ? (it.row0 + r) / dm.group : -1;
  }
  const int num_keys = (it.row0 + min(live_rows, kFwdRows) - 1) / dm.group + 1;
  RowState<kD> total[kRowsPerWarp], split[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) total[rr].Reset();
  const auto kv_row = [&](int j0) {
    return [=](int j) { return (int64_t{it.seq_start + j0 + j} * dm.hkv + it.kv_head) * kD; };
  };
  for (int s0 = 0; s0 < num_keys; s0 += kSplit) {
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) split[rr].Reset();
    const int s1 = min(num_keys, s0 + kSplit);
    for (int a = s0; a < s1; a += kTile) {
      __syncthreads();  // the previous tile is no longer read (and q is in place)
      LoadTile<kD>(k, min(kTile, num_keys - a), TileSmem<kD>::kLdk, kv_row(a), sm.k);
      LoadTile<kD>(v, min(kTile, num_keys - a), kD, kv_row(a), sm.v);
      __syncthreads();
      int n[kRowsPerWarp];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) n[rr] = max(0, min(kTile, t[rr] + 1 - a));
      AttendTile<kD>(sm.q + warp * kRowsPerWarp * kD, sm.k, sm.v,
                     sm.p + warp * kRowsPerWarp * kTile, n, dm.scale, split);
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      if (t[rr] >= s0) attention::MergeSplit<kD>(split[rr], total[rr]);
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    if (t[rr] < 0) continue;
    const int f = it.row0 + warp * kRowsPerWarp + rr;
    const int64_t row =
        int64_t{it.seq_start + f / dm.group} * dm.h + it.kv_head * dm.group + f % dm.group;
    const float l =
        attention::Finalize<kD>(total[rr], [&](int e, float x) { o.Store(row * kD + e, x); });
    if (lse != nullptr && lane == 0) lse[row] = l;
  }
}

struct DecodeArgs {
  Dims dm;
  FloatPtr q, k_cache, v_cache, o;
  const int32_t* block_tables;
  const int32_t* seq_lens;
  int max_blocks, max_splits;
  float* partial;  // [B, H, max_splits, kD + 2]: acc, then m, l
};

// Block (split, kv head, sequence): the split's tiles for the group's heads, partials to memory.
template <int kD>
__global__ void DecodeSplitKernel(DecodeArgs a) {
  extern __shared__ __align__(16) float smem[];
  const int warps = blockDim.x / 32;
  const TileSmem<kD> sm = TileSmem<kD>::Carve(smem, warps);
  const int split_index = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int pos = a.seq_lens[b] - 1, s0 = split_index * kSplit;
  if (s0 > pos) return;  // uniform over the block
  const Dims& dm = a.dm;
  for (int idx = threadIdx.x; idx < warps * kRowsPerWarp * kD; idx += blockDim.x) {
    const int r = idx / kD, e = idx % kD;
    sm.q[idx] = r < dm.group ? a.q.Load((int64_t{b} * dm.h + g * dm.group + r) * kD + e) : 0.0f;
  }
  RowState<kD> split[kRowsPerWarp];
  int t[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    split[rr].Reset();
    t[rr] = warp * kRowsPerWarp + rr < dm.group ? pos : -1;
  }
  const int32_t* table = a.block_tables + int64_t{b} * a.max_blocks;
  for (int t0 = s0; t0 <= pos && t0 < s0 + kSplit; t0 += kTile) {
    const int64_t block = table[t0 / kTile];
    const auto kv_row = [=](int j) { return ((block * kTile + j) * dm.hkv + g) * kD; };
    __syncthreads();
    LoadTile<kD>(a.k_cache, min(kTile, pos + 1 - t0), TileSmem<kD>::kLdk, kv_row, sm.k);
    LoadTile<kD>(a.v_cache, min(kTile, pos + 1 - t0), kD, kv_row, sm.v);
    __syncthreads();
    int n[kRowsPerWarp];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) n[rr] = max(0, min(kTile, t[rr] + 1 - t0));
    if (warp * kRowsPerWarp < dm.group) {
      AttendTile<kD>(sm.q + warp * kRowsPerWarp * kD, sm.k, sm.v,
                     sm.p + warp * kRowsPerWarp * kTile, n, dm.scale, split);
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    if (t[rr] < 0) continue;
    const int head = g * dm.group + warp * kRowsPerWarp + rr;
    float* out = a.partial + ((int64_t{b} * dm.h + head) * a.max_splits + split_index) * (kD + 2);
#pragma unroll
    for (int i = 0; i < RowState<kD>::kPer; ++i) out[lane + 32 * i] = split[rr].acc[i];
    if (lane == 0) out[kD] = split[rr].m, out[kD + 1] = split[rr].l;
  }
}

// One warp per (sequence, head): merges the splits' partials in ascending order.
template <int kD>
__global__ void DecodeMergeKernel(DecodeArgs a, int num_rows) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= num_rows) return;
  const int b = row / a.dm.h;
  const int num_splits = (a.seq_lens[b] - 1) / kSplit + 1;
  RowState<kD> total, part;
  total.Reset();
  for (int s = 0; s < num_splits; ++s) {
    const float* in = a.partial + (int64_t{row} * a.max_splits + s) * (kD + 2);
#pragma unroll
    for (int i = 0; i < RowState<kD>::kPer; ++i) part.acc[i] = in[lane + 32 * i];
    part.m = in[kD], part.l = in[kD + 1];
    attention::MergeSplit<kD>(part, total);
  }
  attention::Finalize<kD>(total, [&](int e, float x) { a.o.Store(int64_t{row} * kD + e, x); });
}

bool IsFloat(const Tensor& t) { return t.dtype() == DType::kF32 || t.dtype() == DType::kBF16; }

// f32 or bf16 (its own dtype) on the GPU, with `shape`.
absl::Status ExpectFloat(const Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
  return ExpectTensor(t, name, IsFloat(t) ? t.dtype() : DType::kF32, shape, Device::kCUDA);
}

absl::Status CheckDims(const SoftmaxAttentionParams& p) {
  TANDEM_RETURN_IF_ERROR(internal::CheckParams(p));
  TANDEM_CHECK_ARG(SoftmaxAttentionHeadDimSupported(p.head_dim),
                   "p.head_dim: the CUDA kernels take 32, 64 or 128, got ", p.head_dim);
  return absl::OkStatus();
}

Dims DimsOf(const SoftmaxAttentionParams& p) {
  return {static_cast<int>(p.num_heads), static_cast<int>(p.num_kv_heads),
          static_cast<int>(p.num_heads / p.num_kv_heads), static_cast<int>(p.head_dim), p.scale};
}

// cu_seqlens on the host, checked: starts at 0, non-decreasing, ends at t.
absl::StatusOr<std::vector<int32_t>> HostSeqlens(const Context& ctx, const Tensor& cu_seqlens,
                                                 int64_t t) {
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(cu_seqlens, "cu_seqlens", DType::kI32, {-1}, cu_seqlens.device()));
  Tensor host = cu_seqlens;
  if (cu_seqlens.device() == Device::kCUDA) {
    TANDEM_ASSIGN_OR_RETURN(host, CopyToHost(ctx, cu_seqlens));
  }
  std::vector<int32_t> cu(host.data<int32_t>(), host.data<int32_t>() + host.numel());
  TANDEM_CHECK_ARG(!cu.empty() && cu[0] == 0, "cu_seqlens: must start with 0");
  for (size_t b = 1; b < cu.size(); ++b) {
    TANDEM_CHECK_ARG(cu[b] >= cu[b - 1], "cu_seqlens: decreases at index ", b);
  }
  TANDEM_CHECK_ARG(cu.back() == t, "cu_seqlens: must end at T = ", t, ", ends at ", cu.back());
  return cu;
}

// Blocks of kFwdRows flat rows, the ones with the most keys first (they take longest).
std::vector<FwdItem> FwdItems(const std::vector<int32_t>& cu, int hkv, int group) {
  std::vector<FwdItem> items;
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    const int len = cu[b + 1] - cu[b];
    for (int row0 = 0; row0 < len * group; row0 += kFwdRows) {
      for (int g = 0; g < hkv; ++g) items.push_back({cu[b], len, row0, g});
    }
  }
  std::stable_sort(items.begin(), items.end(), [&](const FwdItem& x, const FwdItem& y) {
    return x.row0 / group > y.row0 / group;
  });
  return items;
}

template <typename Kernel>
cudaError_t Launch(Kernel kernel, dim3 grid, int threads, size_t smem, cudaStream_t stream,
                   auto... args) {
  const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem));
  if (attr != cudaSuccess) return attr;
  kernel<<<grid, threads, smem, stream>>>(args...);
  return cudaGetLastError();
}

template <int kD>
cudaError_t LaunchFwd(cudaStream_t stream, const Dims& dm, FloatPtr q, FloatPtr k, FloatPtr v,
                      FloatPtr o, float* lse, const FwdItem* items, int num_items) {
  return Launch(&FwdKernel<kD>, dim3(num_items), kFwdWarps * 32, TileSmem<kD>::Bytes(kFwdWarps),
                stream, dm, q, k, v, o, lse, items);
}

template <int kD>
cudaError_t LaunchDecode(cudaStream_t stream, const DecodeArgs& a, int batch) {
  const int warps = std::max(kDecodeThreads / 32, (a.dm.group + kRowsPerWarp - 1) / kRowsPerWarp);
  cudaError_t e = Launch(&DecodeSplitKernel<kD>, dim3(a.max_splits, a.dm.hkv, batch), warps * 32,
                         TileSmem<kD>::Bytes(warps), stream, a);
  if (e != cudaSuccess) return e;
  const int rows = batch * a.dm.h, per_block = kDecodeThreads / 32;
  DecodeMergeKernel<kD><<<(rows + per_block - 1) / per_block, kDecodeThreads, 0, stream>>>(a, rows);
  return cudaGetLastError();
}

template <typename Fn>
cudaError_t ForHeadDim(int d, Fn&& fn) {
  switch (d) {
    case 32:
      return fn(std::integral_constant<int, 32>());
    case 64:
      return fn(std::integral_constant<int, 64>());
    default:
      return fn(std::integral_constant<int, 128>());
  }
}

}  // namespace

absl::Status SoftmaxAttentionFwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, Tensor& o, Tensor& lse) {
  TANDEM_RETURN_IF_ERROR(CheckDims(p));
  const int64_t H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectFloat(q, "q", {-1, H, D}));
  const int64_t T = q.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(k, "k", {T, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(v, "v", {T, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(o, "o", {T, H, D}));
  if (lse.defined()) {
    TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {T, H}, Device::kCUDA));
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> cu, HostSeqlens(ctx, cu_seqlens, T));
  const Dims dm = DimsOf(p);
  const std::vector<FwdItem> items = FwdItems(cu, dm.hkv, dm.group);
  if (items.empty()) return absl::OkStatus();
  const cudaStream_t stream = StreamOf(ctx);
  const size_t bytes = items.size() * sizeof(FwdItem);
  FwdItem* dev_items = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&dev_items), bytes, stream));
  // From pageable memory: staged before cudaMemcpyAsync returns, so `items` may go out of scope.
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dev_items, items.data(), bytes, cudaMemcpyHostToDevice, stream));
  float* lse_ptr = lse.defined() ? lse.data<float>() : nullptr;
  const cudaError_t launched = ForHeadDim(dm.d, [&](auto d) {
    return LaunchFwd<decltype(d)::value>(stream, dm, ToFloatPtr(q), ToFloatPtr(k), ToFloatPtr(v),
                                         ToFloatPtr(o), lse_ptr, dev_items,
                                         static_cast<int>(items.size()));
  });
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(dev_items, stream));
  TANDEM_CUDA_RETURN_IF_ERROR(launched);
  return absl::OkStatus();
}

absl::Status SoftmaxAttentionDecode(const Context& ctx, const SoftmaxAttentionParams& p,
                                    const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                    const Tensor& block_tables, const Tensor& seq_lens, Tensor& o) {
  TANDEM_RETURN_IF_ERROR(CheckDims(p));
  const int64_t H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectFloat(q, "q", {-1, H, D}));
  const int64_t B = q.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(o, "o", {B, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(k_cache, "k_cache", {-1, kAttentionKvTile, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(
      ExpectFloat(v_cache, "v_cache", {k_cache.dim(0), kAttentionKvTile, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(block_tables, "block_tables", DType::kI32, {B, -1}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(seq_lens, "seq_lens", DType::kI32, {B}, Device::kCUDA));
  if (B == 0) return absl::OkStatus();
  DecodeArgs a;
  a.dm = DimsOf(p);
  a.q = ToFloatPtr(q), a.k_cache = ToFloatPtr(k_cache), a.v_cache = ToFloatPtr(v_cache);
  a.o = ToFloatPtr(o);
  a.block_tables = block_tables.data<int32_t>(), a.seq_lens = seq_lens.data<int32_t>();
  a.max_blocks = static_cast<int>(block_tables.dim(1));
  a.max_splits = static_cast<int>(
      std::max<int64_t>(1, (a.max_blocks * kAttentionKvTile + kSplit - 1) / kSplit));
  const cudaStream_t stream = StreamOf(ctx);
  const size_t bytes = sizeof(float) * B * H * a.max_splits * (D + 2);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&a.partial), bytes, stream));
  const cudaError_t launched = ForHeadDim(a.dm.d, [&](auto d) {
    return LaunchDecode<decltype(d)::value>(stream, a, static_cast<int>(B));
  });
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(a.partial, stream));
  TANDEM_CUDA_RETURN_IF_ERROR(launched);
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

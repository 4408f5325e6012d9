// CUDA causal GQA softmax attention: the packed forward and paged decode. bf16 q/k/v (bf16 cache
// for decode) run on tensor cores (attention_mma_kernels.cuh; on sm_90a the forward at head dims
// 64 and 128 runs on wgmma, attention_wgmma_kernels.cuh); any f32 operand takes the fp32
// CUDA-core kernels (attention_simt_kernels.cuh). Forward and decode pick the path by the same
// rule, so decode at t = forward row t holds on either path. This file checks arguments, builds
// the forward's work list (longest rows first) and launches.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/softmax_attention/attention_internal.h"
#include "kernels/softmax_attention/attention_mma_decode.cuh"
#include "kernels/softmax_attention/attention_mma_kernels.cuh"
#include "kernels/softmax_attention/attention_simt_kernels.cuh"
#include "kernels/softmax_attention/attention_wgmma_kernels.cuh"
#include "kernels/softmax_attention/attention_wgmma_probe.h"
#include "kernels/softmax_attention/softmax_attention_cuda.h"

namespace tandem::kernels::cuda {
namespace {

using attention::FwdItem;

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

attention_simt::Dims SimtDims(const SoftmaxAttentionParams& p) {
  return {static_cast<int>(p.num_heads), static_cast<int>(p.num_kv_heads),
          static_cast<int>(p.num_heads / p.num_kv_heads), static_cast<int>(p.head_dim), p.scale};
}

// The same host rounding of scale·log2(e) for the forward and decode.
attention_mma::Dims MmaDims(const SoftmaxAttentionParams& p) {
  return {static_cast<int>(p.num_heads), static_cast<int>(p.num_kv_heads),
          static_cast<int>(p.num_heads / p.num_kv_heads), p.scale * attention_mma::kLog2e};
}

// The tensor-core path takes bf16 operands whose data is 16-byte aligned (cp.async rows).
absl::StatusOr<bool> UseTensorCores(
    std::initializer_list<std::pair<const Tensor*, const char*>> ts) {
  bool all_bf16 = true;
  for (const auto& [t, name] : ts) all_bf16 = all_bf16 && t->dtype() == DType::kBF16;
  if (!all_bf16) return false;
  for (const auto& [t, name] : ts) {
    TANDEM_RETURN_IF_ERROR(ExpectAligned16(*t, name, "bf16 data must be 16-byte aligned"));
  }
  return true;
}

// Blocks of `rows` flat rows, the ones with the most keys first (they take longest; causal
// balance): block m of a sequence starts at flat row m·rows, and its keys grow with m. One more
// item, all zeros, follows them: the wgmma forward's work counter (see the caller).
std::vector<FwdItem> FwdItems(const std::vector<int32_t>& cu, int hkv, int group, int rows) {
  std::vector<std::pair<int64_t, FwdItem>> costed;
  size_t n = 0;
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    n += static_cast<size_t>(((cu[b + 1] - cu[b]) * group + rows - 1) / rows) * hkv;
  }
  costed.reserve(n);  // no regrowth: at 32K this vector is ~100 KB of fresh pages
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    const int len = cu[b + 1] - cu[b];
    for (int row0 = 0; row0 < len * group; row0 += rows) {
      for (int g = 0; g < hkv; ++g) costed.push_back({row0 / rows, {cu[b], len, row0, g}});
    }
  }
  return kernels::internal::CostliestFirst(std::move(costed), /*trailing=*/1);
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

bool SoftmaxAttentionFwdKernelAvailable(SoftmaxAttentionFwdKernel kernel, int64_t head_dim) {
  switch (kernel) {
    case SoftmaxAttentionFwdKernel::kWgmma:
      return SoftmaxAttentionUsesWgmma(head_dim);
    default:
      return true;
  }
}

absl::Status SoftmaxAttentionFwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, Tensor& o, Tensor& lse) {
  return SoftmaxAttentionFwdWithKernel(SoftmaxAttentionFwdKernel::kDefault, ctx, p, q, k, v,
                                       cu_seqlens, o, lse);
}

absl::Status SoftmaxAttentionFwdWithKernel(SoftmaxAttentionFwdKernel kernel, const Context& ctx,
                                           const SoftmaxAttentionParams& p, const Tensor& q,
                                           const Tensor& k, const Tensor& v,
                                           const Tensor& cu_seqlens, Tensor& o, Tensor& lse) {
  using Kernel = SoftmaxAttentionFwdKernel;
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
  TANDEM_CHECK_ARG(SoftmaxAttentionFwdKernelAvailable(kernel, D),
                   "kernel: the chosen wgmma forward is not available at head_dim ", D);
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> cu,
                          kernels::internal::HostSeqlens(ctx, cu_seqlens, T));
  TANDEM_ASSIGN_OR_RETURN(const bool mma, UseTensorCores({{&q, "q"}, {&k, "k"}, {&v, "v"}}));
  TANDEM_CHECK_ARG(mma || kernel == Kernel::kDefault,
                   "kernel: the tensor-core forwards take bf16 q, k and v");
  const int group = static_cast<int>(H / Hkv);
  const std::vector<FwdItem> items = FwdItems(
      cu, static_cast<int>(Hkv), group, mma ? attention_mma::kFwdRows : attention_simt::kFwdRows);
  // The last item is the wgmma forward's work counter, all zeros: uploaded with the rest, it is
  // zero at every launch without a launch of its own.
  const int num_items = static_cast<int>(items.size()) - 1;
  if (num_items == 0) return absl::OkStatus();
  const cudaStream_t stream = StreamOf(ctx);
  StreamBuffer items_buffer;  // freed stream-ordered on every return
  TANDEM_RETURN_IF_ERROR(items_buffer.Upload(stream, items));
  const FwdItem* dev_items = items_buffer.as<FwdItem>();
  int* item_counter = &items_buffer.as<FwdItem>()[num_items].seq_start;
  float* lse_ptr = lse.defined() ? lse.data<float>() : nullptr;
  // kDefault takes the wgmma kernel where it runs, and falls back when its tensor maps cannot be
  // built; an explicit kWgmma reports that instead.
  const bool wgmma =
      kernel == Kernel::kWgmma || (kernel == Kernel::kDefault && SoftmaxAttentionUsesWgmma(D));
  const cudaError_t launched = ForHeadDim(static_cast<int>(D), [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (mma) {
      using attention_mma::bf16;
      const bf16 *qp = q.data<bf16>(), *kp = k.data<bf16>(), *vp = v.data<bf16>();
      if constexpr (kD != 32) {
        if (wgmma) {  // same bits as LaunchFwd, faster
          const cudaError_t e =
              attention_mma::LaunchFwdWgmma<kD>(stream, MmaDims(p), qp, kp, vp, ToFloatPtr(o),
                                                lse_ptr, dev_items, num_items, item_counter, T);
          if (e != cudaErrorNotSupported || kernel != Kernel::kDefault) return e;
        }
      }
      return attention_mma::LaunchFwd<kD>(stream, MmaDims(p), qp, kp, vp, ToFloatPtr(o), lse_ptr,
                                          dev_items, num_items);
    }
    return attention_simt::LaunchFwd<kD>(stream, SimtDims(p), ToFloatPtr(q), ToFloatPtr(k),
                                         ToFloatPtr(v), ToFloatPtr(o), lse_ptr, dev_items,
                                         num_items);
  });
  TANDEM_CUDA_RETURN_IF_ERROR(launched);
  return absl::OkStatus();
}

namespace {

// The checks the paged entry points share: q, o [T, H, D]; k_cache, v_cache [blocks, tile, Hkv,
// D]. Returns whether they run on tensor cores (all bf16).
absl::StatusOr<bool> CheckPagedOperands(const SoftmaxAttentionParams& p, const Tensor& q,
                                        const Tensor& k_cache, const Tensor& v_cache,
                                        const Tensor& o) {
  TANDEM_RETURN_IF_ERROR(CheckDims(p));
  const int64_t H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectFloat(q, "q", {-1, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(o, "o", {q.dim(0), H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(k_cache, "k_cache", {-1, kAttentionKvTile, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(
      ExpectFloat(v_cache, "v_cache", {k_cache.dim(0), kAttentionKvTile, Hkv, D}));
  return UseTensorCores({{&q, "q"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}});
}

}  // namespace

absl::Status SoftmaxAttentionDecode(const Context& ctx, const SoftmaxAttentionParams& p,
                                    const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                    const Tensor& block_tables, const Tensor& seq_lens, Tensor& o) {
  TANDEM_ASSIGN_OR_RETURN(const bool mma, CheckPagedOperands(p, q, k_cache, v_cache, o));
  const int64_t H = p.num_heads, D = p.head_dim, B = q.dim(0);
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(block_tables, "block_tables", DType::kI32, {B, -1}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(seq_lens, "seq_lens", DType::kI32, {B}, Device::kCUDA));
  if (B == 0) return absl::OkStatus();
  const int max_blocks = static_cast<int>(block_tables.dim(1));
  const int max_splits = static_cast<int>(std::max<int64_t>(
      1, (max_blocks * kAttentionKvTile + kAttentionSplitLength - 1) / kAttentionSplitLength));
  const cudaStream_t stream = StreamOf(ctx);
  float* partial = nullptr;  // [B, H, max_splits, D + 2]
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(
      reinterpret_cast<void**>(&partial), sizeof(float) * B * H * max_splits * (D + 2), stream));
  const int32_t* tables = block_tables.data<int32_t>();
  const int32_t* lens = seq_lens.data<int32_t>();
  const cudaError_t launched = ForHeadDim(static_cast<int>(D), [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (mma) {
      using attention_mma::bf16;
      attention_mma::DecodeArgs a{
          MmaDims(p), q.data<bf16>(), k_cache.data<bf16>(), v_cache.data<bf16>(), ToFloatPtr(o),
          tables,     lens,           max_blocks,           max_splits,           0,
          partial};
      a.row_blocks = (a.dm.group + attention_mma::kWarpRows - 1) / attention_mma::kWarpRows;
      return attention_mma::LaunchDecode<kD>(stream, a, static_cast<int>(B));
    }
    attention_simt::DecodeArgs a{
        SimtDims(p), ToFloatPtr(q), ToFloatPtr(k_cache), ToFloatPtr(v_cache), ToFloatPtr(o),
        tables,      lens,          max_blocks,          max_splits,          partial};
    return attention_simt::LaunchDecode<kD>(stream, a, static_cast<int>(B));
  });
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(partial, stream));
  TANDEM_CUDA_RETURN_IF_ERROR(launched);
  return absl::OkStatus();
}

absl::Status SoftmaxAttentionPrefillPaged(const Context& ctx, const SoftmaxAttentionParams& p,
                                          const Tensor& q, const Tensor& k_cache,
                                          const Tensor& v_cache, const Tensor& block_tables,
                                          const std::vector<SoftmaxPrefillPiece>& pieces,
                                          Tensor& o) {
  TANDEM_ASSIGN_OR_RETURN(const bool mma, CheckPagedOperands(p, q, k_cache, v_cache, o));
  const int64_t H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim, T = q.dim(0);
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(block_tables, "block_tables", DType::kI32, {-1, -1}, Device::kCUDA));
  TANDEM_CHECK_ARG(mma,
                   "q, k_cache, v_cache: the paged prefill takes bf16 (f32 operands: use "
                   "SoftmaxAttentionDecode per row)");
  const int64_t R = block_tables.dim(0), max_blocks = block_tables.dim(1);
  const int group = static_cast<int>(H / Hkv);
  std::vector<std::pair<int64_t, attention_mma::PagedFwdItem>> costed;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const SoftmaxPrefillPiece& pc = pieces[i];
    TANDEM_CHECK_ARG(pc.tokens >= 1 && pc.q_row >= 0 && pc.q_row + pc.tokens <= T, "pieces[", i,
                     "]: rows [", pc.q_row, ", ", pc.q_row + pc.tokens, ") are not within q's ", T,
                     " rows");
    TANDEM_CHECK_ARG(pc.table_row >= 0 && pc.table_row < R, "pieces[", i,
                     "].table_row: ", pc.table_row, " is outside block_tables' ", R, " rows");
    const int64_t keys = pc.start_position + pc.tokens;
    TANDEM_CHECK_ARG(pc.start_position >= 0 && keys <= max_blocks * kAttentionKvTile, "pieces[", i,
                     "]: positions [", pc.start_position, ", ", keys, ") need ",
                     (keys + kAttentionKvTile - 1) / kAttentionKvTile, " blocks; block_tables has ",
                     max_blocks, " per row");
    TANDEM_CHECK_ARG(
        keys <= 0x7fffffff && pc.tokens * group <= 0x7fffffff && pc.q_row + pc.tokens <= 0x7fffffff,
        "pieces[", i, "]: rows or positions past 2^31 − 1");
    for (int64_t row0 = 0; row0 < pc.tokens * group; row0 += attention_mma::kFwdRows) {
      const int64_t last = std::min(row0 + attention_mma::kFwdRows, pc.tokens * group) - 1;
      for (int g = 0; g < Hkv; ++g) {
        costed.push_back({pc.start_position + last / group + 1,
                          {static_cast<int>(pc.q_row), static_cast<int>(pc.tokens),
                           static_cast<int>(pc.start_position), static_cast<int>(pc.table_row),
                           static_cast<int>(row0), g}});
      }
    }
  }
  if (costed.empty()) return absl::OkStatus();
  const std::vector<attention_mma::PagedFwdItem> items =
      kernels::internal::CostliestFirst(std::move(costed));
  const cudaStream_t stream = StreamOf(ctx);
  StreamBuffer items_buffer;  // freed stream-ordered on every return
  TANDEM_RETURN_IF_ERROR(items_buffer.Upload(stream, items));
  using attention_mma::bf16;
  TANDEM_CUDA_RETURN_IF_ERROR(ForHeadDim(static_cast<int>(D), [&](auto d) {
    constexpr int kD = decltype(d)::value;
    return attention_mma::LaunchPagedFwd<kD>(
        stream, MmaDims(p), q.data<bf16>(), k_cache.data<bf16>(), v_cache.data<bf16>(),
        block_tables.data<int32_t>(), static_cast<int>(max_blocks), ToFloatPtr(o),
        items_buffer.as<attention_mma::PagedFwdItem>(), static_cast<int>(items.size()));
  }));
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda

// CPU causal GQA softmax attention: packed forward and paged decode. Both hand every query row to
// AttendRows (attention_row.cc), so a decode query reproduces the forward pass's row bitwise.
// Threads split (sequence, query-row block, kv head) items; a row's reduction stays on one thread.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/softmax_attention/attention_internal.h"
#include "kernels/softmax_attention/attention_row.h"
#include "kernels/softmax_attention/softmax_attention.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/core/cuda_util.h"
#include "kernels/softmax_attention/softmax_attention_cuda.h"
#endif

namespace tandem::kernels {
namespace internal {

absl::Status CheckParams(const SoftmaxAttentionParams& p) {
  TANDEM_CHECK_ARG(p.num_heads > 0 && p.num_kv_heads > 0 && p.head_dim > 0,
                   "p: num_heads, num_kv_heads and head_dim must be positive, got ", p.num_heads,
                   ", ", p.num_kv_heads, ", ", p.head_dim);
  TANDEM_CHECK_ARG(p.num_heads % p.num_kv_heads == 0, "p.num_kv_heads: ", p.num_kv_heads,
                   " does not divide p.num_heads ", p.num_heads);
  // The GPU kernels take the row max before scaling, which is the scaled max only for scale > 0.
  TANDEM_CHECK_ARG(p.scale > 0.0f && std::isfinite(p.scale),
                   "p.scale: expected a finite value > 0 (usually head_dim^-1/2), got ", p.scale);
  return absl::OkStatus();
}

absl::Status CheckPackedInputs(const SoftmaxAttentionParams& p, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& cu_seqlens) {
  TANDEM_RETURN_IF_ERROR(CheckParams(p));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(q, "q", DType::kF32, {-1, p.num_heads, p.head_dim}));
  const int64_t t = q.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(k, "k", DType::kF32, {t, p.num_kv_heads, p.head_dim}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(v, "v", DType::kF32, {t, p.num_kv_heads, p.head_dim}));
  return CheckSeqlens(cu_seqlens, t);
}

absl::Status CheckSeqlens(const Tensor& cu_seqlens, int64_t t) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(cu_seqlens, "cu_seqlens", DType::kI32, {-1}));
  const int64_t n = cu_seqlens.dim(0);
  const int32_t* cu = cu_seqlens.data<int32_t>();
  TANDEM_CHECK_ARG(n >= 1 && cu[0] == 0, "cu_seqlens: must start with 0");
  for (int64_t b = 0; b + 1 < n; ++b) {
    TANDEM_CHECK_ARG(cu[b + 1] >= cu[b], "cu_seqlens: decreases at index ", b + 1, " (", cu[b],
                     " -> ", cu[b + 1], ")");
  }
  TANDEM_CHECK_ARG(cu[n - 1] == t, "cu_seqlens: must end at T = ", t, ", ends at ", cu[n - 1]);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> HostSeqlens(const Context& ctx, const Tensor& cu_seqlens,
                                                 int64_t t) {
  Tensor host = cu_seqlens;
  if (cu_seqlens.device() == Device::kCUDA) {
#ifdef TANDEM_HAVE_CUDA
    TANDEM_RETURN_IF_ERROR(
        ExpectTensor(cu_seqlens, "cu_seqlens", DType::kI32, {-1}, Device::kCUDA));
    TANDEM_ASSIGN_OR_RETURN(host, cuda::CopyToHost(ctx, cu_seqlens));
#else
    return BuiltWithoutCuda("HostSeqlens");
#endif
  }
  TANDEM_RETURN_IF_ERROR(CheckSeqlens(host, t));
  return std::vector<int32_t>(host.data<int32_t>(), host.data<int32_t>() + host.numel());
}

std::vector<RowBlock> MakeRowBlocks(const Tensor& cu_seqlens, int64_t num_kv_heads) {
  std::vector<RowBlock> items;
  const int32_t* cu = cu_seqlens.data<int32_t>();
  for (int64_t b = 0; b + 1 < cu_seqlens.dim(0); ++b) {
    const int64_t len = cu[b + 1] - cu[b];
    for (int64_t r = 0; r < len; r += kRowBlock) {
      for (int64_t g = 0; g < num_kv_heads; ++g) {
        items.push_back({cu[b], len, r, std::min(len, r + kRowBlock), g});
      }
    }
  }
  return items;
}

}  // namespace internal

absl::Status SoftmaxAttentionFwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, Tensor& o, Tensor& lse) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::SoftmaxAttentionFwd(ctx, p, q, k, v, cu_seqlens, o, lse));
  TANDEM_RETURN_IF_ERROR(internal::CheckPackedInputs(p, q, k, v, cu_seqlens));
  const int64_t T = q.dim(0), H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(o, "o", DType::kF32, {T, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {T, H}));
  const int64_t group = H / Hkv;
  const std::vector<internal::RowBlock> items = internal::MakeRowBlocks(cu_seqlens, Hkv);
  const cpu::VectorKernels& kern = cpu::Kernels();
  const float* qd = q.data<float>();  // [T, H, D]
  float* od = o.data<float>();        // [T, H, D]
  float* lsed = lse.data<float>();    // [T, H]
  const int64_t max_rows = internal::kRowBlock * group;
  const int64_t work_floats = cpu::AttendRowsWorkFloats(max_rows, D);
  auto run_block = [&](int64_t i, float* work) {
    const internal::RowBlock& it = items[i];
    const int64_t kv_off = (it.seq_start * Hkv + it.kv_head) * D;
    const cpu::KvSource kv{k.data<float>() + kv_off, v.data<float>() + kv_off, Hkv * D,
                           kAttentionKvTile * Hkv * D, nullptr};
    std::vector<cpu::QueryRow> rows;  // positions × the heads of kv head it.kv_head
    rows.reserve(max_rows);
    for (int64_t pos = it.pos0; pos < it.pos1; ++pos) {
      for (int64_t h = it.kv_head * group; h < (it.kv_head + 1) * group; ++h) {
        const int64_t row = (it.seq_start + pos) * H + h;
        rows.push_back({qd + row * D, pos, od + row * D, lsed + row});
      }
    }
    cpu::AttendRows(kern, kv, rows.data(), rows.size(), D, p.scale, work);
  };
  internal::RoundRobin(ctx, static_cast<int64_t>(items.size()), work_floats, run_block);
  return absl::OkStatus();
}

namespace {

absl::Status CheckDecodeInputs(const SoftmaxAttentionParams& p, const Tensor& q,
                               const Tensor& k_cache, const Tensor& v_cache,
                               const Tensor& block_tables, const Tensor& seq_lens, Tensor& o) {
  TANDEM_RETURN_IF_ERROR(internal::CheckParams(p));
  const int64_t H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(q, "q", DType::kF32, {-1, H, D}));
  const int64_t B = q.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(o, "o", DType::kF32, {B, H, D}));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(k_cache, "k_cache", DType::kF32, {-1, kAttentionKvTile, Hkv, D}));
  const int64_t num_blocks = k_cache.dim(0);
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(v_cache, "v_cache", DType::kF32, {num_blocks, kAttentionKvTile, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(block_tables, "block_tables", DType::kI32, {B, -1}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(seq_lens, "seq_lens", DType::kI32, {B}));
  const int64_t max_blocks = block_tables.dim(1);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = seq_lens.data<int32_t>()[b];
    TANDEM_CHECK_ARG(len >= 1 && len <= max_blocks * kAttentionKvTile, "seq_lens[", b, "]: ", len,
                     " is outside [1, ", max_blocks * kAttentionKvTile, "]");
    const int32_t* table = block_tables.data<int32_t>() + b * max_blocks;
    for (int64_t j = 0; j * kAttentionKvTile < len; ++j) {
      TANDEM_CHECK_ARG(table[j] >= 0 && table[j] < num_blocks, "block_tables[", b, ", ", j,
                       "]: ", table[j], " is outside [0, ", num_blocks, ")");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SoftmaxAttentionDecode(const Context& ctx, const SoftmaxAttentionParams& p,
                                    const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                    const Tensor& block_tables, const Tensor& seq_lens, Tensor& o) {
  TANDEM_DISPATCH_CUDA(
      ctx, cuda::SoftmaxAttentionDecode(ctx, p, q, k_cache, v_cache, block_tables, seq_lens, o));
  TANDEM_RETURN_IF_ERROR(CheckDecodeInputs(p, q, k_cache, v_cache, block_tables, seq_lens, o));
  const int64_t B = q.dim(0), H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim;
  const int64_t group = H / Hkv, max_blocks = block_tables.dim(1);
  const cpu::VectorKernels& kern = cpu::Kernels();
  // One item per (sequence, kv head): the heads of a group share each cache tile while it is hot.
  auto run_item = [&](int64_t i, float* work) {
    const int64_t b = i / Hkv, kv_head = i % Hkv;
    const cpu::KvSource kv{k_cache.data<float>() + kv_head * D, v_cache.data<float>() + kv_head * D,
                           Hkv * D, kAttentionKvTile * Hkv * D,
                           block_tables.data<int32_t>() + b * max_blocks};
    float* lse = work;  // [group], unused: decode needs no backward
    std::vector<cpu::QueryRow> rows(group);
    for (int64_t j = 0; j < group; ++j) {
      const int64_t row = b * H + kv_head * group + j;
      rows[j] = {q.data<float>() + row * D, seq_lens.data<int32_t>()[b] - 1,
                 o.data<float>() + row * D, lse + j};
    }
    cpu::AttendRows(kern, kv, rows.data(), group, D, p.scale, work + group);
  };
  internal::RoundRobin(ctx, B * Hkv, cpu::AttendRowsWorkFloats(group, D) + group, run_item);
  return absl::OkStatus();
}

}  // namespace tandem::kernels

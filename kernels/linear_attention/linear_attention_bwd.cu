// CUDA chunked linear attention backward: argument checks, the chunk list and decay table, and
// the two launches of linear_bwd_kernels.cuh (the per-chunk state-gradient sums fused into the
// reverse scan per (sequence, head, state tile), then per-chunk dq/dk/dv on tensor cores).
// Scratch: the state gradient at every chunk end, [NC, H, D, D] bf16: the scan runs in fp32 and
// rounds each value once, as the MMAs that read it would.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/kernel_smem.h"
#include "kernels/core/status_macros.h"
#include "kernels/linear_attention/linear_attention_bwd_cuda.h"
#include "kernels/linear_attention/linear_attention_cuda.h"
#include "kernels/linear_attention/linear_bwd_kernels.cuh"
#include "kernels/linear_attention/linear_chunk_list.h"

namespace tandem::kernels::cuda {
namespace {

using linear_bwd::BwdArgs;
using linear_bwd::ChunkItem;
using linear_bwd::kC;
using linear_bwd::kScanBytes;
using linear_bwd::kScanThreads;
using linear_bwd::kScanTile;
using linear_bwd::kThreads;
using linear_bwd::Smem;

bool IsFloat(const Tensor& t) { return t.dtype() == DType::kF32 || t.dtype() == DType::kBF16; }

constexpr char kAlignedStorage[] = "the CUDA backward needs 16-byte aligned storage";

// [rows, H, D] f32 or bf16 on the GPU, 16-byte aligned (the kernels move 8 elements at a time).
absl::Status ExpectRows(const Tensor& t, const char* name, int64_t rows, int64_t h, int64_t d) {
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(t, name, IsFloat(t) ? t.dtype() : DType::kF32, {rows, h, d}, Device::kCUDA));
  return ExpectAligned16(t, name, kAlignedStorage);
}

absl::Status ExpectState(const Tensor& t, const char* name, int64_t n, int64_t h, int64_t d,
                         DType dtype = DType::kF32) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(t, name, dtype, {n, h, d, d}, Device::kCUDA));
  return ExpectAligned16(t, name, kAlignedStorage);
}

absl::Status CheckArgs(const LinearAttentionParams& p, const Tensor& q, const Tensor& k,
                       const Tensor& v, const Tensor& d_o, const Tensor& dq, const Tensor& dk,
                       const Tensor& dv, const Tensor& decay, std::vector<float>* table) {
  TANDEM_CHECK_ARG(p.num_heads > 0, "p.num_heads: must be > 0, got ", p.num_heads);
  TANDEM_CHECK_ARG(LinearAttentionHeadDimSupported(p.head_dim),
                   "p.head_dim: the CUDA kernels take 32, 64 or 128, got ", p.head_dim);
  TANDEM_CHECK_ARG(std::isfinite(p.scale), "p.scale: must be finite, got ", p.scale);
  const int64_t h = p.num_heads, d = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectRows(q, "q", -1, h, d));
  const int64_t t = q.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectRows(k, "k", t, h, d));
  TANDEM_RETURN_IF_ERROR(ExpectRows(v, "v", t, h, d));
  TANDEM_RETURN_IF_ERROR(ExpectRows(d_o, "d_o", t, h, d));
  TANDEM_RETURN_IF_ERROR(ExpectRows(dq, "dq", t, h, d));
  TANDEM_RETURN_IF_ERROR(ExpectRows(dk, "dk", t, h, d));
  TANDEM_RETURN_IF_ERROR(ExpectRows(dv, "dv", t, h, d));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(decay, "decay", DType::kF32, {h}));
  table->assign(h * (kC + 1), 0.0f);
  for (int64_t i = 0; i < h; ++i) {
    const float x = decay.data<float>()[i];
    TANDEM_CHECK_ARG(std::isfinite(x) && x > 0.0f, "decay[", i, "]: must be finite and > 0, got ",
                     x);
    LinearAttentionDecayPowers(x, table->data() + i * (kC + 1));
  }
  return absl::OkStatus();
}

template <int kD>
cudaError_t LaunchBackward(cudaStream_t stream, const BwdArgs& a, int num_chunks, int batch,
                           int phases) {
  constexpr int scan_smem = static_cast<int>(kScanBytes);
  constexpr int grad_smem = static_cast<int>(Smem<kD>::kGradBytes);
  // Both kernels take up to 112 KB of shared memory so that two blocks share an SM: ask for the
  // largest carveout, so the driver does not settle for one block per SM.
  cudaError_t e =
      AllowSmem<&linear_bwd::StateGradScanKernel<kD>>(scan_smem, cudaSharedmemCarveoutMaxShared);
  if (e != cudaSuccess) return e;
  e = AllowSmem<&linear_bwd::ChunkGradKernel<kD>>(grad_smem, cudaSharedmemCarveoutMaxShared);
  if (e != cudaSuccess) return e;
  static_assert(kD % kScanTile == 0, "whole state tiles");
  constexpr int kTiles = kD / kScanTile;
  if (phases & kLinearAttentionBwdScan) {
    linear_bwd::StateGradScanKernel<kD>
        <<<dim3(batch * a.h, kTiles * kTiles), kScanThreads, scan_smem, stream>>>(a);
  }
  if (phases & kLinearAttentionBwdChunkGrads) {
    linear_bwd::ChunkGradKernel<kD><<<dim3(num_chunks, a.h), kThreads, grad_smem, stream>>>(a);
  }
  return cudaGetLastError();
}

cudaError_t ForHeadDim(int64_t d, cudaStream_t stream, const BwdArgs& a, int nc, int b,
                       int phases) {
  if (d == 32) return LaunchBackward<32>(stream, a, nc, b, phases);
  if (d == 64) return LaunchBackward<64>(stream, a, nc, b, phases);
  return LaunchBackward<128>(stream, a, nc, b, phases);
}

}  // namespace

absl::Status LinearAttentionBwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& chunk_states,
                                const Tensor& d_o, Tensor& dq, Tensor& dk, Tensor& dv,
                                Tensor& d_initial_state) {
  return LinearAttentionBwdPhases(ctx, p, q, k, v, decay, cu_seqlens, chunk_states, d_o, dq, dk, dv,
                                  d_initial_state,
                                  kLinearAttentionBwdScan | kLinearAttentionBwdChunkGrads);
}

absl::Status LinearAttentionBwdPhases(const Context& ctx, const LinearAttentionParams& p,
                                      const Tensor& q, const Tensor& k, const Tensor& v,
                                      const Tensor& decay, const Tensor& cu_seqlens,
                                      const Tensor& chunk_states, const Tensor& d_o, Tensor& dq,
                                      Tensor& dk, Tensor& dv, Tensor& d_initial_state, int phases) {
  std::vector<float> table;
  TANDEM_RETURN_IF_ERROR(CheckArgs(p, q, k, v, d_o, dq, dk, dv, decay, &table));
  const int64_t t = q.dim(0), h = p.num_heads, d = p.head_dim;
  std::vector<ChunkItem> items;
  std::vector<int> seq_chunk;
  TANDEM_RETURN_IF_ERROR(MakeChunks(ctx, cu_seqlens, t, &items, &seq_chunk));
  const int64_t b = static_cast<int64_t>(seq_chunk.size()) - 1, nc = items.size();
  // f32 states, or the bf16 ones a bf16 forward saves: the chunk kernel rounds S_c to bf16 for
  // its products either way (the same rounding), so both give the same bits.
  const bool bf16_states = chunk_states.dtype() == DType::kBF16;
  TANDEM_RETURN_IF_ERROR(ExpectState(chunk_states, "chunk_states", nc, h, d,
                                     bf16_states ? DType::kBF16 : DType::kF32));
  if (d_initial_state.defined()) {
    TANDEM_RETURN_IF_ERROR(ExpectState(d_initial_state, "d_initial_state", b, h, d));
  }
  const cudaStream_t stream = StreamOf(ctx);
  if (nc == 0) {  // every sequence is empty: the state gradients are zero
    if (d_initial_state.defined()) {
      TANDEM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(d_initial_state.raw_data(), 0,
                                                  d_initial_state.numel() * sizeof(float), stream));
    }
    return absl::OkStatus();
  }
  BwdArgs a{static_cast<int>(h), p.scale,        ToFloatPtr(q),  ToFloatPtr(k), ToFloatPtr(v),
            ToFloatPtr(d_o),     ToFloatPtr(dq), ToFloatPtr(dk), ToFloatPtr(dv)};
  a.states = bf16_states ? nullptr : chunk_states.data<float>();
  a.states_bf16 =
      bf16_states ? static_cast<const __nv_bfloat16*>(chunk_states.raw_data()) : nullptr;
  a.d_init = d_initial_state.defined() ? d_initial_state.data<float>() : nullptr;
  StreamBuffer pow, dev_items, dev_seq_chunk, ds;  // freed stream-ordered on every return
  TANDEM_RETURN_IF_ERROR(pow.Upload(stream, table));
  TANDEM_RETURN_IF_ERROR(dev_items.Upload(stream, items));
  TANDEM_RETURN_IF_ERROR(dev_seq_chunk.Upload(stream, seq_chunk));
  TANDEM_RETURN_IF_ERROR(ds.Allocate(stream, sizeof(__nv_bfloat16) * nc * h * d * d));
  a.pow = pow.as<float>(), a.items = dev_items.as<ChunkItem>();
  a.seq_chunk = dev_seq_chunk.as<int>(), a.ds = ds.as<__nv_bfloat16>();
  TANDEM_CUDA_RETURN_IF_ERROR(
      ForHeadDim(d, stream, a, static_cast<int>(nc), static_cast<int>(b), phases));
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda
